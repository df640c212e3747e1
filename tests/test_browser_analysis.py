"""Headless Chromium on /similarity, /clusters and /model of a small precomputed demo.

The figures must hold the dataset's data, an uploaded target map (the published E031 target, or
a 512 x 512 stand-in when ../shared is absent) must give latent and raw-pixel neighbours, the
re-clustering job must show progress and a result, and the browser console must stay clean.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset
from browser_support import BACKGROUND_JOB_TIMEOUT, console_errors, enabled, open_page, wait_for
from conftest import E031

pytestmark = pytest.mark.browser
WINDOW = (1400, 1100)  # the browser window of the module's `driver` (tests/browser_support.py)

GRID_JS = """
const g = document.getElementById(arguments[0]);
const p = g && g.querySelector('.js-plotly-plot');
if (!p || !p.layout) return null;
return {images: (p.layout.images || []).map(i => i.source), meta: p.layout.meta || null,
        custom: (p.data[0] && p.data[0].customdata) || [], title: (p.layout.title || {}).text || '',
        svgImages: p.querySelectorAll('image').length};
"""
TRACES_JS = """
const g = document.getElementById(arguments[0]);
const p = g && g.querySelector('.js-plotly-plot');
if (!p || !p.data) return null;
const conv = v => (v == null ? null : (ArrayBuffer.isView(v) ? Array.from(v) : v));
return p.data.map(t => ({name: t.name, x: conv(t.x), y: conv(t.y), meta: t.meta || null,
                         customdata: conv(t.customdata)}));
"""


def _grid(driver, graph_id):
    return driver.execute_script(GRID_JS, graph_id)


def _decode(v):
    """A plotly typed-array spec ({dtype, bdata}) or a list -> list."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if isinstance(shape, str):
            shape = tuple(int(x) for x in shape.split(","))
        return arr.reshape(shape).tolist() if shape else arr.tolist()
    return v


def _traces(driver, graph_id):
    traces = driver.execute_script(TRACES_JS, graph_id)
    for t in traces or []:
        for key in ("x", "y", "customdata"):
            t[key] = _decode(t[key])
    return traces


def _find(driver, css):
    el = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    time.sleep(0.2)
    return el


def _click(driver, css):
    driver.execute_script("arguments[0].click();", _find(driver, css))


def _download(driver, css, folder, name, timeout=20.0):
    """Click a CSV button and return the downloaded file's text."""
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
    target = folder / name
    if target.exists():
        target.unlink()
    _click(driver, css)
    wait_for(lambda: target.exists() and target.stat().st_size > 0, timeout=timeout, what=f"download of {name}")
    time.sleep(0.3)
    return target.read_text()


def _no_console_errors(driver):
    errs = console_errors(driver)
    assert not errs, errs


