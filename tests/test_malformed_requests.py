"""Malformed requests get a 4xx with a one-line reason, never a 500 (issue 14, item 6).

A fuzzer posts malformed ``_dash-update-component`` bodies to each Dash app with the session
that may use it (explorer: viewer; admin: admin; evaluation: expert): broken JSON and wrong
types, unknown outputs, wrong numbers and shapes of inputs, and for every callback of the app
each input and state value replaced by hostile values (None, huge numbers, long strings,
objects, lists, path traversal...). Then bad ``_dash-component-suites`` paths, odd methods, and
uploads of empty or lying ``.npy`` files. Every answer must be < 500; every 4xx must carry one
line of reason.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from dashboard.app import create_app
from dashboard.config import Config
from dashboard.testing import signed_in_client
from dashboard.validation import load_npy_bytes

SECRET = "m" * 48
ADMIN_PW = "malformed admin pw"
VIEWER_PW = "malformed viewer pw"
HOSTILE = [None, -1, 10 ** 30, 1e308, "x" * 5000, "../../../../etc/passwd", {"a": [1, {"b": None}]},
           [[1, 2], [3]], True, "NaN", "", "?dataset=../../x&k=-5", {"points": [{"x": "a", "customdata": {}}]}]


@pytest.fixture(scope="module")
def world(explorer_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed")
    config = Config(data_dir=explorer_data, instance_dir=tmp / "instance", secret_key=SECRET,
                    admin_password=ADMIN_PW, viewer_password=VIEWER_PW, max_upload_bytes=2 * 1024 * 1024).validated()
    app = create_app(config)
    from ainerd_core.studies import StudyStore

    store = StudyStore(config.database_url)
    # a study on a copy (so that the explorer's own dataset is not withheld from the viewer)
    import shutil

    copy = tmp / "study_data" / "demo_study.h5"
    copy.parent.mkdir()
    shutil.copy(explorer_data / "demo.h5", copy)
    # a different file: not withheld by content either
    with open(copy, "r+b") as f:
        f.seek(0, 2)
        f.write(b"\0" * 16)
    study, tokens = store.create_study(copy, 3, n=4, experts=["Eve"])
    return dict(app=app, config=config, token=tokens[0][1], store=store)


def session_for(world, who):
    if who != "expert":
        return signed_in_client(world["app"], world["config"], who)
    c = world["app"].test_client()
    assert c.get(f"/evaluate/{world['token']}").status_code == 303
    return c


def check(r, what, stats):
    stats[r.status_code // 100] = stats.get(r.status_code // 100, 0) + 1
    assert r.status_code < 500, f"{what}: {r.status_code} {r.data[:300]!r}"
    if 400 <= r.status_code < 500:
        if r.is_json:
            msg = r.get_json().get("error")
        else:
            msg = r.get_data(as_text=True)
        assert msg and "\n" not in str(msg).strip(), f"{what}: no one-line reason: {r.data[:300]!r}"


def structural(deps):
    """Bodies that are malformed as a whole (independent of a callback)."""
    dep = deps[0]
    out = dep["output"]
    good_inputs = [{"id": i["id"], "property": i["property"], "value": None} for i in dep["inputs"]]
    yield b""
    yield b"null"
    yield b"[]"
    yield b"42"
    yield b'"text"'
    yield b"{not json"
    yield b"\xff\xfe\x00garbage"
    yield json.dumps({}).encode()
    yield json.dumps({"output": 7}).encode()
    yield json.dumps({"output": "no-such-component.children", "inputs": []}).encode()
    yield json.dumps({"output": out}).encode()
    yield json.dumps({"output": out, "inputs": "abc"}).encode()
    yield json.dumps({"output": out, "inputs": [1, 2, 3]}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs + good_inputs}).encode()
    yield json.dumps({"output": out, "inputs": [{"id": None, "property": "x"}] * len(good_inputs)}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "state": "x"}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "outputs": 5}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "state": [{"id": s["id"], "property": s["property"]}
                                                                      for s in dep.get("state", [])],
                      "outputs": {"id": "not-this-one", "property": "children"}}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "state": [{"id": s["id"], "property": s["property"]}
                                                                      for s in dep.get("state", [])],
                      "outputs": [{"id": "a", "property": "b"}] * 7}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "changedPropIds": [1, None]}).encode()
    yield json.dumps({"output": out, "inputs": good_inputs, "changedPropIds": "x"}).encode()
    yield json.dumps({"output": "x" * 100000}).encode()


def outputs_of(dep):
    outs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in dep["output"].strip(".").split("...")]
    for o in outs:
        if o["id"].startswith("{"):
            o["id"] = json.loads(o["id"])
    return outs if len(outs) > 1 else outs[0]


def value_bodies(dep, base_values):
    """For each input/state of the callback, that one replaced by each hostile value."""
    items = [("inputs", i) for i in dep["inputs"]] + [("state", s) for s in dep.get("state", [])]

    def body(replace=None, value=None):
        b = {"output": dep["output"], "outputs": outputs_of(dep), "inputs": [], "state": []}
        for n, (kind, it) in enumerate(items):
            cid = it["id"]
            if cid.startswith("{"):  # pattern-matching: one concrete match
                pid = json.loads(cid)
                pid = {k: (1 if isinstance(v, list) else v) for k, v in pid.items()}
                entry = [{"id": pid, "property": it["property"],
                          "value": value if n == replace else base_values.get(it["property"])}]
            else:
                entry = {"id": cid, "property": it["property"],
                         "value": value if n == replace else base_values.get((cid, it["property"]),
                                                                             base_values.get(it["property"]))}
            b[kind].append(entry)
        first = items[0][1] if items else None
        b["changedPropIds"] = [f"{first['id']}.{first['property']}"] if first and not first["id"].startswith("{") else []
        return json.dumps(b).encode()

    for n in range(len(items)):
        for v in HOSTILE:
            yield body(n, v)


@pytest.mark.parametrize("who, prefix", [("viewer", "/"), ("admin", "/admin/"), ("expert", "/evaluate/"),
                                         ("admin", "/")])
def test_malformed_update_bodies_never_500(world, who, prefix):
    c = session_for(world, who)
    deps = json.loads(c.get(prefix + "_dash-dependencies").data)
    assert deps
    stats: dict = {}
    n = 0
    for body in structural(deps):
        r = c.post(prefix + "_dash-update-component", data=body, headers={"Content-Type": "application/json"})
        check(r, f"{who} {prefix} structural {body[:80]!r}", stats)
        n += 1
    base = {("dataset-store", "data"): "demo", ("dataset-select", "value"): "demo", ("url", "pathname"): "/similarity",
            ("url", "search"): "?dataset=demo", "n_clicks": 1}
    for dep in deps:
        if dep.get("background") or "background" in json.dumps(dep.get("long", "")):
            continue  # a hostile value would only fail inside the job's own process
        for body in value_bodies(dep, base):
            r = c.post(prefix + "_dash-update-component", data=body, headers={"Content-Type": "application/json"})
            check(r, f"{who} {prefix} {dep['output'][:60]} {body[:200]!r}", stats)
            n += 1
    # wrong content type and methods
    r = c.post(prefix + "_dash-update-component", data="a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    check(r, "form body", stats)
    r = c.get(prefix + "_dash-update-component")
    check(r, "GET on the update route", stats)  # 405, or the explorer's catch-all page
    print(f"{who} {prefix}: {n} malformed bodies ->", {f"{k}xx": v for k, v in sorted(stats.items())})


BAD_SUITES = ["nope/x.js", "dash/../../etc/passwd", "dash/nope.js", "dash/dcc/nope.v1_2_3m4.js", "dash/x",
              "plotly/x.css", "dash/dcc/dash_core_components.js.map.gz", "dash/" + "a" * 3000 + ".js",
              "dash%00/x.js", "dash/dcc/%2e%2e/%2e%2e/dash.py", "dash_bootstrap_components/../../setup.py",
              "os/path.py", "dash/dash.py", "dash/../dash/dash.py"]


@pytest.mark.parametrize("who, prefix", [("viewer", "/"), ("admin", "/admin/"), ("expert", "/evaluate/")])
def test_bad_component_suite_paths_404(world, who, prefix):
    c = session_for(world, who)
    stats: dict = {}
    for path in BAD_SUITES:
        r = c.get(prefix + "_dash-component-suites/" + path)
        check(r, path, stats)
        assert r.status_code == 404, (path, r.status_code)
        assert b"import " not in r.data  # never a Python source file
    # a real one still works
    assert c.get(prefix + "_dash-component-suites/dash/dcc/dash_core_components.js").status_code in (200, 304)


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def lying_header(shape=(10 ** 6, 10 ** 6)) -> bytes:
    """A .npy whose header claims ``shape`` (10^12 elements) but holds 16 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 16


