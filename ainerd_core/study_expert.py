"""The expert side of a blind study, per request: one connection, prebuilt statements, fixed data cached.

:class:`ainerd_core.studies.StudyStore` delegates its expert-facing operations here
(``check_expert``, ``expert_view``, ``next_position``, ``record_rating``, ``image_for_key``) and
the evaluation app (``dashboard/evaluation_app.py``) calls :func:`click` and :func:`image` once
per request. What one request costs (``benchmarks/evaluation_request_cost.py``):

- **one pooled connection** per request (before: up to six checkouts, each with PostgreSQL's
  pre-ping round trip);
- **statements built once** at import (SQLAlchemy then only looks up its compiled form) and run
  with parameters; a rating click is 3 statements in one transaction: the upsert (which writes
  only if the expert may still rate), the event-log insert, and the next unrated position with
  the answered count in one SELECT;
- **what never changes is cached per process**: an expert's study, target key and, per
  position, candidate id and image key (written once at creation; no code path updates or
  deletes them) and the candidate and target PNGs (rendered once at creation and stored in the
  database; an LRU bounded by bytes, see ``PNG_CACHE_BYTES``; PostgreSQL also prepares the
  statements server-side after a few runs, psycopg's default). Whether the expert may rate
  (revoked, expired, study closed) is read from the database on every request, never cached:
  revocation and closing act at once in every worker.
- the pool is SQLAlchemy's default (5 + 10 overflow per process; a request holds one
  connection, a gunicorn worker runs 4 threads); PostgreSQL connections are pre-pinged at
  checkout (one round trip per request) so that a restarted database costs no failed request.

Blinding: everything here reads only ``studies.status`` and ``target_png``, ``experts``,
``assignments``, ``candidates.png`` and ``ratings``; never ``candidate_sources`` nor ``candidates.dataset_index``
(``tests/test_evaluation_security.py``, ``tests/test_blinding.py``).
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

from sqlalchemy import Boolean, DateTime, Integer, and_, bindparam, func, literal, or_, select

from .studies import Assignment, Candidate, Expert, Rating, RatingEvent, Study, StudyError, utcnow

#: Bytes of candidate PNGs kept in memory per process (each gunicorn worker has its own cache).
PNG_CACHE_BYTES = 32 * 2**20
ACTIONS = ("similar", "not-similar", "back", "next", "view")

NO_SESSION = "No evaluation session: open the link you were sent."
INVALID = "This link is not valid."
WITHDRAWN = "This link has been withdrawn by the organiser."
EXPIRED = "This link has expired."
CLOSED = "This evaluation is closed. Thank you for your help."

# ---------------------------------------------------------------- statements, built once
_rated_here = and_(Rating.expert_id == Assignment.expert_id, Rating.candidate_id == Assignment.candidate_id)
Q_TOKEN = select(Expert.id).where(Expert.token_hash == bindparam("token_hash"))
Q_STATE = (select(Expert.revoked_utc, Expert.expires_utc, Study.status)
           .join(Study, Study.id == Expert.study_id).where(Expert.id == bindparam("expert_id")))
Q_EXPERT = select(Expert.study_id, Expert.target_key).where(Expert.id == bindparam("expert_id"))
Q_SLOTS = (select(Assignment.position, Assignment.candidate_id, Assignment.image_key)
           .where(Assignment.expert_id == bindparam("expert_id")).order_by(Assignment.position))
_RATED = select(func.count()).select_from(Rating).where(Rating.expert_id == bindparam("expert_id"))
# the first unrated position after `after`, else the first unrated one before it (wrap around)
_NEXT = (select(Assignment.position).outerjoin(Rating, _rated_here)
         .where(Assignment.expert_id == bindparam("expert_id"), Rating.candidate_id.is_(None))
         .order_by(Assignment.position <= bindparam("after"), Assignment.position).limit(1))
Q_NEXT_AND_RATED = select(_NEXT.scalar_subquery().label("next"), _RATED.scalar_subquery().label("rated"))
Q_ANSWER_AND_RATED = select(
    select(Rating.similar).where(Rating.expert_id == bindparam("expert_id"),
                                 Rating.candidate_id == bindparam("candidate_id")).scalar_subquery().label("answer"),
    _RATED.scalar_subquery().label("rated"))
Q_PNG = select(Candidate.png).where(Candidate.id == bindparam("candidate_id"))
Q_TARGET_PNG = select(Study.target_png).where(Study.id == bindparam("study_id"))
INSERT_EVENT = RatingEvent.__table__.insert()
_UPSERTS: dict[str, object] = {}


class Refused(StudyError):
    """The expert may not rate now (revoked, expired, study closed); ``reason`` is shown to them."""

    def __init__(self, reason: str):
        super().__init__("rating", "this evaluation no longer accepts answers: " + reason)
        self.reason = reason


def _upsert(dialect: str):
    """The rating's one write statement, if the expert may rate now, for the dialect::

        INSERT INTO ratings (...) SELECT :expert_id, ... WHERE EXISTS (expert not revoked, not
        expired at :now, study open) ON CONFLICT (expert, candidate) DO UPDATE ... RETURNING version

    No row back = refused (nothing written). The permission is read by the write itself: on
    SQLite under the write lock, on PostgreSQL in the same statement as the insert."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise StudyError("database", f"ratings need SQLite or PostgreSQL, not {dialect}")
        t = Rating.__table__
        now = bindparam("now", type_=DateTime)
        may_rate = (select(Expert.id).join(Study, Study.id == Expert.study_id)
                    .where(Expert.id == bindparam("expert_id"), Expert.revoked_utc.is_(None), Study.status == "open",
                           or_(Expert.expires_utc.is_(None), Expert.expires_utc >= now)))
        values = select(bindparam("expert_id", type_=Integer), bindparam("candidate_id", type_=Integer),
                        bindparam("study_id", type_=Integer), bindparam("similar", type_=Boolean),
                        literal(1, Integer), now, now).where(may_rate.exists())
        ins = insert(t).from_select(["expert_id", "candidate_id", "study_id", "similar", "version", "first_utc",
                                     "updated_utc"], values)
        stmt = _UPSERTS[dialect] = ins.on_conflict_do_update(
            index_elements=[t.c.expert_id, t.c.candidate_id],
            set_={"similar": ins.excluded.similar, "version": t.c.version + 1,
                  "updated_utc": ins.excluded.updated_utc}).returning(t.c.version)
    return stmt


