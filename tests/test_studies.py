"""Studies: creation (deduplicated, credited candidates), tokens, revocation/expiry, ratings
(upsert + event log), resume position, exports, the CLI, and durability under kill -9."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset, write_dataset, write_results
from ainerd_core.errors import InputError
from ainerd_core.testing import build_tiny
from ainerd_core.studies import (Assignment, Candidate, CandidateSource, Expert, Rating, RatingEvent, StudyError,
                                 StudyStore, hash_token, prepare_target)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny.h5")


@pytest.fixture
def store(database) -> StudyStore:
    """An empty store, once on SQLite and once on PostgreSQL (conftest ``database``)."""
    return StudyStore(database.url)


def brute_force(tiny, target, k):
    with open_dataset(tiny) as ds:
        lat = ds.read_result("latent").astype(np.float64)
        maps = ds.read_maps(np.arange(ds.n_maps)).reshape(ds.n_maps, -1).astype(np.float64)
    out = {}
    for name, x in (("latent", lat), ("raw", maps)):
        d = ((x - x[target]) ** 2).sum(1)
        d[target] = np.inf
        out[name] = list(np.argsort(d, kind="stable")[:k])
    return out


def test_create_deduplicates_and_credits(tiny, store):
    study, tokens = store.create_study(tiny, 5, n=12, experts=["Alice", "Bob"])
    expect = brute_force(tiny, 5, 12)
    union = set(expect["latent"]) | set(expect["raw"])
    with store.session() as s:
        cands = s.query(Candidate).filter_by(study_id=study.id).all()
        assert sorted(c.dataset_index for c in cands) == sorted(int(i) for i in union)  # each image once
        by_id = {c.id: c.dataset_index for c in cands}
        for m in ("latent", "raw"):
            rows = s.query(CandidateSource).filter_by(study_id=study.id, method=m).order_by(CandidateSource.rank).all()
            assert [r.rank for r in rows] == list(range(1, 13))
            assert [by_id[r.candidate_id] for r in rows] == [int(i) for i in expect[m]]
        both = set(expect["latent"]) & set(expect["raw"])
        assert both, "the fixture should have candidates found by both methods"
        for i in both:  # credited to both methods, shown once
            cid = next(c.id for c in cands if c.dataset_index == i)
            assert sorted(r.method for r in s.query(CandidateSource).filter_by(candidate_id=cid)) == ["latent", "raw"]
        # every expert sees every distinct candidate exactly once, in their own order
        orders = []
        for e in s.query(Expert).filter_by(study_id=study.id):
            a = s.query(Assignment).filter_by(expert_id=e.id).order_by(Assignment.position).all()
            assert sorted(x.candidate_id for x in a) == sorted(by_id)
            assert [x.position for x in a] == list(range(len(by_id)))
            orders.append([x.candidate_id for x in a])
        assert orders[0] != orders[1]
        # the target itself is never a candidate
        assert 5 not in by_id.values()
    assert study.n_per_method == 12 and len(tokens) == 2


def test_smoothed_pixels_as_a_third_method(tiny, store):
    """Opt-in third method: the target's nearest maps in smoothed-pixel space, ranked like the
    others; the default stays the paper's two methods."""
    from ainerd_core.similarity import nearest_neighbours

    study, _ = store.create_study(tiny, 5, n=8, experts=["A"], methods=["latent", "raw", "smoothed"])
    assert study.methods == "latent,raw,smoothed"
    with open_dataset(tiny) as ds:
        expect = nearest_neighbours(ds, 5, "smoothed", 8)[0]
    with store.session() as s:
        by_id = {c.id: c.dataset_index for c in s.query(Candidate).filter_by(study_id=study.id)}
        rows = (s.query(CandidateSource).filter_by(study_id=study.id, method="smoothed")
                .order_by(CandidateSource.rank).all())
        assert [by_id[r.candidate_id] for r in rows] == [int(i) for i in expect]
    default, _ = store.create_study(tiny, 5, n=4, experts=["A"])
    assert default.methods == "latent,raw"


def test_uploaded_target_identical_to_a_map_and_resampling(tiny, store):
    with open_dataset(tiny) as ds:
        m7 = ds.read_map(7)
    study, _ = store.create_study(tiny, m7 * 3 + 1, n=5, experts=["A"])  # normalised again -> identical
    assert study.target_index == 7
    with store.session() as s:
        assert 7 not in [c.dataset_index for c in s.query(Candidate).filter_by(study_id=study.id)]
    small = prepare_target(np.arange(64 * 64, dtype=float).reshape(64, 64))
    assert small.shape == (256, 256) and small.min() == 0 and small.max() == pytest.approx(1)
    with pytest.raises(InputError):
        prepare_target(np.zeros((3, 4, 5)))


