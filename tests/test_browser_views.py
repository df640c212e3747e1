"""Views a scientist can share (issue 16), in headless Chromium against a real server.

- the URL holds every view's state: change k, colour and highlighted times; the address bar
  says so; a reload shows the same view; the back button restores the previous state;
- the navbar keeps the shared state; bad values in the URL fall back, never a server error;
- at 1280 x 800 the timeline's time axis and legend are above the fold and the maps of a
  clicked bar are scrolled into the viewport;
- no console errors on any page of a simulated and a latents-only dataset.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

import browser_support
from browser_support import BACKGROUND_JOB_TIMEOUT, browser, console_errors, enabled, wait_for, wait_for_figure

pytestmark = pytest.mark.browser

FIG_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout) return null;
return {names: gd.data.map(t => t.name), types: gd.data.map(t => t.type),
        legend: (gd.layout.legend && gd.layout.legend.title) ? gd.layout.legend.title.text : null};
"""


def query(driver) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(driver.current_url).query).items()}


def open_page(driver, url):
    browser_support.open_page(driver, url, ready="#page-content > div")


def figure(driver, sel, pred=None, timeout=30.0):
    return wait_for_figure(driver, FIG_JS, sel, pred, timeout)


def checked(driver, radio_id) -> str | None:
    return driver.execute_script(
        "const i = document.querySelector('#' + arguments[0] + ' input:checked'); return i ? i.value : null;", radio_id)


def click_radio(driver, radio_id, value):
    driver.execute_script("document.querySelector('#' + arguments[0] + ' input[value=\"' + arguments[1] + '\"]').click();",
                          radio_id, str(value))


def highlighted(g) -> list[str]:
    return sorted(n for n in g["names"] if n.startswith("t = "))


def test_url_state_round_trip_reload_and_back(driver, server):
    open_page(driver, server.url + "/latent-map?dataset=demo")
    g0 = figure(driver, "#latent-graph", lambda g: len(highlighted(g)) == 3)
    first_times = highlighted(g0)
    # change k, colour and the highlighted times: each change is written to the address bar
    click_radio(driver, "latent-k", 3)
    wait_for(lambda: query(driver).get("k") == "3", what="k=3 in the URL")
    figure(driver, "#latent-graph", lambda g: sum(n.startswith("cluster ") for n in g["names"]) == 3)
    click_radio(driver, "latent-color", "time")
    wait_for(lambda: query(driver).get("color") == "time", what="color=time in the URL")
    figure(driver, "#latent-graph", lambda g: "time (s)" in g["names"])
    # un-tick the first highlighted time in the dropdown's option list
    driver.find_element("id", "latent-times").click()
    option = wait_for(lambda: [o for o in driver.find_elements("css selector", "[role=option]")
                               if o.get_attribute("aria-selected") == "true"], what="ticked time options")[0]
    option.click()
    driver.find_element("tag name", "body").send_keys("\ue00c")  # Escape closes the list
    wait_for(lambda: query(driver).get("times", "").count(",") == 1, what="two times in the URL")
    g1 = figure(driver, "#latent-graph", lambda g: len(highlighted(g)) == 2 and "time (s)" in g["names"])
    state = query(driver)
    assert state["dataset"] == "demo" and state["k"] == "3" and state["color"] == "time"
    # reload: the same view
    driver.refresh()
    wait_for(lambda: driver.find_elements("css selector", "#latent-page"), what="latent page after reload")
    g2 = figure(driver, "#latent-graph", lambda g: "time (s)" in g["names"])
    assert highlighted(g2) == highlighted(g1)
    assert checked(driver, "latent-k") == "3" and checked(driver, "latent-color") == "time"
    assert query(driver) == state
    # back: the state before the last change (three highlighted times again)
    driver.back()
    wait_for(lambda: query(driver).get("times", "").count(",") != 1, what="URL before the last change")
    g3 = figure(driver, "#latent-graph", lambda g: len(highlighted(g)) == 3)
    assert highlighted(g3) == first_times
    assert checked(driver, "latent-color") == "time" and checked(driver, "latent-k") == "3"
    driver.back()  # before the colour change
    wait_for(lambda: query(driver).get("color") != "time", what="URL before the colour change")
    wait_for(lambda: checked(driver, "latent-color") == "cluster", what="cluster colouring restored")
    assert not console_errors(driver)


