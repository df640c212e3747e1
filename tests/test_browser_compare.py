"""Compare experiments (issue 16) in headless Chromium: two datasets encoded by the same model
(a copy of the demo under another name), and one encoded by another (the latents-only E031
fixture, no model recorded)."""
from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from browser_support import PLOTLY_ARRAYS_JS, console_errors, wait_for, wait_for_figure

pytestmark = pytest.mark.browser

TRACES_JS = PLOTLY_ARRAYS_JS + """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout) return null;
return gd.data.map(t => ({name: t.name, type: t.type, meta: t.meta || null, x: arr(t.x), y: arr(t.y),
                          customdata: arr(t.customdata), xaxis: t.xaxis || 'x'}));
"""


@pytest.fixture(scope="module")
def browser_data(explorer_data, tmp_path_factory):
    """What the module's `server` serves: the demo, E031 and a copy of the demo under another name."""
    data = tmp_path_factory.mktemp("compare-data")
    for name in ("demo", "e031"):
        shutil.copy(explorer_data / f"{name}.h5", data / f"{name}.h5")
    shutil.copy(explorer_data / "demo.h5", data / "demo2.h5")  # the same experiment again, same model
    return data


def traces(driver, sel, pred=None):
    return wait_for_figure(driver, TRACES_JS, sel, pred, timeout=45)


def click_map(driver, dataset, i):
    """Click map ``i`` of ``dataset`` in the shared latent map."""
    driver.execute_script("""
        const gd = document.querySelector('#compare-map .js-plotly-plot');
        const c = gd.data.findIndex(t => t.name === arguments[0]);
        const i = arguments[1];
        gd.emit('plotly_click', {points: [{curveNumber: c, pointNumber: i, pointIndex: i,
                                            customdata: gd.data[c].customdata[i]}]});""", dataset, i)


def test_two_datasets_stacked_shared_map_and_search_across(driver, server, explorer_data):
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
    click_map(driver, "demo", 7)
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


def test_smoothed_pixel_search_across_datasets(driver, server, browser_data):
    """On request, the chosen map's nearest maps in smoothed pixels across both datasets: exactly
    what the core search finds, its twin first; choosing another map clears the stale result."""
    from ainerd_core.dataset import open_dataset
    from ainerd_core.similarity import pixel_neighbours_across

    with open_dataset(browser_data / "demo.h5") as a, open_dataset(browser_data / "demo2.h5") as b:
        which, index, dist = pixel_neighbours_across([a, b], (0, 7), 24, "smoothed")
    driver.get(server.url + "/compare?compare=demo,demo2&k=5&map=7")
    run = wait_for(lambda: driver.find_element("id", "compare-smoothed-run"), what="button")
    wait_for(lambda: run.is_enabled() or None, what="button enabled for the chosen map")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", run)
    rows_js = ("return Array.from(document.querySelectorAll('#compare-smoothed-table tr'))"
               ".map(r => Array.from(r.cells).map(c => c.innerText))")
    cells = wait_for(lambda: driver.execute_script(rows_js)[1:] or None, what="smoothed table", timeout=60)
    names = ("demo", "demo2")
    assert [(c[1], int(c[2])) for c in cells] == [(names[j], int(i)) for j, i in zip(which[:len(cells)], index)]
    np.testing.assert_allclose([float(c[3]) for c in cells], dist[:len(cells)], atol=1e-4)
    assert cells[0][1:3] == ["demo2", "7"] and float(cells[0][3]) == 0.0
    status = driver.find_element("id", "compare-smoothed-status").text
    assert "24 nearest in smoothed pixels" in status and "maps read in" in status
    # another map chosen: the old list goes
    click_map(driver, "demo2", 3)
    wait_for(lambda: "demo2 map 3" in driver.find_element("id", "compare-chosen").text, what="new chosen map")
    wait_for(lambda: not driver.execute_script(rows_js)[1:] or None, what="stale smoothed list cleared")
    assert not console_errors(driver)


def test_the_compared_list_survives_a_visit_to_another_page(driver, server):
    driver.get(server.url + "/compare?compare=demo,demo2&k=5")
    traces(driver, "#compare-timelines", lambda t: any(x["type"] == "bar" for x in t))
    wait_for(lambda: driver.find_elements("css selector", "a.nav-link[href*='/timeline'][href*='compare=demo,demo2']")
             or None, what="navbar links keep the list")
    driver.execute_script("arguments[0].click();", driver.find_element("css selector", "a.nav-link[href*='/timeline']"))
    wait_for(lambda: "/timeline" in driver.current_url or None, what="timeline page")
    back = wait_for(lambda: driver.find_elements("css selector", "a.nav-link[href*='/compare'][href*='compare=demo,demo2']")
                    or None, what="the compare link keeps the list")
    driver.execute_script("arguments[0].click();", back[0])
    tl = traces(driver, "#compare-timelines", lambda t: any(x["type"] == "bar" for x in t))
    assert {b["meta"]["dataset"] for b in tl if b["type"] == "bar"} == {"demo", "demo2"}
    assert not console_errors(driver)
