"""The explorer's dataset catalog (cached per file version) and the page interface."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from dashboard.catalog import Catalog
from dashboard.pages import PAGE_MODULES, load_pages, missing_requirements, parse_query
from dashboard.testing import find_component


@pytest.fixture
def folder(explorer_data, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    for name in ("demo.h5", "e031.h5"):
        if (explorer_data / name).exists():
            shutil.copy(explorer_data / name, out / name)
    return out


def test_scan_and_lookup(folder):
    (folder / "broken.h5").write_bytes(b"not hdf5")
    (folder / ".demo.h5.x.tmp").write_bytes(b"half written")
    cat = Catalog(folder)
    ids = cat.ids()
    assert ids == ["broken", "demo", "e031"]
    broken = [e for e in cat.entries() if e.id == "broken"][0]
    assert broken.error and cat.get("broken") is None
    assert cat.get("../demo") is None and cat.get("nope") is None and cat.get(None) is None
    demo, e031 = cat.get("demo"), cat.get("e031")
    assert demo.has_maps and not e031.has_maps and demo.has_results and e031.has_rheology
    assert cat.default_id() == "demo" and cat.resolve("nope").id == "demo"
    assert demo.available_k()[:1] == [3] and demo.k in demo.available_k()
    assert demo.result("labels") is demo.result("labels")  # cached
    assert demo.result("no/such") is None
    np.testing.assert_array_equal(demo.labels(3), demo.result("labels_k3"))
    assert demo.counts(8).shape[1] == 8
    assert demo.read_map(3).shape == (256, 256)


def test_classes_follow_the_files_flow_axis(folder):
    demo = Catalog(folder).get("demo")
    classes = demo.sector_classes_by_number(range(1, 19))
    assert [s for s, c in classes.items() if c == "flow"] == [5, 14]
    assert [s for s, c in classes.items() if c == "vorticity"] == [1, 9, 10, 18]
    per_map = demo.sector_class()
    sectors = demo.meta["sector"]
    assert set(per_map[np.isin(sectors, [5, 14])]) == {"flow"}


def test_a_recomputed_file_is_reread(folder):
    from ainerd_core.dataset import open_dataset, write_results

    cat = Catalog(folder, rescan_s=0)
    old = cat.get("demo")
    labels = old.result("labels")
    with open_dataset(folder / "demo.h5") as ds:
        results = {n: ds.read_result(n) for n in ds.result_names()}
        attrs = ds.result_attrs
    results["labels"] = (labels + 1) % labels.max()
    write_results(folder / "demo.h5", results, attrs)
    st = os.stat(folder / "demo.h5")
    os.utime(folder / "demo.h5", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    new = cat.get("demo")
    assert new is not old and new.version != old.version
    np.testing.assert_array_equal(new.result("labels"), results["labels"])


def test_reconstruction_of_one_map(folder):
    demo = Catalog(folder).get("demo")
    ok, note = demo.reconstruction_status()
    assert ok, note
    arr, _ = demo.reconstruction(4)
    assert arr.shape == (256, 256) and 0 <= arr.min() and arr.max() <= 1


def _record_model(folder, named, sha):
    """Rewrite demo.h5's /results attrs to name checkpoint ``named`` with checksum ``sha``."""
    from ainerd_core.dataset import open_dataset, write_results

    with open_dataset(folder / "demo.h5") as ds:
        results = {n: ds.read_result(n) for n in ds.result_names()}
        attrs = dict(ds.result_attrs)
    attrs.pop("model_path", None)
    attrs["model"] = str(named)
    if sha is None:
        attrs.pop("model_sha256", None)
    else:
        attrs["model_sha256"] = sha
    write_results(folder / "demo.h5", results, attrs)


def test_precompute_records_the_checkpoint_checksum(explorer_data):
    from pathlib import Path

    from ainerd_core.dataset import open_dataset
    from ainerd_core.model import DEMO_WEIGHTS, checkpoint_sha256

    with open_dataset(explorer_data / "demo.h5") as ds:
        attrs = ds.result_attrs
    # precompute ran with the default model; the cache may have been built by another clone
    assert Path(attrs["model"]).name == DEMO_WEIGHTS.name
    assert attrs["model_sha256"] == checkpoint_sha256(DEMO_WEIGHTS)


