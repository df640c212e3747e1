"""Compare experiments (issue 16) in headless Chromium: two datasets encoded by the same model
(a copy of the demo under another name), and one encoded by another (the latents-only E031
fixture, no model recorded)."""
from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from browser_support import console_errors, make_driver, quit_driver, require_browser, start_server, wait_for
from dashboard_fixtures import explorer_data  # noqa: F401

pytestmark = pytest.mark.browser

TRACES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout) return null;
const TYPES = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
               u2: Uint16Array, i1: Int8Array, u1: Uint8Array};
const decode = v => {  // plotly's base64 typed arrays {dtype, bdata}
  const bin = atob(v.bdata), buf = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
  return Array.from(new TYPES[v.dtype](buf.buffer));
};
const conv = v => v == null ? null : (v.bdata !== undefined ? decode(v) : Array.from(v));
return gd.data.map(t => ({name: t.name, type: t.type, meta: t.meta || null, x: conv(t.x), y: conv(t.y),
                          customdata: conv(t.customdata), xaxis: t.xaxis || 'x'}));
"""


@pytest.fixture(scope="module")
def server(explorer_data, tmp_path_factory):  # noqa: F811
    require_browser()
    data = tmp_path_factory.mktemp("compare-data")
    for name in ("demo", "e031"):
        shutil.copy(explorer_data / f"{name}.h5", data / f"{name}.h5")
    shutil.copy(explorer_data / "demo.h5", data / "demo2.h5")  # the same experiment again, same model
    srv = start_server(data, tmp_path_factory.mktemp("instance-compare"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver(server):
    d = make_driver(1400, 1000)
    yield d
    quit_driver(d)


def traces(driver, sel, pred=None):
    return wait_for(lambda: (lambda t: t if t and (pred is None or pred(t)) else None)(
        driver.execute_script(TRACES_JS, sel)), 45, f"figure {sel}")


def test_two_datasets_stacked_shared_map_and_search_across(driver, server, explorer_data):  # noqa: F811
    from ainerd_core.dataset import open_dataset

    with open_dataset(explorer_data / "demo.h5") as ds:
        n = ds.n_maps
        times = np.unique(ds.meta["time"])
    driver.get(server.url + "/compare?compare=demo,demo2&k=5")
    tl = traces(driver, "#compare-timelines", lambda t: any(x["type"] == "bar" for x in t))
    bars = [t for t in tl if t["type"] == "bar"]
    assert {b["meta"]["dataset"] for b in bars} == {"demo", "demo2"}
    axes = {b["meta"]["dataset"]: b["xaxis"] for b in bars}
    assert axes["demo"] != axes["demo2"]  # one row each, on a shared time axis
    for ds_id in ("demo", "demo2"):  # every map counted once, in one clustering
        rows = [b for b in bars if b["meta"]["dataset"] == ds_id]
        assert sum(sum(b["y"]) for b in rows) == n
        np.testing.assert_allclose(rows[0]["x"], times)
    same = {b["meta"]["cluster"]: b["y"] for b in bars if b["meta"]["dataset"] == "demo"}
    assert all(same[c] == b["y"] for b in bars if b["meta"]["dataset"] == "demo2" for c in [b["meta"]["cluster"]])
    pts = traces(driver, "#compare-map", lambda t: len(t) >= 2)
    assert sorted(t["name"] for t in pts[:2]) == ["demo", "demo2"]
    assert sum(len(t["customdata"]) for t in pts[:2]) == 2 * n
    # click map 7 of demo: its twin in demo2 is the nearest neighbour, at distance 0
    driver.execute_script("""
        const gd = document.querySelector('#compare-map .js-plotly-plot');
        const c = gd.data.findIndex(t => t.name === 'demo');
        gd.emit('plotly_click', {points: [{curveNumber: c, pointNumber: 7, pointIndex: 7,
                                            customdata: gd.data[c].customdata[7]}]});""")
    wait_for(lambda: "demo map 7" in driver.find_element("id", "compare-chosen").text, what="chosen map")
    cells = wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('#compare-table tr')).map(r => Array.from(r.cells).map(c => c.innerText))"
    )[1:] or None, what="neighbour table")
    assert cells[0][1] == "demo2" and cells[0][2] == "7" and float(cells[0][3]) == 0.0
    assert {row[1] for row in cells} <= {"demo", "demo2"}
    wait_for(lambda: "map=" in driver.current_url, what="the chosen map in the URL")
    state = parse_qs(urlparse(driver.current_url).query)
    assert state["compare"] == ["demo,demo2"]
    # reload: the same search
    driver.refresh()
    wait_for(lambda: "demo map 7" in driver.find_element("id", "compare-chosen").text, what="search after reload")
    assert not console_errors(driver)


def test_datasets_of_different_models_are_refused(driver, server):
    driver.get(server.url + "/compare?compare=demo,e031")
    msg = wait_for(lambda: driver.find_element("id", "compare-message").text, what="message")
    assert "not encoded by the same model" in msg
    assert not driver.find_elements("css selector", "#compare-timelines")
    assert not console_errors(driver)
