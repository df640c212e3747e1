"""The explorer in headless Chromium against a real server: the figures hold the dataset's data,
the main interactions work, latents-only data get clear messages, and the console stays clean."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset
from browser_support import PLOTLY_ARRAYS_JS, console_errors, open_page, wait_for, wait_for_figure

pytestmark = pytest.mark.browser

GRAPH_JS = PLOTLY_ARRAYS_JS + """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout) return null;
return {data: gd.data.map(t => ({type: t.type, name: t.name, x: arr(t.x), y: arr(t.y), z: arr(t.z),
                                 customdata: arr(t.customdata), xaxis: t.xaxis || 'x'})),
        shapes: (gd.layout.shapes || []).map(s => ({type: s.type, x0: s.x0, x1: s.x1, xref: s.xref, name: s.name || null})),
        matches: (gd.layout.xaxis || {}).matches || null};
"""


@pytest.fixture(scope="module")
def demo(explorer_data):
    with open_dataset(explorer_data / "demo.h5") as ds:
        return {n: ds.read_result(n) for n in ("tables/times", "tables/counts", "tables/counts_k3", "labels",
                                               "tables/sector_time_labels", "tables/sectors", "stress_minima/time",
                                               "umap", "tables/time_index")} | {"attrs": ds.result_attrs,
                                                                                  "rheology": ds.rheology}


def graph(driver, sel, pred=None, timeout=20.0):
    return wait_for_figure(driver, GRAPH_JS, sel, pred, timeout)


def text(driver, sel):
    return " ".join(e.text for e in driver.find_elements("css selector", sel))


def click_plot_element(driver, css):
    """A real mouse click at a plot element (plotly handles it through its drag layer)."""
    from selenium.webdriver.common.action_chains import ActionChains

    el = wait_for(lambda: driver.find_elements("css selector", css), what=css)[0]
    ActionChains(driver).move_to_element(el).click().perform()


def images_loaded(driver, sel):
    return driver.execute_script(
        "const im = Array.from(document.querySelectorAll(arguments[0]));"
        "return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0) ? im.length : 0;", sel)


def c2_views_drawn(driver, sel):
    """How many C2-map figures under ``sel`` show their map (a PNG layout image with axes)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' .js-plotly-plot')).filter(gd =>"
        " gd._fullLayout && (gd._fullLayout.images || []).some(im => String(im.source).startsWith('data:image/png'))"
        " && gd.querySelector('image')).length;", sel)


def assert_clean_console(driver):
    errors = console_errors(driver)
    assert not errors, errors


def test_overview_lists_datasets_and_links_every_page(driver, server):
    open_page(driver, server.url + "/")
    table = wait_for(lambda: text(driver, "#overview-table"), what="overview table")
    assert "demo" in table and "e031" in table and "latents only" in table and "precomputed" in table
    links = driver.execute_script("return Array.from(document.querySelectorAll('#overview-table a')).map(a => a.href)")
    for path in ("/timeline", "/sectors", "/latent-map"):
        assert any(urlparse(u).path == path and parse_qs(urlparse(u).query).get("dataset") == ["e031"] for u in links)
    nav = driver.execute_script("return Array.from(document.querySelectorAll('.navbar a.nav-link')).map(a => a.href)")
    assert {urlparse(u).path for u in nav} >= {"/", "/timeline", "/sectors", "/latent-map"}
    assert_clean_console(driver)