def test_a_moved_checkpoint_is_found_only_by_its_checksum(folder, tmp_path):
    import torch

    from ainerd_core.model import DEMO_WEIGHTS, checkpoint_sha256
    from dashboard.pages.similarity import _model_for

    gone = tmp_path / "old-clone" / "data" / "weights.pt"   # where precompute saw it; now removed
    shutil.copy(DEMO_WEIGHTS, folder / "weights.pt")        # the folder moved with its weights
    sha = checkpoint_sha256(DEMO_WEIGHTS)
    _record_model(folder, gone, sha)
    demo = Catalog(folder).get("demo")
    ok, note = demo.reconstruction_status()
    assert ok and f"found at {folder / 'weights.pt'}" in note and str(gone) in note
    assert _model_for(demo).latent_size == 64                # the similarity upload uses the same model

    # a different checkpoint under the same name would decode the latents into nonsense: refused
    ckpt = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=False)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = ckpt["state_dict"][first] + 0.01
    torch.save(ckpt, folder / "weights.pt")
    ok, note = Catalog(folder).get("demo").reconstruction_status()
    assert not ok and "has changed since the precomputation" in note
    with pytest.raises(RuntimeError, match="cannot be encoded"):
        _model_for(Catalog(folder).get("demo"))

    # without a recorded checksum nothing is guessed from a file name
    shutil.copy(DEMO_WEIGHTS, folder / "weights.pt")
    _record_model(folder, gone, None)
    ok, note = Catalog(folder).get("demo").reconstruction_status()
    assert not ok and note == f"the model checkpoint {gone} is not available"


def test_page_interface():
    pages = load_pages()
    paths = [p.PATH for p in pages]
    assert paths[:4] == ["/", "/timeline", "/sectors", "/latent-map"]
    for p in pages:
        assert isinstance(p.TITLE, str) and callable(p.layout)
    assert {"similarity", "clusters", "model"} <= set(PAGE_MODULES)
    assert load_pages(("overview", "does_not_exist")) == [pages[0]]  # a missing page is skipped
    assert parse_query("?dataset=demo&k=5") == {"dataset": "demo", "k": "5"} and parse_query(None) == {}


def test_requirements(folder):
    from dashboard.pages import latent_map, overview

    cat = Catalog(folder)
    assert missing_requirements(overview, cat.get("e031")) == []
    assert missing_requirements(latent_map, cat.get("e031")) == []

    class NeedsMaps:
        REQUIRES = ("maps", "results")

    assert missing_requirements(NeedsMaps, cat.get("e031")) == ["maps"]
    assert missing_requirements(NeedsMaps, cat.get("demo")) == []


def test_background_helper_registers_on_the_instance_only(tmp_path):
    import dash
    import diskcache
    from dash import DiskcacheManager, Input, Output, html

    from dashboard.explorer import register_background_callback

    before = dict(dash._callback.GLOBAL_CALLBACK_MAP)
    app = dash.Dash(__name__)
    app.layout = html.Div([html.Button(id="recluster-run"), html.Div(id="recluster-result"),
                           html.Progress(id="recluster-progress")])
    manager = DiskcacheManager(diskcache.Cache(str(tmp_path / "cache")))

    @register_background_callback(app, manager, Output("recluster-result", "children"),
                                  Input("recluster-run", "n_clicks"),
                                  progress=[Output("recluster-progress", "value")])
    def job(set_progress, n):
        return "done"

    assert "recluster-result.children" in app.callback_map
    spec = app.callback_map["recluster-result.children"]
    assert spec.get("background") or spec.get("long")
    assert dict(dash._callback.GLOBAL_CALLBACK_MAP) == before  # nothing leaked to the global registry


def test_timeline_without_rheology_shows_the_histogram_and_a_note(tmp_path):
    from ainerd_core.dataset import write_dataset
    from dashboard.pages import PageContext, Services
    from dashboard.pages import timeline
    from dashboard_fixtures import precompute_small

    rng = np.random.default_rng(0)
    n_t, n_s = 6, 6
    path = write_dataset(tmp_path / "norheo.h5", meta=dict(time=np.tile(np.arange(n_t) * 60.0, n_s),
                                                          sector=np.repeat(np.arange(1, n_s + 1), n_t)),
                         latents=rng.gamma(2.0, 1.0, (n_t * n_s, 64)).astype(np.float32), n_sectors=n_s,
                         sector_width_deg=60.0)
    precompute_small(path)
    cat = Catalog(tmp_path)
    entry = cat.get("norheo")
    assert not entry.has_rheology
    services = Services(app=None, config=None, catalog=cat, background_manager=None, register_background=None)
    page = timeline.layout(PageContext(entry, entry.id, [entry], {"k": "3"}, services))
    assert "no rheology" in str(find_component(page, "timeline-note").children)
    graph = find_component(page, "timeline-graph")
    assert {t.type for t in graph.figure.data} == {"bar"} and len(graph.figure.data) == 3
    np.testing.assert_array_equal(graph.figure.data[1].y, entry.counts(3)[:, 1])


