"""One rule decides which checkpoint encodes maps into a dataset's latent space (issue 12, item 6)."""
from __future__ import annotations

import shutil

import torch

from ainerd_core import model as M


def test_resolver_by_checksum(tmp_path):
    sha = M.checkpoint_sha256(M.DEMO_WEIGHTS)
    ds = tmp_path / "d.h5"
    attrs = {"latent_source": "model", "model": str(M.DEMO_WEIGHTS), "model_sha256": sha}
    assert M.resolve_latent_checkpoint(ds, attrs) == (M.DEMO_WEIGHTS, "decoded with demo_weights.pt")
    # a user's explicit checkpoint is used only when it is the recorded model
    other = tmp_path / "other.pt"
    ck = M.read_checkpoint(M.DEMO_WEIGHTS)
    ck["state_dict"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    torch.save(ck, other)
    path, note = M.resolve_latent_checkpoint(ds, attrs, explicit=other)
    assert path is None and "not the model that made this dataset's latents" in note
    same = tmp_path / "copy.pt"
    shutil.copy(M.DEMO_WEIGHTS, same)
    assert M.resolve_latent_checkpoint(ds, attrs, explicit=same)[0] == same
    # moved folder: found beside the dataset by name and checksum; a changed file there is refused
    moved = {**attrs, "model": str(tmp_path / "gone" / "w.pt")}
    shutil.copy(M.DEMO_WEIGHTS, tmp_path / "w.pt")
    assert M.resolve_latent_checkpoint(ds, moved)[0] == tmp_path / "w.pt"
    shutil.copy(other, tmp_path / "w.pt")
    path, note = M.resolve_latent_checkpoint(ds, moved)
    assert path is None and "has changed" in note
    # latents that came with the data have no known encoder
    path, note = M.resolve_latent_checkpoint(ds, {"latent_source": "dataset /latents", "model": "none"})
    assert path is None and "came with the data" in note
