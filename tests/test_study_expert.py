"""The expert side per request (ainerd_core/study_expert.py), on SQLite and PostgreSQL, through the app.

- a rating click is one pool checkout and 3 statements, an image one checkout (counted with
  SQLAlchemy events: the work per request cannot silently grow back);
- nothing the expert side executes names ``candidate_sources`` or ``dataset_index`` (every SQL
  statement of a whole expert session is recorded);
- the per-process caches never cache permission: revoking the expert, closing or reopening the
  study act on the very next click and image, after every cache is warm; a refused click saves
  no rating and no event;
- the next-unrated order wraps around, 'done' at the end; the PNG cache is bounded and serves the
  database's bytes.
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import event

from ainerd_core import study_expert
from ainerd_core.studies import Rating, RatingEvent, StudyStore, get_engine
from ainerd_core.testing import build_tiny
from benchmarks.evaluation_load import click_payload
from browser_support import find_props
from dashboard.app import create_app
from dashboard.config import Config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny.h5", n=20)


@pytest.fixture
def world(tiny, database, tmp_path):
    config = Config(data_dir=tiny.parent, instance_dir=tmp_path / "instance", secret_key="e" * 48,
                    admin_password="expert side tests", database_url=database.url).validated()
    store = StudyStore(config.database_url)
    study, tokens = store.create_study(tiny, 2, n=4, experts=["A", "B"])
    return {"app": create_app(config), "store": store, "study": study, "tokens": tokens}


class Recorder:
    """Every SQL statement and pool checkout on the store's engine while active."""

    def __init__(self, engine):
        self.engine, self.sql, self.checkouts = engine, [], 0

    def _stmt(self, _conn, _cursor, statement, *_a):
        self.sql.append(statement)

    def _checkout(self, *_a):
        self.checkouts += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._stmt)
        event.listen(self.engine.pool, "checkout", self._checkout)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._stmt)
        event.remove(self.engine.pool, "checkout", self._checkout)


def login(world, i=0):
    c = world["app"].test_client()
    assert c.get(f"/evaluate/{world['tokens'][i][1]}").status_code == 303
    deps = json.loads(c.get("/evaluate/_dash-dependencies").data)
    layout = json.loads(c.get("/evaluate/_dash-layout").data)
    return c, deps[0], layout


def click(c, dep, button, pos):
    return c.post("/evaluate/_dash-update-component", json=click_payload(dep, button, pos))


def test_one_connection_per_request_and_no_admin_table(world):
    store = world["store"]
    c, dep, layout = login(world)
    pos = find_props(layout, "eval-pos")["data"]
    total = int(find_props(layout, "eval-progress")["children"].split("/")[1])
    srcs = {find_props(layout, "eval-target")["src"]}
    per_click = []
    with Recorder(get_engine(store.url)) as everything:
        while pos < total:
            with Recorder(get_engine(store.url)) as one:
                r = click(c, dep, "rate-similar", pos)
            assert r.status_code == 200
            per_click.append((one.checkouts, len(one.sql)))
            resp = json.loads(r.data)["response"]
            pos = resp["eval-pos"]["data"]
            if resp["eval-candidate"]["src"]:
                srcs.add(resp["eval-candidate"]["src"])
        for src in sorted(srcs):
            with Recorder(get_engine(store.url)) as one:
                assert c.get(src).status_code == 200
            assert one.checkouts == 1 and len(one.sql) <= 2, (src, one.checkouts, one.sql)
        assert click(c, dep, "rate-back", total).status_code == 200
        assert c.get("/evaluate/_dash-layout").status_code == 200
    # after the first click (which reads the expert's fixed data once) every click is one
    # checkout and 3 statements: the upsert if still allowed, the event, next position with the count
    assert per_click[0][0] == 1 and all(p == (1, 3) for p in per_click[1:]), per_click
    assert everything.sql and not any("candidate_sources" in s or "dataset_index" in s for s in everything.sql)
    assert store.expert_view(world["tokens"][0][0].id)["rated"] == total


def test_revocation_and_closing_are_never_cached(world):
    store, (expert, _) = world["store"], world["tokens"][1]
    c, dep, layout = login(world, 1)
    src, target = find_props(layout, "eval-candidate")["src"], find_props(layout, "eval-target")["src"]
    assert c.get(src).status_code == 200 and c.get(target).status_code == 200  # caches warm: slots, PNGs
    assert click(c, dep, "rate-similar", 0).status_code == 200
    for act, undo, word in ((lambda: store.revoke(str(expert.id)), lambda: store.restore(expert.id), "withdrawn"),
                            (lambda: store.close_study(world["study"].id), lambda: store.reopen(world["study"].id),
                             "closed")):
        act()
        r = click(c, dep, "rate-not-similar", 1)
        payload = json.loads(r.data)["response"]
        assert word in payload["eval-error"]["children"] and payload["rate-similar"]["disabled"] is True
        assert set(payload) == {"rate-similar", "rate-not-similar", "eval-error"}
        assert c.get(src).status_code == 403 and c.get(target).status_code == 403
        assert click(c, dep, "rate-next", 0).status_code == 200  # answered, but only with the reason
        with get_engine(store.url).connect() as conn:
            events = conn.execute(RatingEvent.__table__.select().where(RatingEvent.expert_id == expert.id)).all()
            ratings = conn.execute(Rating.__table__.select().where(Rating.expert_id == expert.id)).all()
        assert len(events) == 1 and len(ratings) == 1  # the refused clicks left nothing
        undo()
        assert c.get(src).status_code == 200 and c.get(target).data.startswith(b"\x89PNG")
    r = click(c, dep, "rate-not-similar", 1)
    assert json.loads(r.data)["response"]["eval-error"]["children"] == ""
    assert store.expert_view(expert.id)["rated"] == 2


