"""The measured dynamics in headless Chromium against a real server: clicking a point of the
latent map shows the C2 map in seconds with a colour bar next to its g2, the fitted curve and
the fitted numbers read from /results/dynamics; the timeline has the fitted-rate row; a
latents-only dataset without a decoder says its cluster order is unknown."""
from __future__ import annotations

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset
from browser_support import console_errors, wait_for, wait_for_figure

pytestmark = pytest.mark.browser

FIG_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullLayout || !gd.data) return null;
const L = gd._fullLayout;
return {names: gd.data.map(t => t.name), meta: gd.layout.meta || null,
        xtitle: (L.xaxis && L.xaxis.title) ? L.xaxis.title.text : null,
        images: (L.images || []).map(im => String(im.source).slice(0, 22)),
        svgImages: gd.querySelectorAll('image').length,
        colorbars: gd.querySelectorAll('.colorbar').length,
        traces: gd._fullData.map(t => ({name: t.name, xaxis: t.xaxis || 'x', yaxis: t.yaxis || 'y',
                                        y: t.y ? Array.from(t.y) : null})),  // decoded typed arrays
        yaxes: Object.keys(L).filter(k => k.startsWith('yaxis')).map(k => [k, L[k].type])};
"""


@pytest.fixture(scope="module")
def browser_data(dynamics_data):
    """What the module's `server` serves: the demo and E031 with measured dynamics."""
    return dynamics_data


def fig(driver, sel, pred=None, what=None):
    return wait_for_figure(driver, FIG_JS, sel, pred, timeout=30, what=what or sel)