def test_tokens_are_only_stored_hashed(tiny, store, database):
    study, tokens = store.create_study(tiny, 1, n=4, experts=["Alice", "Bob"])
    db = database.stored_bytes()  # every file of the database (PostgreSQL: tables and WAL)
    assert hashlib.sha256(tokens[0][1].encode()).hexdigest().encode() in db  # the search can find
    for expert, token in tokens:
        assert len(token) >= 43
        assert token.encode() not in db
        assert expert.token_hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
        assert store.expert_for_token(token) == (expert.id, "")
    assert store.expert_for_token("x" * 43)[0] is None
    assert store.expert_for_token("short")[0] is None


def test_revocation_expiry_and_closing(tiny, store):
    study, tokens = store.create_study(tiny, 1, n=4, experts=["A", "B", "C"])
    (ea, ta), (eb, tb), (ec, tc) = tokens
    store.revoke(ta)
    assert store.expert_for_token(ta) == (None, "This link has been withdrawn by the organiser.")
    store.revoke(str(eb.id))
    assert store.expert_for_token(tb)[0] is None
    with pytest.raises(StudyError):
        store.record_rating(eb.id, 0, True)
    _, t_exp = store.add_expert(study.id, "D", expires_days=-1)
    assert store.expert_for_token(t_exp) == (None, "This link has expired.")
    assert store.expert_for_token(tc)[0] == ec.id
    store.close_study(study.id)
    assert store.expert_for_token(tc)[1].startswith("This evaluation is closed")
    with pytest.raises(StudyError):
        store.record_rating(ec.id, 0, True)
    with pytest.raises(StudyError):
        store.add_expert(study.id, "E")


def test_ratings_upsert_and_event_log(tiny, store):
    study, tokens = store.create_study(tiny, 2, n=6, experts=["A", "B"])
    ea, eb = tokens[0][0], tokens[1][0]
    assert store.record_rating(ea.id, 0, True)["version"] == 1
    assert store.record_rating(ea.id, 0, True)["version"] == 2  # a retry: no duplicate
    assert store.record_rating(ea.id, 0, False)["version"] == 3  # a change
    store.record_rating(eb.id, 0, True)
    with pytest.raises(StudyError):
        store.record_rating(ea.id, 999, True)
    with store.session() as s:
        ratings = s.query(Rating).filter_by(expert_id=ea.id).all()
        assert len(ratings) == 1 and ratings[0].similar is False and ratings[0].version == 3
        events = s.query(RatingEvent).filter_by(expert_id=ea.id).order_by(RatingEvent.id).all()
        assert [(e.similar, e.version, e.position) for e in events] == [(True, 1, 0), (True, 2, 0), (False, 3, 0)]
        assert events[0].created_utc <= events[1].created_utc <= events[2].created_utc
        assert s.query(Rating).filter_by(expert_id=eb.id).count() == 1


def test_resume_position(tiny, store):
    study, tokens = store.create_study(tiny, 3, n=5, experts=["A"])
    e = tokens[0][0]
    v = store.expert_view(e.id)
    total = v["total"]
    assert v["position"] == 0 and v["rated"] == 0 and v["answer"] is None
    for p in (0, 1, 3):
        store.record_rating(e.id, p, p != 1)
    v = store.expert_view(e.id)
    assert v["position"] == 2 and v["rated"] == 3
    assert store.expert_view(e.id, 1)["answer"] is False and store.expert_view(e.id, 3)["answer"] is True
    assert store.next_position(e.id, 3) == 4
    for p in range(total):
        store.record_rating(e.id, p, True)
    v = store.expert_view(e.id)
    assert v["position"] == total and v["image_key"] is None and v["rated"] == total
    # images: only the expert's own keys
    v0 = store.expert_view(e.id, 0)
    assert store.image_for_key(e.id, v0["image_key"]).startswith(b"\x89PNG")
    assert store.image_for_key(e.id, v0["target_key"]).startswith(b"\x89PNG")
    assert store.image_for_key(e.id + 1, v0["image_key"]) is None