def test_next_unrated_wraps_around_and_ends_done(world):
    store, (expert, _) = world["store"], world["tokens"][0]
    total = store.expert_view(expert.id)["total"]
    assert total >= 4
    for p in (0, 2, total - 1):
        store.record_rating(expert.id, p, True)
    assert store.next_position(expert.id, 0) == 1
    assert store.next_position(expert.id, total - 2) == 1  # wraps to the first unrated one
    v = study_expert.click(store, expert.id, total - 2, "next")  # 'next' on the last-but-one image
    assert v["position"] == total - 1 and v["answer"] is True and v["rated"] == 3
    v = study_expert.click(store, expert.id, total - 1, "next")  # past the end: first unrated
    assert v["position"] == 1 and v["answer"] is None
    v = study_expert.click(store, expert.id, 0, "back")
    assert v["position"] == 0 and v["answer"] is True
    for p in range(total):
        v = study_expert.click(store, expert.id, p, "similar")
    assert v["position"] == total and v["image_key"] is None and v["rated"] == total
    assert study_expert.click(store, expert.id, total, "similar") == {"unchanged": True}
    assert study_expert.click(store, expert.id, 10 ** 6, "not-similar") == {"unchanged": True}
    with pytest.raises(study_expert.StudyError):
        study_expert.click(store, expert.id, 0, "drop table")


def test_png_cache_is_bounded_and_serves_the_stored_bytes(world):
    cache = study_expert._PngCache(250)
    for i in range(5):
        cache.put(("u", i), bytes([i]) * 100)
    assert cache.size <= 250 and cache.get(("u", 0)) is None and cache.get(("u", 4)) == bytes([4]) * 100
    cache.put(("u", 9), b"x" * 300)  # larger than the budget: not kept
    assert cache.get(("u", 9)) is None
    store, (expert, _) = world["store"], world["tokens"][0]
    key = store.expert_view(expert.id, 0)["image_key"]
    first = store.image_for_key(expert.id, key)
    assert first.startswith(b"\x89PNG") and study_expert.image(store, expert.id, key) == (first, "")
    assert study_expert.image(store, expert.id + 1, key)[0] is None  # another expert's key: nothing


def test_the_write_itself_refuses_an_expired_link(world):
    store, study = world["store"], world["study"]
    late, _ = store.add_expert(study.id, "Late", expires_days=-1)
    with pytest.raises(study_expert.Refused) as exc:
        store.record_rating(late.id, 0, True)
    assert exc.value.reason == study_expert.EXPIRED
    with get_engine(store.url).connect() as conn:
        assert not conn.execute(Rating.__table__.select().where(Rating.expert_id == late.id)).all()
        assert not conn.execute(RatingEvent.__table__.select().where(RatingEvent.expert_id == late.id)).all()
    soon, _ = store.add_expert(study.id, "Soon", expires_days=1)
    assert store.record_rating(soon.id, 0, False)["version"] == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite has no server connection
def test_idle_server_connections_are_replaced_before_use(world, database, monkeypatch):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    from ainerd_core import study_db

    store, eid = world["store"], world["tokens"][0][0].id
    admin = create_engine(database.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def restart_like():  # the server ends every other connection to this database, as a restart does
        assert store.check_expert(eid)[0] == eid  # a pooled connection exists and was just used
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()"))

    # control: a connection used moments ago is not pinged, so its death fails one request...
    monkeypatch.setattr(study_db, "PING_IDLE_S", 1e9)
    restart_like()
    with pytest.raises(OperationalError):
        store.check_expert(eid)
    assert store.check_expert(eid)[0] == eid  # ...and the pool is replaced for the next one
    # once idle for PING_IDLE_S, it is pinged at checkout and replaced before the request uses it
    monkeypatch.setattr(study_db, "PING_IDLE_S", 0.0)
    restart_like()
    assert store.check_expert(eid)[0] == eid
    c, dep, layout = login(world)
    restart_like()
    assert click(c, dep, "rate-similar", find_props(layout, "eval-pos")["data"]).status_code == 200
    admin.dispose()
