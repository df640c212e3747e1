"""Live mode in headless Chromium: a watcher appends a new time point to the dataset the open
page shows; the timeline gains it without a page reload, the zoom is kept, the "live" indicator
names the new file, and a corrupt file shows up in the alerts list."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from browser_support import (PLOTLY_ARRAYS_JS, browser, console_errors, open_page, require_browser, running_server,
                             wait_for)
from test_watch import aps_file, run_until, watcher

pytestmark = pytest.mark.browser

BAR_TIMES_JS = PLOTLY_ARRAYS_JS + """
const gd = document.querySelector('#timeline-graph .js-plotly-plot');
if (!gd || !gd.data) return null;
const xs = new Set();
gd.data.filter(t => t.type === 'bar' || (t.name || '').startsWith('cluster'))
  .forEach(t => (arr(t.x) || []).forEach(x => xs.add(x)));
return {times: Array.from(xs).sort((a, b) => a - b), range: (gd._fullLayout.xaxis || {}).range};
"""


def test_new_time_point_appears_without_reload(explorer_data, tmp_path):
    require_browser()
    data = tmp_path / "data"
    data.mkdir()
    ref = data / "reference.h5"
    shutil.copy(explorer_data / "demo.h5", ref)
    folder = tmp_path / "beam"
    folder.mkdir()
    live = data / "beamtime.h5"
    w = watcher(folder, live, ref).start()
    try:
        for i in range(2):
            aps_file(folder, i)
        run_until(w, lambda: w.n >= 36)
        assert w.n == 36
        with running_server(data, tmp_path / "instance") as server, browser() as driver:
            _zoom_survives_a_new_time_point_and_alerts_list_the_bad_file(driver, server, w, folder)
            _other_live_pages_refresh_without_console_errors(driver, server, w, folder)
    finally:
        w.close()


def _zoom_survives_a_new_time_point_and_alerts_list_the_bad_file(driver, server, w, folder):
    driver.get(server.url + "/timeline?dataset=beamtime")
    first = wait_for(lambda: driver.execute_script(BAR_TIMES_JS), what="timeline bars")
    assert first["times"] == [0, 57]
    wait_for(lambda: "E031_0001_results.hdf" in driver.find_element("id", "live-indicator").text,
             what="live indicator")
    driver.execute_script("window.__noReload = 'still here';")
    from selenium.webdriver.common.action_chains import ActionChains

    default = first["range"]
    drag = driver.find_elements("css selector", "#timeline-graph .nsewdrag")[-1]  # the user zooms in x
    ActionChains(driver).move_to_element_with_offset(drag, -150, 0).click_and_hold().move_by_offset(200, 0) \
        .release().perform()
    zoomed = wait_for(lambda: (lambda r: r if r != default else None)(driver.execute_script(BAR_TIMES_JS)["range"]),
                      what="zoom")

    aps_file(folder, 2)  # the next time point arrives
    (folder / "E031_0009_results.hdf").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(3000))
    run_until(w, lambda: w.n >= 54 and "E031_0009_results.hdf" in w._failed)
    assert w.n == 54
    after = wait_for(lambda: (lambda g: g if g and g["times"] == [0, 57, 114] else None)(
        driver.execute_script(BAR_TIMES_JS)), timeout=30, what="the new time point in the timeline")
    assert driver.execute_script("return window.__noReload;") == "still here"  # no reload
    assert after["range"] == zoomed  # zoom kept (uirevision)
    text = driver.find_element("id", "live-indicator").text
    assert "LIVE" in text and "E031_0002_results.hdf" in text and "54 maps" in text
    wait_for(lambda: "alert" in driver.find_element("id", "live-alerts").text, what="alerts list")
    driver.find_element("css selector", "#live-alert-list summary").click()
    listed = driver.find_element("id", "live-alert-list").text
    assert "file failed: E031_0009_results.hdf" in listed
    links = driver.find_elements("css selector", "#live-alert-list a")  # novel maps link to the map
    for a in links:
        assert "/similarity?dataset=beamtime&target=" in a.get_attribute("href")


def _other_live_pages_refresh_without_console_errors(driver, server, w, folder):
    for path in ("/sectors", "/latent-map", "/"):
        open_page(driver, server.url + path + "?dataset=beamtime")
        time.sleep(2.5)  # at least one poll of the live interval
    aps_file(folder, 3)
    run_until(w, lambda: w.n >= 72)
    wait_for(lambda: "E031_0003_results.hdf" in driver.find_element("id", "live-indicator").text,
             timeout=30, what="indicator on the overview")
    errors = console_errors(driver)
    assert not errors, errors