def test_results_csv_matches_answers(tiny, store, tmp_path):
    study, tokens = store.create_study(tiny, 4, n=6, experts=["A", "B"])
    rng = np.random.default_rng(1)
    answers = {}
    for e, _ in tokens:
        for p in range(store.expert_view(e.id)["total"]):
            v = bool(rng.random() < 0.6)
            store.record_rating(e.id, p, v)
            answers[(e.id, p)] = v
    files = store.export(study.id, tmp_path / "out", window=3, n_boot=100, n_perm=200)
    names = {p.name for p in files}
    assert {"accuracy.csv", "ratings.csv", "rating_events.csv", "candidates.csv", "analysis.json", "log.json"} <= names
    # hand computation: the answer to each method's rank-r candidate, averaged over experts
    with store.session() as s:
        pos = {(a.expert_id, a.candidate_id): a.position
               for a in s.query(Assignment).join(Expert).filter(Expert.study_id == study.id)}
        src = s.query(CandidateSource).filter_by(study_id=study.id).all()
    expect = {}
    for r in src:
        vals = [answers[(e.id, pos[(e.id, r.candidate_id)])] for e, _ in tokens]
        expect[(r.method, r.rank)] = sum(vals) / len(vals)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "accuracy.csv").read_text())))
    got = {(r["method"], int(r["rank"])): float(r["accuracy"]) for r in rows if r["expert"] == "average"}
    assert got == pytest.approx(expect)
    events = list(csv.DictReader(io.StringIO((tmp_path / "out" / "rating_events.csv").read_text())))
    assert len(events) == len(answers) and {e["expert"] for e in events} == {"A", "B"}


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "ainerd_core", "study", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_workflow(tiny, tmp_path, database):
    db = database.url
    target = tmp_path / "target.npy"
    with open_dataset(tiny) as ds:
        np.save(target, ds.read_map(9)[::2, ::2] * 5.0)  # 128 x 128, not normalised: resampled
    r = _cli("create", str(tiny), "--target", str(target), "--n", "6", "--experts", "Alice,Bob",
             "--methods", "raw", "--base-url", "http://example.org:8050/", "--expires-days", "3", "--db", db)
    assert r.returncode == 0, r.stderr
    links = r.stdout.split()
    assert len(links) == 2 and all(l.startswith("http://example.org:8050/evaluate/") for l in links)
    r = _cli("create", str(tiny), "--target", "7", "--n", "5", "--experts", "Carol", "--db", db)
    assert r.returncode == 0, r.stderr
    r = _cli("list", "--db", db)
    assert r.returncode == 0 and "Alice" in r.stdout and "Carol" in r.stdout and "0 / " in r.stdout
    r = _cli("add-expert", "1", "Dave", "--db", db)
    assert r.returncode == 0 and "/evaluate/" in r.stdout
    token = links[0].rsplit("/", 1)[1]
    r = _cli("revoke", token, "--db", db)
    assert r.returncode == 0 and "Alice" in r.stdout
    r = _cli("close", "2", "--db", db)
    assert r.returncode == 0
    r = _cli("results", "1", "--out", str(tmp_path / "res"), "--db", db, "--bootstrap", "50", "--permutations", "50")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "res" / "accuracy.csv").exists()
    r = _cli("list", "--db", db)
    assert "revoked" in r.stdout and "closed" in r.stdout
    # user errors: one line, exit 2
    for bad in (["create", str(tiny), "--target", "999", "--experts", "A", "--db", db],
                ["create", str(tiny), "--target", "x.txt", "--experts", "A", "--db", db],
                ["create", str(tmp_path / "missing.h5"), "--target", "1", "--experts", "A", "--db", db],
                ["create", str(tiny), "--target", "1", "--experts", "A", "--methods", "pca", "--db", db],
                ["close", "77", "--db", db]):
        r = _cli(*bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


WRITER = r"""
import sys
from ainerd_core.studies import StudyStore
store = StudyStore(sys.argv[1]); eid = int(sys.argv[2]); total = int(sys.argv[3])
i = 0
while True:
    p = i % total
    store.record_rating(eid, p, (i // total) % 2 == 0)
    print(i, flush=True)   # acknowledged only after COMMIT
    i += 1
"""


def test_kill_minus_9_loses_no_acknowledged_rating(tiny, store, tmp_path):
    study, tokens = store.create_study(tiny, 6, n=10, experts=["A"])
    eid = tokens[0][0].id
    total = store.expert_view(eid)["total"]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, store.url, str(eid), str(total)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    acked = -1
    deadline = time.time() + 60
    while acked < 2 * total + 3 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read().split()
    acked = max([acked] + [int(x) for x in rest])
    assert acked >= 2 * total
    with store.session() as s:
        events = s.query(RatingEvent).filter_by(expert_id=eid).count()
        ratings = s.query(Rating).filter_by(expert_id=eid).count()
    assert events >= acked + 1  # every acknowledged write is there (one more may have committed unacknowledged)
    assert ratings == total


def test_concurrent_experts_on_gunicorn_lose_nothing(database):
    """A small run of benchmarks/evaluation_load.py: 8 experts in a burst, 3 gunicorn workers."""
    from benchmarks import evaluation_load

    assert evaluation_load.main(["--experts", "8", "--workers", "3", "--n", "4", "--think-ms", "0",
                                 "--db", database.url]) == 0