# --------------------------------------------------------------------------- similarity
def test_similarity_dataset_target_and_upload(driver, server, explorer_data, tmp_path):
    path = explorer_data / "demo.h5"
    with open_dataset(path) as ds:
        lat_idx = ds.read_result("similarity/latent_index")
        raw_idx = ds.read_result("similarity/raw_index")
        smooth_idx = ds.read_result("similarity/smoothed_index")
        lat_dist = ds.read_result("similarity/latent_distance")
    open_page(driver, server.url + "/similarity?dataset=demo")
    g = wait_for(lambda: (lambda x: x if x and len(x["images"]) == 12 else None)(_grid(driver, "similarity-latent-grid")),
                 what="latent neighbour grid")
    assert g["meta"]["index"] == lat_idx[0, :12].tolist()                # map 0 is the first target
    assert np.all(np.diff(g["meta"]["distance"]) >= 0)                   # nearest first
    assert [c[2] for c in g["custom"]] == list(range(1, 13))             # ranks
    r = _grid(driver, "similarity-raw-grid")
    assert r["meta"]["index"] == raw_idx[0, :12].tolist() and len(r["images"]) == 12
    sm = _grid(driver, "similarity-smoothed-grid")                       # the honest baseline, third grid
    assert sm["meta"]["index"] == smooth_idx[0, :12].tolist() and sm["title"].startswith("smoothed pixels: 12")
    wait_for(lambda: _grid(driver, "similarity-latent-grid")["svgImages"] == 12, what="thumbnails drawn")
    # the distance distributions hold the precomputed 1st-neighbour distances
    traces = {t["name"]: t for t in _traces(driver, "similarity-dist")}
    np.testing.assert_allclose(traces["latent: 1st neighbour"]["x"], lat_dist[:, 0], rtol=1e-6)
    assert any(name.startswith("raw:") for name in traces) and any(name.startswith("smoothed:") for name in traces)
    # failures are listed with metadata and ground-truth relevance
    cells = driver.execute_script("return Array.from(document.querySelectorAll('#similarity-table td')).map(t => t.innerText)")
    assert "yes" in cells or "NO" in cells

    # type another target
    box = _find(driver, "#similarity-index")
    box.clear()
    box.send_keys("5\n")
    wait_for(lambda: _grid(driver, "similarity-latent-grid")["meta"]["index"] == lat_idx[5, :12].tolist(),
             what="neighbours of map 5")
    text = _download(driver, "#similarity-latent-grid-csv", tmp_path, "neighbours_latent.csv")
    rows = [line.split(",") for line in text.strip().splitlines()]
    assert rows[0][:4] == ["space", "rank", "index", "distance"]
    assert [int(r[2]) for r in rows[1:]] == lat_idx[5, :12].tolist()

    # upload the published target map (any square size is resampled to 256 x 256)
    target = E031 / "target_c2.npy"
    if not target.exists():
        big = np.random.default_rng(0).random((512, 512)).astype(np.float32)
        target = tmp_path / "target_c2.npy"
        np.save(target, big)
    from ainerd_core.readers.resample import prepare_target
    from ainerd_core.similarity import nearest_neighbours

    with open_dataset(path) as ds:
        expected_raw, _ = nearest_neighbours(ds, prepare_target(np.load(target)), "raw", 12)
        expected_smooth, _ = nearest_neighbours(ds, prepare_target(np.load(target)), "smoothed", 12)
    enabled(driver, "#similarity-upload input[type=file]").send_keys(str(target))
    status = wait_for(lambda: (lambda t: t if "searched" in t else None)(
        driver.find_element("css selector", "#similarity-upload-status").text), timeout=BACKGROUND_JOB_TIMEOUT,
        what="upload search")
    assert "target_c2.npy" in status or "searched" in status
    wait_for(lambda: _grid(driver, "similarity-raw-grid")["meta"]["index"] == expected_raw.tolist(),
             what="raw neighbours of the upload")
    assert _grid(driver, "similarity-smoothed-grid")["meta"]["index"] == expected_smooth.tolist()
    lat = _grid(driver, "similarity-latent-grid")
    raw = _grid(driver, "similarity-raw-grid")
    assert len(lat["images"]) == 12 and len(raw["images"]) == 12           # 3 x N thumbnails
    assert lat["meta"]["index"] != lat_idx[5, :12].tolist()
    assert driver.find_element("css selector", "#similarity-target-img").get_attribute("src").startswith("data:image/png")
    _no_console_errors(driver)


# --------------------------------------------------------------------------- clusters
def test_clusters_figures_examples_and_recluster(driver, server, explorer_data, tmp_path):
    with open_dataset(explorer_data / "demo.h5") as ds:
        inertia = ds.read_result("kmeans/inertia")
        ks = ds.read_result("kmeans/k")
        chosen = int(ds.result_attrs["k"])
        ari = ds.read_result("stability/ari_seeds")
        labels_k3 = ds.read_result("labels_k3")
    open_page(driver, server.url + "/clusters?dataset=demo")
    sweep = wait_for(lambda: _traces(driver, "clusters-sweep"), what="k sweep")
    by = {t["name"]: t for t in sweep if t["name"] in ("inertia", "silhouette")}
    np.testing.assert_allclose(by["inertia"]["y"], inertia)
    assert by["inertia"]["x"] == ks.tolist()
    assert {t["x"][0] for t in sweep if t["name"] == "chosen k"} == {chosen}
    text = _download(driver, "#clusters-sweep-csv", tmp_path, "kmeans_sweep.csv")
    rows = [line.split(",") for line in text.strip().splitlines()]
    assert rows[0][:2] == ["k", "inertia"]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], inertia)
    assert [int(r[0]) for r in rows[1:] if r[-2] == "1"] == [chosen]
    stab = _traces(driver, "clusters-stability")
    np.testing.assert_allclose(stab[0]["y"], ari)
    comp = _traces(driver, "clusters-kcompare")
    k3 = [t for t in comp if t["meta"]["panel"] == "k = 3"]
    assert sorted(i for t in k3 for i in t["customdata"]) == list(range(len(labels_k3)))
    for t in k3:
        assert set(labels_k3[t["customdata"]].tolist()) == {t["meta"]["label"]}

    # random example maps, drawn again with the next seed
    first = wait_for(lambda: _grid(driver, "clusters-examples"), what="examples")
    assert len(first["images"]) > 0 and "seed 0" in first["title"]
    _click(driver, "#clusters-examples-draw")
    again = wait_for(lambda: (lambda g: g if "seed 1" in g["title"] else None)(_grid(driver, "clusters-examples")),
                     what="examples drawn again")
    assert again["custom"] != first["custom"]

    # the re-clustering background job
    k_box = _find(driver, "#recluster-k")
    k_box.clear()
    k_box.send_keys("3")
    _find(driver, "#recluster-run")
    driver.execute_script("arguments[0].click();", enabled(driver, "#recluster-run"))
    seen = set()

    def done():
        val = driver.execute_script(
            "const b = document.querySelector('#recluster-progress .progress-bar');"
            "return b ? b.getAttribute('aria-valuenow') : null;")
        seen.add(val)
        text = driver.find_element("css selector", "#recluster-result").text
        return text if text.startswith("k-means, k = 3: sizes") else None

    text = wait_for(done, timeout=BACKGROUND_JOB_TIMEOUT, interval=0.05, what="re-clustering result")
    assert any(v not in (None, "0") for v in seen), seen                  # progress was shown
    sizes = [int(s) for s in text.split("sizes ")[1].split(" (")[0].split()]
    assert sum(sizes) == len(labels_k3) and len(sizes) == 3
    fig = wait_for(lambda: _traces(driver, "recluster-figure"), what="re-clustering figure")
    assert sorted(len(t["customdata"]) for t in fig) == sorted(sizes)
    _no_console_errors(driver)