# ---------------------------------------------------------------- per-process caches
@dataclass(frozen=True)
class Slots:
    """What an expert was given at creation, never changed afterwards."""
    study_id: int
    target_key: str
    candidates: tuple[int, ...]  # candidate id at each position
    image_keys: tuple[str, ...]  # image key at each position
    key_index: dict  # image key -> position

    @property
    def total(self) -> int:
        return len(self.candidates)


_SLOTS: dict[tuple[str, int], Slots] = {}


class _PngCache:
    """PNG bytes by (database URL, "candidate" or "study", id); least recently used out beyond the budget."""

    def __init__(self, budget: int):
        self.budget, self.size = budget, 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key, png: bytes) -> None:
        if len(png) > self.budget:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = png
            self.size += len(png)
            while self.size > self.budget:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)


_PNGS = _PngCache(PNG_CACHE_BYTES)


def slots(store, c, expert_id: int) -> Slots | None:
    """The expert's fixed data (from the cache, else read on connection ``c``); None: no such expert."""
    key = (store.url, expert_id)
    got = _SLOTS.get(key)
    if got is None:
        row = c.execute(Q_EXPERT, {"expert_id": expert_id}).first()
        if row is None:
            return None
        rows = c.execute(Q_SLOTS, {"expert_id": expert_id}).all()
        got = Slots(row.study_id, row.target_key, tuple(r.candidate_id for r in rows),
                    tuple(r.image_key for r in rows), {r.image_key: r.position for r in rows})
        _SLOTS[key] = got
    return got