def test_timeline_is_figure_3ab_and_k_and_bar_clicks_work(driver, server, demo):
    open_page(driver, server.url + "/timeline?dataset=demo")
    counts = demo["tables/counts"]
    g = graph(driver, "#timeline-graph", lambda g: sum(t["type"] == "bar" for t in g["data"]) == counts.shape[1])
    bars = [t for t in g["data"] if t["type"] == "bar"]
    for c, bar in enumerate(bars):
        np.testing.assert_array_equal(bar["y"], counts[:, c])
        np.testing.assert_allclose(bar["x"], demo["tables/times"])
    stress = [t for t in g["data"] if t["type"] == "scatter" and t["name"] == "shear stress"][0]
    np.testing.assert_allclose(stress["y"], demo["rheology"]["shear_stress"])
    # rows share the bottom axis: x2 (histogram), or x3 when the fitted-rate row is drawn below it
    rate_row = any(t["name"] == "flow median rate" for t in g["data"])
    assert g["matches"] == ("x3" if rate_row else "x2") and stress["xaxis"] == "x" and bars[0]["xaxis"] == "x2"
    minima = demo["stress_minima/time"]
    lines = [s for s in g["shapes"] if s["type"] == "line"]
    n_rows = 3 if rate_row else 2  # a dashed line at every minimum on every row
    assert len(lines) == n_rows * len(minima)
    assert sorted(s["x0"] for s in lines) == pytest.approx(sorted(list(minima) * n_rows))
    # change k: three stacked series equal to counts_k3
    driver.find_element("css selector", "label[for='_dbcprivate_radioitems_timeline-k_input_3'], "
                                        "#timeline-k input[value='3']").click()
    g = graph(driver, "#timeline-graph", lambda g: sum(t["type"] == "bar" for t in g["data"]) == 3)
    for c, bar in enumerate(t for t in g["data"] if t["type"] == "bar"):
        np.testing.assert_array_equal(bar["y"], demo["tables/counts_k3"][:, c])
    # click a bar: the maps of that time point appear as thumbnails from the PNG route
    click_plot_element(driver, "#timeline-graph .barlayer .trace:first-child .point:nth-child(3) path")
    title = wait_for(lambda: text(driver, "#timeline-maps-title"), what="maps of the clicked time")
    n_at = int((demo["tables/time_index"] == 2).sum())
    assert f"t = {demo['tables/times'][2]:.0f} s" in title and f"{n_at} maps" in title
    assert wait_for(lambda: images_loaded(driver, "#timeline-maps img"), what="thumbnails") == n_at
    srcs = driver.execute_script("return Array.from(document.querySelectorAll('#timeline-maps img')).map(i => i.src)")
    assert all("/_maps/demo/" in s for s in srcs)
    assert_clean_console(driver)


def test_sectors_heatmap_is_the_label_matrix_and_click_shows_the_map(driver, server, demo):
    open_page(driver, server.url + "/sectors?dataset=demo")
    g = graph(driver, "#sectors-graph", lambda g: g["data"] and g["data"][0]["type"] == "heatmap")
    hm = g["data"][0]
    np.testing.assert_array_equal(np.array(hm["z"]), demo["tables/sector_time_labels"])
    np.testing.assert_array_equal(hm["y"], demo["tables/sectors"])
    names = {s["name"] for s in g["shapes"]}
    assert {"flow-sector-5", "flow-sector-14", "vorticity-sector-1", "vorticity-sector-18"} <= names
    click_plot_element(driver, "#sectors-graph .nsewdrag")  # the centre cell of the plot
    wait_for(lambda: c2_views_drawn(driver, "#sectors-map .c2view-map"), what="clicked map")
    meta = text(driver, "#sectors-map .map-meta")
    assert "sector" in meta and "cluster" in meta
    assert_clean_console(driver)


