"""The dashboard's dynamics views on real precomputed files, through the catalog (no server):
per-map fits and g2 rows come from /results/dynamics, the CSV columns carry them, the view's
figures are in seconds, and a latents-only dataset says its order is unknown."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard import c2view
from dashboard.catalog import Catalog
from dashboard.testing import find_component


@pytest.fixture(scope="module")
def catalog(dynamics_data):
    return Catalog(dynamics_data)


def test_fit_columns_and_the_map_fit_are_the_stored_arrays(catalog):
    entry = catalog.get("demo")
    rate = entry.result("dynamics/relaxation_rate")
    cols = c2view.fit_columns(entry)
    unit = "per_s" if entry.attrs.get("c2_time_step_s") else "per_pixel"
    np.testing.assert_array_equal(cols[f"relaxation_rate_{unit}"], rate.astype(np.float64))
    assert set(cols["fit_status"]) <= {"ok", "no decay within window", "decays within first lag", "failed"}
    assert {"stretching", "contrast", "baseline", "fit_r2", f"rate_stderr_{unit}"} <= set(cols)
    fit = c2view.map_fit(entry, 7)
    assert fit["relaxation_rate"] == pytest.approx(float(rate[7]))
    np.testing.assert_array_equal(entry.result_row("dynamics/g2", 7), entry.result("dynamics/g2")[7])
    log_rate = c2view.fitted_log_rate(entry)
    ok = entry.result("dynamics/fit_status") != 3
    np.testing.assert_allclose(log_rate[ok], np.log10(rate[ok].astype(np.float64)))
    assert np.isnan(log_rate[~ok]).all()


def test_the_view_of_a_map_is_in_seconds_with_its_fit(catalog):
    entry = catalog.get("demo")
    view = c2view.c2_view(entry, 7, key="t")
    c2 = find_component(view, "t-c2view-map").figure
    g2 = find_component(view, "t-c2view-g2").figure
    step = entry.attrs.get("c2_time_step_s")
    assert c2.layout.xaxis.range[1] == pytest.approx(256 * step) and c2.layout.xaxis.title.text == "t1 (s)"
    assert [t.name for t in g2.data if t.name == "fit"] or entry.result("dynamics/fit_status")[7] != 0
    table = find_component(view, "t-c2view-fit")
    assert "relaxation rate Γ" in str(table) and "1/s" in str(table)


def test_page_exports_include_the_fits(catalog):
    from dashboard.pages.latent_map import _points_columns
    from dashboard.pages.timeline import rate_columns

    entry = catalog.get("demo")
    cols = _points_columns(entry, entry.k)
    assert "relaxation_rate_per_s" in cols and "fit_status" in cols and len(cols["fit_r2"]) == entry.n_maps
    rc = rate_columns(entry)
    times = entry.result("tables/times")
    assert len(rc["rate_median_flow_per_s"]) == len(times) and "rate_q75_vorticity_per_s" in rc
    assert rc["n_fits_all"].sum() == int((entry.result("dynamics/fit_status") != 3).sum())


def test_latents_only_without_a_decoder_has_no_fits_and_an_unknown_order(catalog):
    entry = catalog.get("e031")
    assert c2view.fit_columns(entry) == {} and c2view.rate_table(entry) is None
    note = c2view.order_note(entry, "x")
    assert note.color == "warning" and note.children.startswith("Cluster order unknown")
    view = c2view.c2_view(entry, 3, key="e")
    assert "latents only" in str(view) and "No g2 stored" in str(find_component(view, "e-c2view-g2").figure)


def test_latents_only_measured_on_decoded_maps_draws_the_reconstruction(tmp_path):
    """Latents that came with the data, decoded by precompute with the model that made them
    (results written here as precompute writes them, without its slow stages): the view draws
    that reconstruction, the map that was measured, next to its g2."""
    torch = pytest.importorskip("torch")
    import json

    from ainerd_core.dataset import write_dataset, write_results
    from ainerd_core.dynamics import ORDER_RULE, measure_dynamics
    from ainerd_core.model import Autoencoder, checkpoint_sha256, decode, load_model, save_checkpoint
    from conftest import small_meta

    torch.manual_seed(0)
    weights = save_checkpoint(Autoencoder(64), tmp_path / "w.pt")
    n = 6
    lat = np.random.default_rng(0).random((n, 64)).astype(np.float32)
    p = write_dataset(tmp_path / "lat.h5", meta=small_meta(n), latents=lat)
    dyn = measure_dynamics(decode(load_model(weights, device="cpu"), lat))
    units = dyn.pop("units")
    dyn.pop("fit_max_lag")
    res = {"latent": lat, "labels": np.zeros(n, np.int32), "umap": lat[:, :2]}
    res.update({f"dynamics/{k}": v for k, v in dyn.items()})
    write_results(p, res, {"latent_source": "dataset /latents", "model": str(weights),
                           "model_sha256": checkpoint_sha256(weights), "dynamics_units_json": json.dumps(units),
                           "dynamics_source": "decoded latents (reconstruction)", "order_rule": ORDER_RULE})
    entry = Catalog(tmp_path).get("lat")
    ok, note = entry.reconstruction_status()
    assert ok, note
    view = c2view.c2_view(entry, 5, key="d")
    recon = find_component(view, "d-c2view-recon").figure
    assert recon.layout.xaxis.title.text == "t1 (pixel; time step unknown)"
    assert "decoded map (a reconstruction)" in find_component(view, "d-c2view-g2").figure.layout.title.text