@pytest.mark.parametrize("raw, expect", [
    (b"", "empty"), (b"\x93NUMPY", "not a .npy"), (lying_header(), "claims"),
    (lying_header((100, 100)), "holds 16 bytes"), (npy_bytes(np.array([{"a": 1}], dtype=object)), "object"),
    (npy_bytes(np.zeros((0, 5))), "empty"), (npy_bytes(np.array(["ab", "cd"])), "numbers"),
    (b"PK\x03\x04not an npy", "not a .npy"),
])
def test_npy_loader_refuses_without_allocating(raw, expect):
    with pytest.raises(ValueError) as e:
        load_npy_bytes(raw, "t.npy")
    assert expect in str(e.value) and str(e.value).startswith("t.npy: ") and "\n" not in str(e.value)
    assert load_npy_bytes(npy_bytes(np.ones((4, 4))), "ok.npy").shape == (4, 4)


@pytest.mark.browser
def test_similarity_upload_failures_are_shown(explorer_data, tmp_path):
    """In Chromium: a .txt file, a file over the size limit, an empty .npy and a .npy whose header
    lies each get a visible message on /similarity (they used to fail silently)."""
    from browser_support import console_errors, make_driver, quit_driver, require_browser, start_server, wait_for

    require_browser()
    files = {"notes.txt": b"hello", "big.npy": npy_bytes(np.zeros((1200, 1200))),  # 11 MiB > 1 MiB limit
             "empty.npy": b"", "liar.npy": lying_header()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = start_server(explorer_data, tmp_path / "instance", AINERD_SECRET_KEY=SECRET, AINERD_MAX_UPLOAD_MB="1")
    driver = make_driver()
    try:
        driver.get(server.url + "/similarity?dataset=demo")
        expected = {"notes.txt": "not a .npy file", "big.npy": "limited to", "empty.npy": "the file is empty",
                    "liar.npy": "claims"}
        for name, text in expected.items():
            box = wait_for(lambda: driver.find_element("css selector", "#similarity-upload input[type=file]"),
                           what="upload input")
            box.send_keys(str(tmp_path / name))
            shown = wait_for(lambda: (driver.find_element("css selector", "#similarity-upload-error").text + " "
                                      + driver.find_element("css selector", "#similarity-upload-status").text)
                             if text in (driver.find_element("css selector", "#similarity-upload-error").text + " "
                                         + driver.find_element("css selector", "#similarity-upload-status").text)
                             else None, timeout=60, what=f"message for {name}")
            assert name in shown, shown
            driver.get(server.url + "/similarity?dataset=demo")  # a fresh upload component
        assert not [m for m in console_errors(driver) if "413" in m or "500" in m]
    finally:
        quit_driver(driver)
        server.stop()
