"""The attacker of issue 14: an expert of an open study who can also reach the explorer.

Two explorer modes: open (no viewer password) and password-protected with the expert holding the
viewer password. Two attacker browsers each: the one that opened the expert link, and a private
window without it (in the protected mode logged in as viewer). Each attacker tries

- every route of the Flask ``url_map`` (GET and POST), with the study's dataset id, valid image
  tokens of its maps (as if seen elsewhere), and ``?dataset=`` queries;
- every callback of the explorer (from ``/_dash-dependencies``) with the study's dataset in the
  dataset store, the dataset selector and the URL, with the similarity target set to the study's
  target, and with no dataset at all (the router's default);

and every response is searched for the study dataset's content: its id, its map or figure
image URLs, its PNGs. The same probes on a control dataset (not under study) *do* return
neighbour data (so the probes can see a leak), and the admin does get the study's dataset.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from dashboard_fixtures import build_precomputed

from dashboard import auth
from dashboard.app import create_app
from dashboard.config import Config
from dashboard.testing import signed_in_client

SECRET = "b" * 48
ADMIN_PW = "blinding admin password"
VIEWER_PW = "blinding viewer password"
STUDY_DS, CONTROL_DS = "demo", "control"
TARGET = 17
LEAK = re.compile(rb"/_(?:maps|results)/demo/|\"demo\"|dataset=demo|demo\.h5")


@pytest.fixture(scope="module")
def data_dir(explorer_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blind-data")
    shutil.copy(explorer_data / "demo.h5", folder / "demo.h5")
    for extra in explorer_data.glob("*.pt"):
        shutil.copy(extra, folder / extra.name)
    build_precomputed(folder, name=CONTROL_DS, times=6, seed=3)
    return folder


def make_world(data_dir, tmp, viewer_password):
    config = Config(data_dir=data_dir, instance_dir=tmp / "instance", secret_key=SECRET, admin_password=ADMIN_PW,
                    viewer_password=viewer_password).validated()
    app = create_app(config)
    store = auth._store(config)
    study, tokens = store.create_study(data_dir / f"{STUDY_DS}.h5", TARGET, n=20, experts=["Mallory"])
    return dict(app=app, config=config, store=store, study=study, token=tokens[0][1])


@pytest.fixture(scope="module", params=["open", "protected"])
def world(request, data_dir, tmp_path_factory):
    return make_world(data_dir, tmp_path_factory.mktemp(request.param), None if request.param == "open" else VIEWER_PW)


def attacker(world, with_expert_link: bool):
    c = world["app"].test_client()
    if with_expert_link:
        assert c.get(f"/evaluate/{world['token']}").status_code == 303
    if world["config"].viewer_password:
        page = c.get("/login").get_data(as_text=True)
        token = re.search(r"name='csrf_token' value='([^']+)'", page).group(1)
        r = c.post("/login", data=dict(role="viewer", password=VIEWER_PW, csrf_token=token, next="/"))
        assert r.status_code == 303
    return c


def admin(world):
    return signed_in_client(world["app"], world["config"], "admin")


def image_urls(world, dataset):
    """Valid image URLs of the dataset's maps near the target (what a page would have shown)."""
    from dashboard.images import map_image_url

    cookie = admin(world).get_cookie("session").value  # made as the admin: the dataset is visible
    with world["app"].test_request_context("/", headers={"Cookie": f"session={cookie}"}):
        urls = [map_image_url(dataset, i, thumb=t) for i in (TARGET, 0, 1, 2) for t in (False, True)]
    urls = [u for u in urls if u]
    assert urls, f"no image URLs of {dataset}"
    return urls


def rule_paths(world, dataset):
    """One or more concrete paths per url_map rule."""
    out = []
    for rule in world["app"].url_map.iter_rules():
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        r = rule.rule
        if "<dataset_id>" in r:
            for u in image_urls(world, dataset) if dataset else []:
                if (r.startswith("/_maps") and u.startswith("/_maps")) or (r.startswith("/_results") and u.startswith("/_results")):
                    out.append(("GET", u))
            if dataset:
                out.append(("GET", r.replace("<dataset_id>", dataset).replace("<token>", "0" * 32)))
            continue
        path = (r.replace("<string:package_name>", "dash").replace("<path:fingerprinted_path>", "dcc/dash_core_components.js")
                .replace("<path:filename>", "explorer.css").replace("<path:path>", "similarity"))
        for m in methods:
            out.append((m, path))
            if m == "GET" and "<" not in path and dataset:
                out.append((m, path + f"?dataset={dataset}"))
    return out