def test_navbar_keeps_the_shared_state_and_timeline_writes_k_and_time(driver, server):
    open_page(driver, server.url + "/timeline?dataset=demo")
    figure(driver, "#timeline-graph")
    click_radio(driver, "timeline-k", 8)
    wait_for(lambda: query(driver).get("k") == "8", what="k=8 in the URL")
    hrefs = wait_for(lambda: [h for h in driver.execute_script(
        "return Array.from(document.querySelectorAll('.navbar a.nav-link')).map(a => a.href)") if "k=8" in h],
        what="navbar links with k=8")
    assert any(urlparse(h).path == "/sectors" for h in hrefs)
    driver.find_element("css selector", "a.nav-link[href*='/sectors']").click()
    wait_for(lambda: checked(driver, "sectors-k") == "8", what="sectors page at k = 8")
    assert query(driver)["k"] == "8"
    assert not console_errors(driver)


def test_bad_url_values_fall_back_without_a_server_error(driver, server):
    bad = "/latent-map?dataset=demo&k=banana&color=%3Cscript%3E&times=1,x&map=999999&sel=9-2&bg=7"
    open_page(driver, server.url + bad)
    figure(driver, "#latent-graph")
    assert checked(driver, "latent-color") == "cluster"
    assert not console_errors(driver)
    for path in ("/timeline?dataset=demo&time=-3&k=hdbscan-00000000", "/sectors?map=abc&dataset=nope",
                 "/similarity?target=1e9", "/similarity?dataset=demo&upload=up-0000000000000000",
                 "/similarity?dataset=demo&upload=../../etc/passwd", "/help?view=nothing",
                 "/compare?compare=../../etc,demo"):
        open_page(driver, server.url + path)
        wait_for(lambda: driver.find_elements("css selector", "#page-content h3, #page-content h4, #page-content h5"),
                 what=f"{path} rendered")
        assert not driver.find_elements("css selector", "#page-content .alert-danger"), path
        assert not console_errors(driver), path


RECT_JS = """
const r = el => { const b = el.getBoundingClientRect(); return {top: b.top, bottom: b.bottom, height: b.height}; };
const gd = document.querySelector('#timeline-graph .js-plotly-plot');
const titles = Array.from(gd.querySelectorAll('.g-xtitle, .g-x2title, .g-x3title, .g-x4title, .g-x5title'));
return {inner: window.innerHeight, scroll: window.scrollY,
        axis: titles.length ? r(titles[titles.length - 1]) : null,
        legend: gd.querySelector('.legend') ? r(gd.querySelector('.legend')) : null};
"""


def test_laptop_layout_time_axis_above_the_fold_and_clicked_maps_in_view(server):
    with browser(1280, 800) as d:
        open_page(d, server.url + "/timeline?dataset=demo")
        figure(d, "#timeline-graph")
        rects = wait_for(lambda: (lambda r: r if r["axis"] and r["legend"] else None)(d.execute_script(RECT_JS)),
                         what="axis and legend drawn")
        assert rects["scroll"] == 0
        assert rects["axis"]["bottom"] <= rects["inner"], rects  # the time axis title is on screen
        assert rects["legend"]["bottom"] <= rects["inner"] and rects["legend"]["top"] >= 0, rects
        # click the tallest bar segment: the maps appear and are scrolled into the viewport
        from selenium.webdriver.common.action_chains import ActionChains

        bars = d.find_elements("css selector", "#timeline-graph .barlayer .point path")
        tallest = max(bars, key=lambda b: b.size["height"])
        ActionChains(d).move_to_element(tallest).click().perform()
        wait_for(lambda: d.execute_script("const im = document.querySelectorAll('#timeline-maps img');"
                                          "return im.length > 0 && Array.from(im).every(i => i.complete);"),
                 what="thumbnails of the clicked time")

        def first_thumb_visible():
            b = d.execute_script("const b = document.querySelector('#timeline-maps img').getBoundingClientRect();"
                                 "return [b.top, b.bottom, window.innerHeight];")
            return b[0] >= 0 and b[1] <= b[2]
        wait_for(first_thumb_visible, what="clicked maps inside the viewport")
        assert "time=" in d.current_url
        assert not console_errors(d)