# --------------------------------------------------------------------------- model
def test_model_page(driver, server, explorer_data):
    with open_dataset(explorer_data / "demo.h5") as ds:
        recon_index = ds.read_result("model/recon_index")
        curve = ds.read_result("model/learning_curve/train_loss")
        n_noise = len(ds.read_result("model/noise_maps"))
        sweep_size = ds.read_result("model/latent_sweep/latent_size")
        sweep_mse = ds.read_result("model/latent_sweep/test_mse")
        sweep_how = ds.result_attrs.get("latent_sweep_schedule")
        attrs = dict(ds.result_attrs)
    open_page(driver, server.url + "/model?dataset=demo")
    rec = wait_for(lambda: _grid(driver, "model-recon"), what="reconstructions")
    assert len(rec["images"]) == 2 * len(recon_index)
    inputs = [c[0] for c in rec["custom"] if c[1] == 0 and c[0] >= 0]
    assert sorted(inputs) == sorted(recon_index.tolist())
    noise = _grid(driver, "model-noise")
    assert len(noise["images"]) == n_noise
    if curve is not None:
        tr = {t["name"]: t for t in _traces(driver, "model-curve")}
        np.testing.assert_allclose(tr["train loss"]["y"], curve)
    else:
        assert driver.find_elements("css selector", "#model-curve-missing")
    # the shipped latent-size sweep, and how it was trained, beside it
    if sweep_size is not None:
        tr = {t["name"]: t for t in _traces(driver, "model-sweep")}
        np.testing.assert_allclose(tr["test MSE"]["x"], sweep_size)
        np.testing.assert_allclose(tr["test MSE"]["y"], sweep_mse)
        assert tr["in use"]["x"] == [64]
        note = driver.find_element("css selector", "#model-sweep-schedule").text
        assert sweep_how and sweep_how in note and "not converged" in note
    else:
        missing = driver.find_element("css selector", "#model-sweep-missing").text
        # a sweep measured from other weights is not shown as this model's, and the page says why
        assert attrs.get("latent_sweep_note", "No latent-size sweep") in missing
    # the checkpoint's own held-out scores (test split, or unseen randomised maps) and what its curve is
    if attrs.get("model_heldout"):
        assert attrs["model_heldout"] in driver.find_element("css selector", "#model-heldout").text
    if attrs.get("learning_curve_note"):
        assert driver.find_element("css selector", "#model-curve-note").text == attrs["learning_curve_note"]
    # every thumbnail is served (a broken image would log a console error)
    wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('#model-recon image')).length") == 2 * len(recon_index),
        what="reconstruction images")
    time.sleep(1.0)
    _no_console_errors(driver)


# --------------------------------------------------------------------------- latents only
def test_latents_only_dataset_says_so(driver, server):
    open_page(driver, server.url + "/similarity?dataset=e031")
    wait_for(lambda: driver.find_elements("css selector", "#similarity-latents-only"), what="latents-only note")
    g = wait_for(lambda: (lambda x: x if x and x["meta"] and x["meta"]["index"] else None)(
        _grid(driver, "similarity-latent-grid")), what="latent neighbours without maps")
    assert g["images"] == []
    # an upload is searched in latent space only, and says so
    target = E031 / "target_c2.npy"
    if target.exists():
        _find(driver, "#similarity-upload")
        enabled(driver, "#similarity-upload input[type=file]").send_keys(str(target))
        status = wait_for(lambda: (lambda t: t if "searched" in t else None)(
            driver.find_element("css selector", "#similarity-upload-status").text), timeout=BACKGROUND_JOB_TIMEOUT,
            what="upload search")
        assert "latents only" in status
        if "latent space:" not in status:  # a model was available to encode the upload
            wait_for(lambda: _grid(driver, "similarity-latent-grid")["title"].startswith("latent space: 12 nearest")
                     and "of map" not in _grid(driver, "similarity-latent-grid")["title"], what="upload neighbours")
    open_page(driver, server.url + "/clusters?dataset=e031")
    wait_for(lambda: driver.find_elements("css selector", "#clusters-examples-missing"), what="examples note")
    open_page(driver, server.url + "/model?dataset=e031")
    wait_for(lambda: driver.find_elements("css selector", "#model-recon-missing"), what="recon note")
    _no_console_errors(driver)