def test_latent_map_recolour_click_and_lasso(driver, server, demo):
    open_page(driver, server.url + "/latent-map?dataset=demo")
    n = len(demo["labels"])

    def points(g):
        return [t for t in g["data"] if t["type"] in ("scatter", "scattergl") and not t["name"].startswith("t = ")]
    g = graph(driver, "#latent-graph", lambda g: len(points(g)) > 1)
    seen = np.concatenate([t["customdata"] for t in points(g)]).astype(int)
    assert sorted(seen.tolist()) == list(range(n))
    for t in points(g):
        c = int(t["name"].split()[-1])
        assert np.all(demo["labels"][np.array(t["customdata"], dtype=int)] == c)
    assert g["data"][0]["type"] == "heatmap"  # the flow-share layer under the points
    highlights = [t for t in g["data"] if t["name"].startswith("t = ")]
    assert len(highlights) == 3 and all(len(h["customdata"]) == 18 for h in highlights)
    # recolour by time: one continuous trace
    driver.find_element("css selector", "#latent-color input[value='time']").click()
    g = graph(driver, "#latent-graph", lambda g: len(points(g)) == 1 and points(g)[0]["name"] == "time (s)")
    # click a point: its map, its reconstruction and metadata
    driver.execute_script("""
        const gd = document.querySelector('#latent-graph .js-plotly-plot');
        const c = gd.data.findIndex(t => t.type.startsWith('scatter') && t.name === 'time (s)');
        gd.emit('plotly_click', {points: [{curveNumber: c, pointNumber: 7, pointIndex: 7,
                                            x: gd.data[c].x[7], y: gd.data[c].y[7]}]});""")
    wait_for(lambda: c2_views_drawn(driver, "#latent-detail .c2view-map"), what="map and reconstruction")
    detail = text(driver, "#latent-detail")
    assert "map index" in detail and "7" in detail
    assert c2_views_drawn(driver, "#latent-detail .c2view-recon") or "No reconstruction" in detail
    # lasso: the selection is listed and can be exported
    driver.execute_script("""
        const gd = document.querySelector('#latent-graph .js-plotly-plot');
        const c = gd.data.findIndex(t => t.type.startsWith('scatter') && t.name === 'time (s)');
        gd.emit('plotly_selected', {points: [3, 4, 5].map(i => ({curveNumber: c, pointNumber: i, pointIndex: i,
                                                                x: gd.data[c].x[i], y: gd.data[c].y[i]}))});""")
    summary = wait_for(lambda: text(driver, "#latent-selection-summary"), what="selection list")
    assert "3 maps selected" in summary
    assert wait_for(lambda: driver.find_element("id", "latent-selection-csv").is_enabled(), what="export button")
    assert_clean_console(driver)


def test_dataset_selector_changes_the_url_and_latents_only_says_so(driver, server):
    open_page(driver, server.url + "/timeline?dataset=demo")
    graph(driver, "#timeline-graph")
    driver.find_element("id", "dataset-select").click()
    option = wait_for(lambda: [o for o in driver.find_elements("css selector", "[role=option]")
                               if o.text.startswith("e031")], what="dataset options")[0]
    option.click()
    wait_for(lambda: parse_qs(urlparse(driver.current_url).query).get("dataset") == ["e031"], what="URL update")
    wait_for(lambda: "e031" in text(driver, "#timeline-page h4"), what="page for e031")
    click_plot_element(driver, "#timeline-graph .barlayer .trace:first-child .point:nth-child(2) path")
    msg = wait_for(lambda: text(driver, "#timeline-maps .no-maps-message"), what="no-maps message")
    assert "latents only" in msg
    assert not driver.find_elements("css selector", "#timeline-maps img")
    # the navbar links keep the dataset
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('.navbar a.nav-link')).map(a => a.href)")
    assert all("dataset=e031" in h for h in hrefs)
    open_page(driver, server.url + "/latent-map?dataset=e031")
    wait_for(lambda: text(driver, "#latent-page .no-maps-message"), what="latent-map note")
    graph(driver, "#latent-graph")
    driver.execute_script("""
        const gd = document.querySelector('#latent-graph .js-plotly-plot');
        const c = gd.data.findIndex(t => t.type.startsWith('scatter'));
        gd.emit('plotly_click', {points: [{curveNumber: c, pointNumber: 0, pointIndex: 0,
                                            x: gd.data[c].x[0], y: gd.data[c].y[0]}]});""")
    assert "latents only" in wait_for(lambda: text(driver, "#latent-detail .no-maps-message"), what="detail note")
    assert_clean_console(driver)