def _downloaded(folder, name, timeout=60.0):
    path = folder / name
    return wait_for(lambda: path if path.exists() and path.stat().st_size > 0
                    and not (folder / (name + ".crdownload")).exists() else None, timeout, f"download {name}")


def test_exports_svg_and_pdf_are_valid_and_stamped(driver, server, tmp_path):
    import re
    import xml.etree.ElementTree as ET

    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    open_page(driver, server.url + "/timeline?dataset=demo")
    figure(driver, "#timeline-graph")

    def click_export(graph, fmt):
        driver.execute_script(
            "Array.from(document.querySelectorAll('button.export-button')).find(b => "
            "b.id.includes('\"graph\":\"' + arguments[0] + '\"') && b.id.includes('\"format\":\"' + arguments[1] + '\"'))"
            ".click();", graph, fmt)

    click_export("timeline-graph", "svg")
    svg_path = _downloaded(tmp_path, "timeline-graph.svg")
    root = ET.parse(svg_path).getroot()
    assert root.tag.endswith("svg")
    text = svg_path.read_text()
    assert "AI-NERD" in text and "(demo)" in text and "exported 20" in text  # the stamp
    assert "shear stress (Pa)" in text
    click_export("timeline-graph", "pdf")
    pdf = _downloaded(tmp_path, "timeline-graph.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 1
    # without the stamp
    driver.execute_script("document.querySelector('[id*=\"figure-stamp\"][id*=\"timeline-graph\"]').click();")
    (tmp_path / "timeline-graph.svg").unlink()
    click_export("timeline-graph", "svg")
    assert "AI-NERD" not in _downloaded(tmp_path, "timeline-graph.svg").read_text()
    # a figure of map images: the images are inlined, so the SVG and the PDF are self-contained
    open_page(driver, server.url + "/clusters?dataset=demo")
    figure(driver, "#clusters-examples")
    click_export("clusters-examples", "svg")
    svg = _downloaded(tmp_path, "clusters-examples.svg").read_text()
    assert ET.fromstring(svg).tag.endswith("svg") and "data:image/png;base64," in svg
    click_export("clusters-examples", "pdf")
    assert _downloaded(tmp_path, "clusters-examples.pdf").read_bytes().startswith(b"%PDF")
    assert not console_errors(driver)


def test_reclustering_result_is_selectable_labelled_and_clears_errors(driver, server):
    open_page(driver, server.url + "/clusters?dataset=demo")
    box = wait_for(lambda: driver.find_element("id", "recluster-k"), what="k box")
    assert box.size["width"] >= 60  # wide enough to read and type
    box.clear()
    box.send_keys("1")
    run = enabled(driver, "#recluster-run")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", run)
    # the check runs in the background job
    err = wait_for(lambda: driver.find_element("id", "recluster-error").text, timeout=BACKGROUND_JOB_TIMEOUT,
                   what="error message")
    assert "between 2 and 20" in err
    box.clear()
    box.send_keys("4")
    driver.execute_script("arguments[0].click();", enabled(driver, "#recluster-run"))
    text = wait_for(lambda: (lambda t: t if t.startswith("k-means, k = 4") else None)(
        driver.find_element("id", "recluster-result").text), timeout=BACKGROUND_JOB_TIMEOUT, what="re-clustering result")
    assert driver.find_element("id", "recluster-error").text == ""  # the error is gone
    sizes = [int(s) for s in text.split("sizes ")[1].split(" (")[0].split()]
    assert len(sizes) == 4
    driver.execute_script("arguments[0].click();", driver.find_element("id", "recluster-link-timeline"))
    wait_for(lambda: query(driver).get("k", "").startswith("kmeans-"), what="result id in the URL")
    rid = query(driver)["k"]
    g = figure(driver, "#timeline-graph", lambda g: sum(n.startswith("cluster ") for n in g["names"]) == 4)
    assert g["legend"].startswith("k-means, k = 4")
    assert checked(driver, "timeline-k") == rid
    # the sectors page offers it too, and a reload keeps it
    link = driver.find_element("css selector", "a.nav-link[href*='/sectors']")
    # the page has scrolled the clicked maps into view (the navbar is above it): click as a script
    driver.execute_script("arguments[0].click();", link)
    wait_for(lambda: checked(driver, "sectors-k") == rid, what="result chosen on the sectors page")
    driver.refresh()
    wait_for(lambda: checked(driver, "sectors-k") == rid, what="result kept after a reload")
    assert not console_errors(driver)


GRID_META_JS = """
const p = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!p || !p.layout || !p.layout.meta) return null;
return {meta: p.layout.meta, captions: (p.layout.annotations || []).map(a => a.text),
        dashes: (p.layout.shapes || []).map(s => (s.line || {}).dash || 'solid')};
"""


def test_similarity_upload_stays_neighbours_enlarge_relevance_in_text(driver, server, tmp_path):
    import numpy as np

    open_page(driver, server.url + "/similarity?dataset=demo")
    g = wait_for(lambda: (lambda x: x if x and x["meta"].get("index") else None)(
        driver.execute_script(GRID_META_JS, "similarity-latent-grid")), what="latent neighbours")
    rel = [v for v in g["meta"]["relevant"] if v is not None]
    assert rel, "the demo has ground truth"
    marks = [c for c in g["captions"] if c.endswith("✓") or c.endswith("✗")]
    assert len(marks) == len(rel) and sum(c.endswith("✓") for c in marks) == sum(rel)
    assert g["dashes"].count("dash") == rel.count(False)  # not relevant: dashed frame as well as red
    # upload a target
    target = tmp_path / "target.npy"
    y, x = np.mgrid[0:300, 0:300]
    np.save(target, np.exp(-np.abs(x - y) / 30.0).astype(np.float32))
    enabled(driver, "#similarity-upload input[type=file]").send_keys(str(target))
    wait_for(lambda: "searched" in driver.find_element("id", "similarity-upload-status").text,
             timeout=BACKGROUND_JOB_TIMEOUT, what="upload searched")
    wait_for(lambda: driver.find_elements("css selector", "#similarity-upload-map .js-plotly-plot"),
             what="uploaded target drawn large with axes")
    up = wait_for(lambda: (lambda x: x if x and "of map" not in str(x) else None)(
        driver.execute_script(GRID_META_JS, "similarity-latent-grid")), what="neighbours of the upload")
    first = up["meta"]["index"][0]
    # the upload is in the link: a reload shows the same search (saved on the server)
    uid = wait_for(lambda: query(driver).get("upload"), what="the upload's id in the URL")
    assert uid.startswith("up-") and "target" not in query(driver)
    raw_before = driver.execute_script(GRID_META_JS, "similarity-raw-grid")["meta"]["index"]
    driver.refresh()
    wait_for(lambda: driver.find_elements("css selector", "#similarity-upload-map .js-plotly-plot"),
             what="the uploaded target after a reload")
    wait_for(lambda: (driver.execute_script(GRID_META_JS, "similarity-raw-grid") or {"meta": {}})["meta"].get("index")
             == raw_before or None, what="the upload's raw neighbours after a reload")
    assert query(driver).get("upload") == uid
    # click a neighbour: it is enlarged, the uploaded target stays
    driver.execute_script("""
        const gd = document.querySelector('#similarity-latent-grid .js-plotly-plot');
        gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0, pointIndex: 0,
                                            customdata: gd.data[0].customdata[0]}]});""")
    wait_for(lambda: f"map {first}" in driver.find_element("id", "similarity-focus-title").text,
             what="enlarged neighbour")
    wait_for(lambda: driver.find_elements("css selector", "#similarity-focus-view .js-plotly-plot"),
             what="neighbour drawn with axes")
    assert driver.find_element("id", "similarity-target-img").get_attribute("src").startswith("data:image/png")
    assert driver.find_elements("css selector", "#similarity-upload-map")
    # a neighbour of every grid can be enlarged (here one of the smoothed-pixel grid's)
    smoothed = driver.execute_script(GRID_META_JS, "similarity-smoothed-grid")["meta"]["index"]
    j = next(j for j, i in enumerate(smoothed) if i != first)
    second = smoothed[j]
    driver.execute_script("""
        const gd = document.querySelector('#similarity-smoothed-grid .js-plotly-plot');
        const j = arguments[0];
        gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: j, pointIndex: j,
                                            customdata: gd.data[0].customdata[j]}]});""", j)
    wait_for(lambda: f"map {second} ·" in driver.find_element("id", "similarity-focus-title").text,
             what="enlarged smoothed-pixel neighbour")
    # replacing it is explicit
    driver.execute_script("arguments[0].click();", driver.find_element("id", "similarity-make-target"))
    wait_for(lambda: not driver.find_elements("css selector", "#similarity-upload-map"), what="target replaced")
    wait_for(lambda: query(driver).get("target") == str(second), what="target in the URL")
    assert "upload" not in query(driver)
    assert not console_errors(driver)


def test_latents_only_similarity_says_up_front_what_an_upload_can_do(driver, server):
    open_page(driver, server.url + "/similarity?dataset=e031")
    note = wait_for(lambda: driver.find_element("id", "similarity-latents-only").text, what="latents-only note")
    assert "only be searched in the latent space" in note
    raw = wait_for(lambda: (lambda x: x if x and x["captions"] else None)(
        driver.execute_script(GRID_META_JS, "similarity-raw-grid")), what="raw grid message")
    assert any("no raw-pixel neighbours" in c for c in raw["captions"])
    assert not console_errors(driver)


PAGES = ("/", "/timeline", "/sectors", "/latent-map", "/similarity", "/clusters", "/model", "/help", "/compare")


@pytest.mark.parametrize("dataset", ["demo", "e031"])
def test_no_console_errors_on_any_page(driver, server, dataset):
    import time

    for path in PAGES:
        open_page(driver, server.url + f"{path}?dataset={dataset}")
        wait_for(lambda: driver.execute_script(
            "return document.querySelector('#page-content > div') !== null && "
            "document.querySelectorAll('[data-dash-is-loading=\"true\"]').length === 0;"), what=f"{path} settled")
        time.sleep(1.5)  # late callbacks (figures, images) report their errors too
        assert not driver.find_elements("css selector", "#page-content .alert-danger"), path
        errors = console_errors(driver)
        assert not errors, (path, errors)


def test_selected_map_and_lasso_selection_come_back_from_the_url(driver, server):
    open_page(driver, server.url + "/latent-map?dataset=demo&map=7&sel=3-5,9")
    summary = wait_for(lambda: driver.find_element("id", "latent-selection-summary").text, what="selection list")
    assert summary.startswith("4 maps selected")
    assert "map index" in wait_for(lambda: driver.find_element("id", "latent-detail").text, what="map detail")
    sel = wait_for(lambda: driver.execute_script(
        "const gd = document.querySelector('#latent-graph .js-plotly-plot');"
        "if (!gd || !gd.data) return null; let n = 0;"
        "gd.data.forEach(t => { if (t.selectedpoints) n += t.selectedpoints.length; }); return n;"), what="selected points")
    assert sel == 4
    g = figure(driver, "#latent-graph")
    assert "map 7" in g["names"]  # the ring of the clicked map
    assert not console_errors(driver)
