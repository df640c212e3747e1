"""/similarity for a map without precomputed pixel neighbours (a live row, or a dataset
precomputed before the smoothed space existed), in headless Chromium: the page says so in the
grids and offers an exact search on request, whose result is the core search's."""
from __future__ import annotations

import shutil

import h5py
import pytest

import browser_support
from browser_support import BACKGROUND_JOB_TIMEOUT, console_errors, wait_for

pytestmark = pytest.mark.browser

GRID_JS = """
const p = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!p || !p.layout) return null;
return {index: (p.layout.meta || {}).index || null, captions: (p.layout.annotations || []).map(a => a.text)};
"""


@pytest.fixture(scope="module")
def browser_data(explorer_data, tmp_path_factory):
    """The demo, and a copy of it whose raw and smoothed neighbour tables are gone."""
    data = tmp_path_factory.mktemp("similarity-search-data")
    shutil.copy(explorer_data / "demo.h5", data / "demo.h5")
    shutil.copy(explorer_data / "demo.h5", data / "older.h5")
    with h5py.File(data / "older.h5", "a") as f:
        for space in ("raw", "smoothed"):
            for part in ("index", "distance"):
                del f[f"results/similarity/{space}_{part}"]
    return data


def _box_shown(driver):
    return driver.find_element("id", "similarity-pixel-search-box").value_of_css_property("display") != "none"


def test_pixel_neighbours_on_request_for_a_map_without_them(driver, server, browser_data):
    from ainerd_core.dataset import open_dataset
    from ainerd_core.similarity import nearest_pixel_neighbours

    with open_dataset(browser_data / "older.h5") as ds:
        expected = nearest_pixel_neighbours(ds, 7, 12)
    browser_support.open_page(driver, server.url + "/similarity?dataset=older&target=7",
                              ready="#page-content > div")
    raw = wait_for(lambda: (lambda g: g if g and g["captions"] else None)(driver.execute_script(GRID_JS, "similarity-raw-grid")),
                   what="raw grid message")
    assert any("search them with the button" in c for c in raw["captions"])
    wait_for(lambda: _box_shown(driver) or None, what="the search button shown")
    button = driver.find_element("id", "similarity-pixel-search")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)
    for space in ("raw", "smoothed"):
        wait_for(lambda space=space: (driver.execute_script(GRID_JS, f"similarity-{space}-grid") or {}).get("index")
                 == expected[space][0].tolist() or None, timeout=BACKGROUND_JOB_TIMEOUT, what=f"{space} neighbours")
    assert not _box_shown(driver)
    rows = driver.execute_script("return Array.from(document.querySelectorAll('#similarity-table td')).map(t => t.innerText)")
    assert "raw" in rows  # the table lists them (its first page: latent, then raw)
    # another map: the search was for map 7 only
    box = driver.find_element("id", "similarity-index")
    box.clear()
    box.send_keys("9\n")
    wait_for(lambda: any("search them with the button" in c for c in
                         (driver.execute_script(GRID_JS, "similarity-smoothed-grid") or {}).get("captions", [])) or None,
             what="map 9 has no smoothed neighbours yet")
    assert _box_shown(driver)
    # a dataset with every table precomputed does not offer it
    browser_support.open_page(driver, server.url + "/similarity?dataset=demo", ready="#page-content > div")
    wait_for(lambda: (driver.execute_script(GRID_JS, "similarity-smoothed-grid") or {}).get("index"), what="demo grids")
    assert not _box_shown(driver)
    assert not console_errors(driver)