def test_clicking_a_point_shows_the_map_in_seconds_next_to_its_g2_fit_and_numbers(driver, server, browser_data):
    from dashboard.figures.dynamics import fit_rows

    with open_dataset(browser_data / "demo.h5") as ds:
        step = ds.attrs.get("c2_time_step_s")
        fits = {k: ds.read_result(f"dynamics/{k}") for k in
                ("relaxation_rate", "rate_stderr", "stretching", "stretching_stderr", "contrast", "contrast_stderr",
                 "baseline", "baseline_stderr", "fit_r2", "fit_status")}
        n = ds.n_maps
    ok = np.flatnonzero(fits["fit_status"] == 0)
    assert ok.size, "the demo fixture has no successful fit"
    target = int(ok[len(ok) // 2])
    driver.get(server.url + "/latent-map?dataset=demo")
    note = wait_for(lambda: driver.find_element("id", "latent-order-note").text, what="order note")
    assert "fitted relaxation rate" in note and "Spearman" in note
    wait_for(lambda: driver.execute_script("const gd = document.querySelector('#latent-graph .js-plotly-plot');"
                                           "return gd && gd.data && gd.data.length > 1;"), what="latent map")
    driver.execute_script("""
        const gd = document.querySelector('#latent-graph .js-plotly-plot');
        const target = arguments[0];
        for (let c = 0; c < gd.data.length; c++) {
          const cd = gd.data[c].customdata;
          if (!gd.data[c].type.startsWith('scatter') || !cd) continue;
          const p = Array.from(cd).findIndex(v => Number(v) === target);
          if (p >= 0) { gd.emit('plotly_click', {points: [{curveNumber: c, pointNumber: p, pointIndex: p,
                                                          customdata: target, x: gd.data[c].x[p], y: gd.data[c].y[p]}]}); break; }
        }""", target)
    table = wait_for(lambda: driver.find_element("id", "latent-c2view-fit").text, what="fitted numbers")
    expected = dict(fit_rows({k: v[target].item() for k, v in fits.items()}, "1/s" if step else "1/pixel"))
    assert expected["relaxation rate Γ"] in table and expected["stretching γ"] in table
    assert expected["R²"] in table and "fit status ok" in table.replace("\n", " ")
    g2 = fig(driver, "#latent-c2view-g2", lambda g: "fit" in g["names"], "g2 panel with its fit")
    assert "g2 (map)" in g2["names"] and g2["meta"]["fit"]["relaxation rate Γ"] == expected["relaxation rate Γ"]
    c2 = fig(driver, "#latent-c2view-map", lambda g: g["svgImages"] >= 1, "C2 map")
    assert c2["images"][0].startswith("data:image/png") and c2["colorbars"] == 1
    assert c2["xtitle"] == ("t1 (s)" if step else "t1 (pixel; time step unknown)")
    span = c2["meta"]["n"] * (step or 1.0)
    assert driver.execute_script("return document.querySelector('#latent-c2view-map .js-plotly-plot')"
                                 "._fullLayout.xaxis.range[1];") == pytest.approx(span, rel=1e-6)
    assert c2["meta"]["diagonal_fix"] is True and c2["meta"]["limits"] == "1-99 %"
    # switch the diagonal correction off and the limits to min-max: the map is redrawn
    driver.find_element("css selector", "#latent-c2view .c2view-controls input[type='checkbox']").click()
    driver.find_element("css selector", "#latent-c2view .c2view-controls input[value='minmax']").click()
    fig(driver, "#latent-c2view-map", lambda g: g["meta"]["diagonal_fix"] is False and g["meta"]["limits"] == "min-max",
        "redrawn map")
    assert 0 <= target < n
    assert not console_errors(driver)


def test_timeline_has_the_fitted_rate_row_and_latents_only_says_the_order_is_unknown(driver, server, browser_data):
    from dashboard.figures.dynamics import rate_per_time

    with open_dataset(browser_data / "demo.h5") as ds:
        rates = rate_per_time(ds.read_result("tables/time_index"), len(ds.read_result("tables/times")),
                              ds.read_result("dynamics/relaxation_rate"), ds.read_result("dynamics/fit_status"),
                              ds.read_result("sector_class"))
    driver.get(server.url + "/timeline?dataset=demo")
    g = fig(driver, "#timeline-graph", lambda g: "flow median rate" in g["names"], "rate row")
    flow = [t for t in g["traces"] if t["name"] == "flow median rate"][0]
    have = np.isfinite(rates["flow"]["median"])
    np.testing.assert_allclose(flow["y"], rates["flow"]["median"][have], rtol=1e-6)
    assert flow["xaxis"] == "x3" and ["yaxis3", "log"] in g["yaxes"]
    assert "vorticity median rate" in g["names"] and "flow IQR" in g["names"]
    driver.get(server.url + "/latent-map?dataset=e031")
    note = wait_for(lambda: driver.find_element("id", "latent-order-note").text, what="order note")
    assert note.startswith("Cluster order unknown")
    assert not console_errors(driver)


def test_the_view_callback_answers_tampered_client_state_without_a_500(server, browser_data):
    """The view's state and controls live in the browser: whatever they hold, the redraw answers
    200 (nothing drawn for what c2_view did not write), never a server error."""
    import json

    import requests

    from dashboard.catalog import Catalog

    version = Catalog(browser_data).get("demo").version
    good = {"dataset": "demo", "version": version, "index": 3, "source": "map", "row": None, "title": "t", "key": "k"}
    oid = {"key": "k", "type": "c2view-body"}

    def post(state, limits="1-99", diag=("on",)):
        body = {"output": '{"key":["MATCH"],"type":"c2view-body"}.children',
                "outputs": {"id": oid, "property": "children"},
                "inputs": [{"id": {"key": "k", "type": "c2view-diag"}, "property": "value", "value": list(diag)},
                           {"id": {"key": "k", "type": "c2view-limits"}, "property": "value", "value": limits}],
                "state": [{"id": {"key": "k", "type": "c2view-state"}, "property": "data", "value": state}],
                "changedPropIds": ['{"key":"k","type":"c2view-limits"}.value']}
        r = requests.post(server.url + "/_dash-update-component", json=body, timeout=30)
        return r.status_code, json.loads(r.text).get("response", {}) if r.status_code == 200 else r.text

    status, response = post(good)
    assert status == 200 and "c2view-fit" in json.dumps(response)  # the control works on an honest state
    for bad in (None, "x", [1], dict(good, index="abc"), dict(good, index=10 ** 9), dict(good, index=-1),
                dict(good, source="stack", row="a"), dict(good, dataset="../demo"), dict(good, version="0")):
        status, response = post(bad)
        assert status == 200 and response == {}, (bad, status, response)
    for state, limits in ((dict(good, source="evil", title={"a": 1}, key=[1]), "1-99"), (good, {"x": 1}), (good, 7)):
        assert post(state, limits)[0] == 200