def outputs_of(dep) -> list[dict]:
    """The ``outputs`` of a callback as the renderer sends them (dict ids parsed)."""
    outs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in dep["output"].strip(".").split("...")]
    for o in outs:
        if o["id"].startswith("{"):
            o["id"] = json.loads(o["id"])
    return outs


def callback_bodies(deps, dataset):
    """One body per explorer callback naming ``dataset`` (and the study target)."""
    values = {("dataset-store", "data"): dataset, ("dataset-select", "value"): dataset,
              ("url", "search"): f"?dataset={dataset}" if dataset else "", ("url", "pathname"): "/similarity",
              ("similarity-index", "value"): TARGET,
              ("similarity-target", "data"): {"kind": "index", "index": TARGET, "t": 1.0},
              ("similarity-k", "value"): 20}
    for dep in deps:
        items = [("inputs", i) for i in dep["inputs"]] + [("state", s) for s in dep.get("state", [])]
        if any(it["id"].startswith("{") for _, it in items):
            continue  # pattern-matching ids: none of them carries the dataset
        outs = outputs_of(dep)
        body = {"output": dep["output"], "outputs": outs if len(outs) > 1 else outs[0], "inputs": [], "state": []}
        for kind, it in items:
            v = values.get((it["id"], it["property"]), 1 if it["property"] == "n_clicks" else None)
            body[kind].append({"id": it["id"], "property": it["property"], "value": v})
        first = dep["inputs"][0] if dep["inputs"] else None
        body["changedPropIds"] = [f"{first['id']}.{first['property']}"] if first else []
        yield dep["output"], body
    # the router on every page, with the dataset in the URL
    for page in ("/", "/timeline", "/sectors", "/latent", "/similarity", "/clusters", "/model"):
        dep = next(d for d in deps if d["output"].startswith("..page-content.children"))
        by_prop = {"pathname": page, "search": f"?dataset={dataset}" if dataset else "", "value": dataset,
                   "data": dataset}
        body = {"output": dep["output"], "outputs": outputs_of(dep),
                "inputs": [{"id": i["id"], "property": i["property"], "value": by_prop.get(i["property"])}
                           for i in dep["inputs"]],
                "state": [{"id": i["id"], "property": i["property"], "value": by_prop.get(i["property"])}
                          for i in dep.get("state", [])],
                "changedPropIds": ["url.pathname"]}
        yield f"router {page}", body


def probe(c, world, dataset, deps):
    """Every route and callback; returns [(what, status, body bytes)]."""
    got = []
    for method, path in rule_paths(world, dataset):
        if method == "POST":
            r = c.post(path, json={})
        else:
            r = c.get(path, headers={"Accept": "text/html"} if "_dash" not in path else {})
        got.append((f"{method} {path}", r.status_code, r.data, r.mimetype))
    for what, body in callback_bodies(deps, dataset):
        r = c.post("/_dash-update-component", json=body)
        got.append((f"callback {what}", r.status_code, r.data, r.mimetype))
    return got


_FIRST_INTS = re.compile(rb"\[\s*(\d+)\s*,")


def study_sequences(world, top: int = 5) -> list[list[int]]:
    """The dataset indices of each method's first ``top`` candidates (what the attacker wants)."""
    from ainerd_core.studies import Candidate, CandidateSource

    with world["store"].session() as s:
        rows = s.query(CandidateSource.method, CandidateSource.rank, Candidate.dataset_index) \
            .join(Candidate, Candidate.id == CandidateSource.candidate_id) \
            .filter(CandidateSource.study_id == world["study"].id).all()
    seqs = {}
    for method, rank, index in sorted(rows):
        seqs.setdefault(method, []).append(index)
    return [v[:top] for v in seqs.values()]


def ranks_revealed(data: bytes, sequences) -> bool:
    """True when the neighbour lists of the study (the dataset indices of ranks 1..5 of a method,
    in order) appear in ``data`` as consecutive rows (plotly customdata [[index, ...], ...])."""
    firsts = [int(x) for x in _FIRST_INTS.findall(data)]
    for seq in sequences:
        n = len(seq)
        if any(firsts[i:i + n] == seq for i in range(len(firsts) - n + 1)):
            return True
    return False


def leaks(results, sequences=()):
    bad = []
    for what, status, data, mimetype in results:
        if status >= 300:
            continue
        if "_dash-component-suites" in what or "/assets/" in what:
            continue  # static library files, the same for everybody
        if mimetype == "image/png" and ("/demo/" in what):
            bad.append((what, "a PNG of the study's dataset"))
        elif LEAK.search(data):
            m = LEAK.search(data)
            bad.append((what, data[max(0, m.start() - 60):m.end() + 60]))
        elif sequences and ranks_revealed(data, sequences):
            bad.append((what, "the study's neighbour ranks"))
    return bad