def test_no_reconstruction_for_latents_that_came_with_the_data(folder):
    e031 = Catalog(folder).get("e031")
    ok, note = e031.reconstruction_status()
    assert not ok and "no decoder" in note
    assert e031.reconstruction(0)[0] is None


def _call(client, output, inputs, state=()):
    body = {"output": output, "outputs": dict(zip(("id", "property"), output.rsplit(".", 1))),
            "inputs": [dict(zip(("id", "property", "value"), i)) for i in inputs],
            "state": [dict(zip(("id", "property", "value"), s)) for s in state],
            "changedPropIds": [f"{inputs[0][0]}.{inputs[0][1]}"]}
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.data[:500]
    return r.get_json()["response"]


def test_csv_buttons_return_the_figures_data(explorer_data, tmp_path):
    import csv
    import io

    from ainerd_core.dataset import open_dataset
    from dashboard.app import create_app
    from dashboard.config import Config

    server = create_app(Config(data_dir=explorer_data, instance_dir=tmp_path / "i", secret_key="k" * 40).validated())
    c = server.test_client()
    with open_dataset(explorer_data / "demo.h5") as ds:
        counts3, times = ds.read_result("tables/counts_k3"), ds.read_result("tables/times")
        stl, n = ds.read_result("tables/sector_time_labels"), ds.n_maps
    out = _call(c, "timeline-graph-csv-download.data", [("timeline-graph-csv", "n_clicks", 1)],
                [("dataset-store", "data", "demo"), ("timeline-k", "value", 3)])
    data = out["timeline-graph-csv-download"]["data"]
    rows = list(csv.DictReader(io.StringIO(data["content"])))
    assert data["filename"].endswith(".csv")
    # long format: every series drawn (counts per cluster, stress, rate, viscosity, minima)
    for j in range(3):
        got = [r for r in rows if r["series"] == f"cluster {j}"]
        assert [float(r["time_s"]) for r in got] == times.tolist()
        assert [int(r["value"]) for r in got] == counts3[:, j].tolist()
    with open_dataset(explorer_data / "demo.h5") as ds:
        rheo = ds.rheology
    stress = [r for r in rows if r["series"] == "shear stress"]
    assert len(stress) == len(rheo["time"]) and stress[0]["unit"] == "Pa"
    np.testing.assert_allclose([float(r["value"]) for r in stress], rheo["shear_stress"])
    out = _call(c, "sectors-graph-csv-download.data", [("sectors-graph-csv", "n_clicks", 1)],
                [("dataset-store", "data", "demo"), ("sectors-k", "value", None)])
    rows = list(csv.DictReader(io.StringIO(out["sectors-graph-csv-download"]["data"]["content"])))
    assert len(rows) == stl.size and sorted(int(r["label"]) for r in rows) == sorted(stl.ravel().tolist())
    out = _call(c, "latent-graph-csv-download.data", [("latent-graph-csv", "n_clicks", 1)],
                [("dataset-store", "data", "demo"), ("latent-k", "value", 5)])
    rows = list(csv.DictReader(io.StringIO(out["latent-graph-csv-download"]["data"]["content"])))
    assert len(rows) == n and {"map_index", "umap_x", "umap_y", "cluster", "class", "time_s"} <= set(rows[0])
    out = _call(c, "latent-selection-download.data", [("latent-selection-csv", "n_clicks", 1)],
                [("latent-selection-store", "data", [4, 2]), ("latent-k", "value", 5), ("dataset-store", "data", "demo")])
    rows = list(csv.DictReader(io.StringIO(out["latent-selection-download"]["data"]["content"])))
    assert [int(r["map_index"]) for r in rows] == [4, 2]