def refusal(c, expert_id: int) -> str:
    """'' if the expert may rate now, else the reason shown to them (read from the database)."""
    row = c.execute(Q_STATE, {"expert_id": expert_id}).first()
    if row is None:
        return INVALID
    if row.revoked_utc is not None:
        return WITHDRAWN
    if row.expires_utc is not None and row.expires_utc < utcnow():
        return EXPIRED
    if row.status != "open":
        return CLOSED
    return ""


def _as_id(expert_id) -> int | None:
    try:
        return int(expert_id)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- operations
def check(store, expert_id) -> tuple[int | None, str]:
    """(expert id, '') if the expert may rate now, else (None, reason)."""
    eid = _as_id(expert_id)
    if eid is None:
        return None, NO_SESSION
    with store.reader.connect() as c:
        reason = refusal(c, eid)
    return (None, reason) if reason else (eid, "")


def for_token(store, token_hash: str) -> tuple[int | None, str]:
    """(expert id, '') for the hash of a usable token, else (None, reason)."""
    with store.reader.connect() as c:
        eid = c.execute(Q_TOKEN, {"token_hash": token_hash}).scalar()
        reason = INVALID if eid is None else refusal(c, eid)
    return (None, reason) if reason else (eid, "")


def _view(c, s: Slots, expert_id: int, position: int, rated: int | None = None, answer=None) -> dict:
    """The view dict at ``position`` (clamped to 0..total); reads the answer and count unless given."""
    position = max(0, min(int(position), s.total))
    cand = s.candidates[position] if position < s.total else None
    if rated is None:
        row = c.execute(Q_ANSWER_AND_RATED, {"expert_id": expert_id, "candidate_id": cand}).one()
        rated, answer = row.rated, row.answer
    return {"target_key": s.target_key, "position": position, "total": s.total, "rated": int(rated),
            "image_key": s.image_keys[position] if cand is not None else None,
            "answer": None if answer is None else bool(answer)}


def _resume(c, s: Slots, expert_id: int, after: int) -> dict:
    """The view at the first unrated position after ``after`` (wrapping; ``total`` when all are rated)."""
    row = c.execute(Q_NEXT_AND_RATED, {"expert_id": expert_id, "after": after}).one()
    return _view(c, s, expert_id, s.total if row.next is None else row.next, row.rated, None)


def view(store, expert_id: int, position: int | None = None) -> dict:
    """What the expert sees at ``position`` (default: the first unrated one); see :func:`_view`."""
    expert_id = int(expert_id)
    with store.reader.connect() as c:
        s = slots(store, c, expert_id)
        if s is None:
            raise StudyError("expert", f"no expert {expert_id}")
        return _resume(c, s, expert_id, -1) if position is None else _view(c, s, expert_id, position)


def next_position(store, expert_id: int, after: int) -> int | None:
    """The first unrated position after ``after`` (wrapping around), None when all are rated."""
    v = view_after(store, int(expert_id), int(after))
    return None if v["position"] >= v["total"] else v["position"]


def view_after(store, expert_id: int, after: int) -> dict:
    with store.reader.connect() as c:
        s = slots(store, c, expert_id)
        if s is None:
            raise StudyError("expert", f"no expert {expert_id}")
        return _resume(c, s, expert_id, after)