def explorer_deps(world):
    return json.loads(admin(world).get("/_dash-dependencies").data)


@pytest.mark.parametrize("with_link", [True, False], ids=["expert-browser", "private-window"])
def test_attacker_learns_nothing_of_the_study_dataset(world, with_link):
    c = attacker(world, with_link)
    deps = explorer_deps(world)
    results = probe(c, world, STUDY_DS, deps) + probe(c, world, None, deps)
    sequences = study_sequences(world)
    assert not leaks(results, sequences), leaks(results, sequences)
    assert not [(w, s) for w, s, _, _ in results if s >= 500]
    by_status: dict = {}
    for _, status, _, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    mode = "protected" if world["config"].viewer_password else "open"
    print(f"\n{mode} explorer, {'expert browser' if with_link else 'private window'}: {len(results)} requests ->",
          dict(sorted(by_status.items())))
    # the requests naming the dataset were refused with the reason, not just empty
    refused = [(w, d) for w, s, d, _ in results if s == 403 and "/evaluate" not in w and "/admin" not in w]
    assert refused
    unexplained = [(w, d[:200]) for w, d in refused if b"blind evaluation" not in d and b"blind-evaluation" not in d]
    assert not unexplained, unexplained
    if with_link:  # the expert's browser gets no explorer at all
        allowed = ("/login", "/logout", "/healthz", "/login/style.css")
        served = [(w, s) for w, s, _, _ in results if s < 300 and "_dash-component-suites" not in w
                  and "/evaluate" not in w and w.split()[1].split("?")[0] not in allowed]
        assert not served, served


def test_the_same_probes_see_a_dataset_not_under_study(world):
    """Control: in the private window the probes reach the control dataset's neighbours, and the
    admin reaches the study dataset's (so the leak detector works and the routes exist)."""
    c = attacker(world, False)
    deps = explorer_deps(world)
    ok = [(w, d) for w, s, d, _ in probe(c, world, CONTROL_DS, deps) if s == 200]
    assert any(b"customdata" in d for w, d in ok if "similarity-latent-grid" in w), "no neighbour grid of the control"
    assert any(w.startswith("GET /_maps/control/") for w, _ in ok)
    admin_results = probe(admin(world), world, STUDY_DS, deps)
    sequences = study_sequences(world)
    assert leaks(admin_results), "the admin should see the study's dataset (the detector must fire)"
    revealed = [w for w, s, d, _ in admin_results if s == 200 and ranks_revealed(d, sequences)]
    # the attack, as the admin can still do it: the similarity page lists the study's
    # candidates in rank order for both methods
    assert any("similarity-latent-grid" in w for w in revealed), revealed


def test_closing_the_study_releases_the_dataset(data_dir, tmp_path):
    w = make_world(data_dir, tmp_path, None)
    c = w["app"].test_client()
    url = image_urls(w, STUDY_DS)[0]
    assert c.get(url).status_code == 403
    w["store"].close_study(w["study"].id)
    assert c.get(url).status_code == 200
    w["store"].reopen(w["study"].id)
    assert c.get(url).status_code == 403


def test_a_byte_copy_under_another_name_is_withheld_too(data_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(data_dir / "demo.h5", folder / "demo.h5")
    shutil.copy(data_dir / "demo.h5", folder / "renamed_copy.h5")
    w = make_world(folder, tmp_path, None)
    report = w["app"].extensions["ainerd_blinding"].report()
    assert set(report["withheld"]) == {"demo", "renamed_copy"}
    c = w["app"].test_client()
    assert c.get("/renamed_copy?dataset=renamed_copy", headers={"Accept": "text/html"}).status_code == 403


def test_admin_report_warns_about_look_alike_datasets(data_dir, tmp_path):
    """A different file with the same title and number of maps (e.g. the same data precomputed
    again) is not recognised as the study's data: the admin page warns."""
    import h5py

    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(data_dir / "demo.h5", folder / "demo.h5")
    shutil.copy(data_dir / "demo.h5", folder / "demo_v2.h5")
    with h5py.File(folder / "demo_v2.h5", "r+") as f:
        f.attrs["ainerd_note"] = "precomputed again"
    w = make_world(folder, tmp_path, None)
    report = w["app"].extensions["ainerd_blinding"].report()
    assert list(report["withheld"]) == ["demo"]
    assert any("demo_v2" in x and "at risk" in x for x in report["warnings"]), report