def rate(store, expert_id: int, position: int, similar: bool) -> dict:
    """Upsert the answer at ``position``, log the event, and return the next view; after COMMIT.

    One connection and one transaction of 3 statements: the upsert, which writes only if the
    expert may rate now (:func:`_upsert`; on SQLite it is the first statement, so it takes the
    write lock and sees every committed revocation or closing); the event; the next unrated
    position with the answered count. A refusal writes nothing and raises :class:`Refused` with
    the reason. Returns the view dict plus ``version`` (how many times this answer was written).
    """
    expert_id, position, similar = int(expert_id), int(position), bool(similar)
    with store.engine.connect() as c:
        s = slots(store, c, expert_id)
        if s is None or not 0 <= position < s.total:
            raise StudyError("rating", "no such image")
        c.rollback()  # end the read of the slots (if any) before the write transaction begins
        now = utcnow()
        with store._write_lock():
            version = c.execute(_upsert(c.dialect.name), {
                "expert_id": expert_id, "candidate_id": s.candidates[position], "study_id": s.study_id,
                "similar": similar, "now": now}).scalar()
            if version is None:  # refused: nothing was written; say why
                reason = refusal(c, expert_id) or INVALID
                c.rollback()
                raise Refused(reason)
            c.execute(INSERT_EVENT, {"study_id": s.study_id, "expert_id": expert_id,
                                     "candidate_id": s.candidates[position], "position": position,
                                     "similar": similar, "version": version, "created_utc": now})
            nxt = _resume(c, s, expert_id, position)
            c.commit()
    return dict(nxt, version=int(version))


def click(store, expert_id: int, position, action: str) -> dict:
    """One click of the evaluation page (``action`` in :data:`ACTIONS`) at the ``position`` the
    page holds; returns the view to show next plus ``refused`` ('' or why nothing was saved),
    or ``{"unchanged": True}`` for a rating click on the 'done' view (nothing to answer).

    Positions are clamped to 0..total; 'next' past the last image goes to the first unrated one
    (or the 'done' view)."""
    if action not in ACTIONS:
        raise StudyError("action", f"unknown action {action!r}")
    expert_id = int(expert_id)
    try:
        position = int(position)
    except (TypeError, ValueError):
        position = 0
    if action in ("similar", "not-similar"):
        try:
            return dict(rate(store, expert_id, max(0, position), action == "similar"), refused="")
        except Refused as exc:
            return {"refused": exc.reason}
        except StudyError:  # no such position: past the last image, or an unknown expert
            return {"unchanged": True}
    with store.reader.connect() as c:
        reason = refusal(c, expert_id)
        s = None if reason else slots(store, c, expert_id)
        if s is None:
            return {"refused": reason or INVALID}
        position = max(0, min(position, s.total))
        if action == "back":
            return dict(_view(c, s, expert_id, max(0, position - 1)), refused="")
        if action == "next" and position + 1 >= s.total:
            return dict(_resume(c, s, expert_id, position), refused="")
        return dict(_view(c, s, expert_id, position + (action == "next")), refused="")


def image(store, expert_id, key: str, check: bool = True) -> tuple[bytes | None, str]:
    """(PNG, '') of the expert's target or candidate under ``key``; (None, reason) when
    ``check`` and the expert may not rate now; (None, '') when ``key`` is not one of theirs."""
    eid = _as_id(expert_id)
    if eid is None:
        return None, NO_SESSION
    if not isinstance(key, str) or not 10 <= len(key) <= 64:
        return None, ""
    with store.reader.connect() as c:
        reason = refusal(c, eid) if check else ""
        s = None if reason else slots(store, c, eid)
        if s is None:
            return None, reason
        if key == s.target_key:
            stmt, cache_key, params = Q_TARGET_PNG, (store.url, "study", s.study_id), {"study_id": s.study_id}
        elif key in s.key_index:
            cid = s.candidates[s.key_index[key]]
            stmt, cache_key, params = Q_PNG, (store.url, "candidate", cid), {"candidate_id": cid}
        else:
            return None, ""
        png = _PNGS.get(cache_key)
        if png is None:
            png = c.execute(stmt, params).scalar()
            if png is not None:
                _PNGS.put(cache_key, png)
        return png, ""
