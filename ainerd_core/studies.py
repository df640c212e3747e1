"""Blind expert-evaluation studies (METHOD.md section 5): database, operations and the CLI.

A study freezes everything the experts will see at creation time: the target image and one PNG
per distinct candidate (rendered identically: same size, same colormap, one code path). Which
method found a candidate, and at which rank, lives only in ``candidate_sources``, which no
expert-facing query reads. Each expert gets

- a link ``<base>/evaluate/<token>``; the token (``secrets.token_urlsafe(32)``) is shown once and
  stored only as its SHA-256 hash; it can be revoked and may expire;
- a private order of the candidates (a permutation seeded per expert, stored as
  ``assignments``: expert, position, candidate) and, per position, an opaque random image key
  (the only name under which the candidate's image is served to that expert).

Ratings are upserts keyed (expert, candidate) plus an append-only ``rating_events`` log (every
click, with the rating's version), written in one transaction that is committed before the
click is acknowledged. SQLite runs in WAL mode with ``synchronous=FULL`` and a busy timeout;
PostgreSQL works through its URL (``postgresql+psycopg://...``).

Tables: ``studies``, ``candidates``, ``candidate_sources``, ``experts``, ``assignments``,
``ratings``, ``rating_events``.

Command line (``python -m ainerd_core study ...``)::

    study create DATASET --target INDEX|FILE.npy --n 300 --experts "Alice,Bob" [--methods latent,raw,smoothed]
                 [--expires-days N] [--base-url http://host:8050] [--db URL] [--title T] [--model PATH]
    study list | close ID | revoke TOKEN_OR_EXPERT_ID | add-expert ID NAME | results ID --out DIR

Modules: :mod:`ainerd_core.study_db` (tables, engine, tokens), :mod:`ainerd_core.study_candidates`
(images, targets, candidate search), this one (the store: every operation), :mod:`ainerd_core.study_expert`
(the expert-facing requests) and :mod:`ainerd_core.study_cli` (the command line); their names
stay importable from here.

The database URL defaults to ``$AINERD_DATABASE_URL``, else ``sqlite:///<$AINERD_INSTANCE_DIR or
instance>/ainerd.db`` (the dashboard's default).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import secrets
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .atomic import atomic_write_text
from .errors import InputError
from .study_candidates import (DEFAULT_METHODS, IMAGE_CMAP, MAP_SIZE, METHODS, find_candidates, load_target_file,  # noqa: F401
                               prepare_target, render_png)
from .study_db import (AuditEvent, Assignment, Base, Candidate, CandidateSource, Expert, LoginCounter,  # noqa: F401
                       Rating, RatingEvent, Study, WebSession, _opaque, default_database_url, expert_link,
                       get_engine, hash_token, new_token, private_folder, private_sqlite_file, utcnow)

DEFAULT_N = 300


# ====================================================================== the store
class StudyError(InputError):
    """A study operation that cannot be done (no such study, closed, revoked...): one line."""


def _get(s: Session, table, key, where: str):
    """The ``table`` row (Study or Expert) with id ``key``, else :class:`StudyError` naming ``where``."""
    row = s.get(table, int(key))
    if row is None:
        raise StudyError(where, f"no {table.__tablename__[:-1]} {key}")
    return row


def _fmt(t: _dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="microseconds") + "Z"


_READERS: dict[int, object] = {}  # id(engine) -> its autocommit variant (engines live as long as the process)


class StudyStore:
    """All study operations on one database (per-process engine, so safe in gunicorn workers)."""

    def __init__(self, url: str | None = None):
        self.url = url or default_database_url()

    @property
    def engine(self):
        return get_engine(self.url)

    @property
    def reader(self):
        """The engine for reads that need no transaction. PostgreSQL: autocommit, so a read is one
        round trip instead of BEGIN + query + ROLLBACK (3 of the ~20 round trips of a rating
        request each; under READ COMMITTED every statement has its own snapshot either way).
        SQLite: the engine itself."""
        engine = self.engine
        if engine.dialect.name != "postgresql":
            return engine
        reader = _READERS.get(id(engine))
        if reader is None:
            reader = _READERS[id(engine)] = engine.execution_options(isolation_level="AUTOCOMMIT")
        return reader

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ---------------------------------------------------------------- organiser
    def create_study(self, dataset_path, target, n: int = DEFAULT_N, experts=(), methods=DEFAULT_METHODS,
                     expires_days: float | None = None, title: str | None = None, model_path=None,
                     target_desc: str | None = None, progress=None) -> tuple[Study, list[tuple[Expert, str]]]:
        """Create a study; returns it and ``[(expert, token), ...]`` (tokens are not stored).

        ``progress(percent, text)``, if given, is called as the work advances (0..100)."""
        def report(pct, text):
            if progress is not None:
                progress(int(pct), text)

        from .dataset import open_dataset

        methods = tuple(dict.fromkeys(m.strip().lower() for m in methods if m.strip()))
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise InputError("--methods", f"choose from {', '.join(METHODS)}, got {', '.join(methods) or 'nothing'}")
        names = [e.strip() for e in experts if e and e.strip()]
        if len(set(names)) != len(names):
            raise InputError("--experts", "expert names must be distinct")
        dataset_path = Path(dataset_path)
        report(2, "searching neighbours")
        with open_dataset(dataset_path) as ds:
            found, t_map, t_index = find_candidates(ds, target, methods, int(n), model_path)
            all_idx = sorted({int(i) for idx, _ in found.values() for i in idx})
            report(30, f"reading {len(all_idx)} maps")
            maps = ds.read_maps(all_idx) if all_idx else np.empty((0, MAP_SIZE, MAP_SIZE), np.float32)
            ds_title = str(ds.attrs.get("title", ""))
        if target_desc is None:
            target_desc = f"index {t_index}" if isinstance(target, (int, np.integer)) else "uploaded map"
            if not isinstance(target, (int, np.integer)) and t_index is not None:
                target_desc += f" (identical to dataset index {t_index})"
        rng = np.random.default_rng(secrets.randbits(64))
        pngs = {}
        for j, (i, m) in enumerate(zip(all_idx, maps)):
            pngs[i] = render_png(m)
            if j % 25 == 0:
                report(40 + 45 * j / max(1, len(all_idx)), f"rendering image {j + 1} of {len(all_idx)}")
        report(88, "writing the study")
        now = utcnow()
        n_used = max((len(idx) for idx, _ in found.values()), default=0)
        with self.session() as s, s.begin():
            study = Study(title=title or f"{dataset_path.stem}: {target_desc}", dataset_path=str(dataset_path.resolve()),
                          target_desc=target_desc + (f" [{ds_title}]" if ds_title else ""), target_index=t_index,
                          n_per_method=n_used, methods=",".join(methods), status="open", created_utc=now,
                          target_png=render_png(t_map))
            s.add(study)
            s.flush()
            cand_ids = {}
            for i in rng.permutation(all_idx).tolist() if all_idx else []:  # random insertion order
                c = Candidate(study_id=study.id, dataset_index=int(i), png=pngs[int(i)])
                s.add(c)
                s.flush()
                cand_ids[int(i)] = c.id
            for method, (idx, dist) in found.items():
                for r, (i, d) in enumerate(zip(idx, dist), start=1):
                    s.add(CandidateSource(study_id=study.id, candidate_id=cand_ids[int(i)], method=method, rank=r,
                                          distance=float(d)))
            tokens = [self._add_expert(s, study, name, expires_days) for name in names]
        return study, tokens

    def _add_expert(self, s: Session, study: Study, name: str, expires_days) -> tuple[Expert, str]:
        token = new_token()
        now = utcnow()
        expert = Expert(study_id=study.id, name=name, token_hash=hash_token(token), created_utc=now,
                        expires_utc=None if expires_days is None else now + _dt.timedelta(days=float(expires_days)),
                        order_seed=secrets.randbits(62), target_key=_opaque())
        s.add(expert)
        s.flush()
        cands = s.scalars(select(Candidate.id).where(Candidate.study_id == study.id).order_by(Candidate.id)).all()
        order = np.random.default_rng(expert.order_seed).permutation(len(cands))
        for pos, j in enumerate(order.tolist()):
            s.add(Assignment(expert_id=expert.id, position=pos, candidate_id=cands[j], image_key=_opaque()))
        return expert, token

    def add_expert(self, study_id: int, name: str, expires_days: float | None = None) -> tuple[Expert, str]:
        with self.session() as s, s.begin():
            study = _get(s, Study, study_id, "study")
            if study.status != "open":
                raise StudyError("study", f"study {study_id} is closed")
            name = name.strip()
            if not name:
                raise StudyError("--name", "an expert needs a name")
            if s.scalar(select(Expert.id).where(Expert.study_id == study.id, Expert.name == name)):
                raise StudyError("--name", f"study {study_id} already has an expert called {name!r}")
            return self._add_expert(s, study, name, expires_days)

    def close_study(self, study_id: int) -> Study:
        with self.session() as s, s.begin():
            study = _get(s, Study, study_id, "study")
            if study.status != "closed":
                study.status, study.closed_utc = "closed", utcnow()
            return study

    def revoke(self, token_or_id) -> Expert:
        """Revoke an expert link, given the token itself or the expert id."""
        key = str(token_or_id).strip()
        with self.session() as s, s.begin():
            if key.isdigit():
                expert = s.get(Expert, int(key))
            else:
                expert = s.scalar(select(Expert).where(Expert.token_hash == hash_token(key)))
            if expert is None:
                raise StudyError("revoke", "no expert with that id or token")
            if expert.revoked_utc is None:
                expert.revoked_utc = utcnow()
            return expert

    def restore(self, expert_id: int) -> Expert:
        """Undo a revocation: the expert's link and answers work again (their answers were kept)."""
        with self.session() as s, s.begin():
            expert = _get(s, Expert, expert_id, "restore")
            expert.revoked_utc = None
            return expert

    def reopen(self, study_id: int) -> Study:
        """Reopen a closed study: its links work again (unless revoked or expired)."""
        with self.session() as s, s.begin():
            study = _get(s, Study, study_id, "study")
            study.status, study.closed_utc = "open", None
            return study

    def open_study_datasets(self) -> list[tuple[int, str]]:
        """(study id, dataset path) of every open study: the datasets under blind evaluation."""
        with self.engine.connect() as c:
            return [(int(r.id), r.dataset_path) for r in
                    c.execute(select(Study.id, Study.dataset_path).where(Study.status == "open"))]

    # ---------------------------------------------------------------- audit log
    def audit(self, actor: str, action: str, study_id: int | None = None, expert_id: int | None = None,
              detail: str = "") -> None:
        """Append one organiser action to ``audit_events`` (committed before returning)."""
        with self.session() as s, s.begin():
            s.add(AuditEvent(created_utc=utcnow(), actor=str(actor)[:64], action=str(action)[:32],
                             study_id=study_id, expert_id=expert_id, detail=str(detail)[:2000]))

    def audit_events(self, limit: int = 50) -> list[dict]:
        """The newest ``limit`` audit events, newest first."""
        with self.session() as s:
            rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(int(limit))).all()
            return [{"id": r.id, "utc": _fmt(r.created_utc), "actor": r.actor, "action": r.action,
                     "study_id": r.study_id, "expert_id": r.expert_id, "detail": r.detail} for r in rows]

    # ---------------------------------------------------------------- web sessions
    def create_web_session(self, role: str, fingerprint: str, hours: float) -> str:
        """A new server-side session; returns the random id for the (signed) cookie."""
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        with self.session() as s, s.begin():
            s.add(WebSession(id_hash=hash_token(sid), role=role, fingerprint=fingerprint, created_utc=now,
                             expires_utc=now + _dt.timedelta(hours=float(hours))))
        return sid

    def web_session(self, sid: str) -> dict | None:
        """The live session of ``sid`` (role, fingerprint, created), or None when unknown,
        revoked or expired."""
        if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
            return None
        with self.reader.connect() as c:
            row = c.execute(select(WebSession.role, WebSession.fingerprint, WebSession.created_utc,
                                   WebSession.expires_utc, WebSession.revoked_utc)
                            .where(WebSession.id_hash == hash_token(sid))).first()
        if row is None or row.revoked_utc is not None or row.expires_utc < utcnow():
            return None
        return {"role": row.role, "fingerprint": row.fingerprint, "created_utc": row.created_utc,
                "id": hash_token(sid)[:12]}

    def end_web_session(self, sid: str, reason: str = "logout") -> bool:
        """Revoke one session (logout); True if it was live."""
        if not isinstance(sid, str) or not sid:
            return False
        with self.session() as s, s.begin():
            row = s.get(WebSession, hash_token(sid))
            if row is None or row.revoked_utc is not None:
                return False
            row.revoked_utc, row.revoke_reason = utcnow(), reason[:64]
            return True

    def end_all_web_sessions(self, reason: str = "log out everywhere", role: str | None = None) -> int:
        """Revoke every live session (of ``role``, or all); returns how many were ended."""
        now = utcnow()
        with self.session() as s, s.begin():
            q = select(WebSession).where(WebSession.revoked_utc.is_(None), WebSession.expires_utc >= now)
            if role:
                q = q.where(WebSession.role == role)
            rows = s.scalars(q).all()
            for row in rows:
                row.revoked_utc, row.revoke_reason = now, reason[:64]
            # expired rows are of no use: keep the table small
            s.execute(WebSession.__table__.delete().where(WebSession.expires_utc < now - _dt.timedelta(days=7)))
            return len(rows)

    def live_web_sessions(self) -> dict[str, int]:
        """Number of live sessions per role."""
        now = utcnow()
        with self.engine.connect() as c:
            rows = c.execute(select(WebSession.role, func.count()).where(WebSession.revoked_utc.is_(None),
                                                                         WebSession.expires_utc >= now)
                             .group_by(WebSession.role)).all()
        return {r[0]: int(r[1]) for r in rows}

    # ---------------------------------------------------------------- login attempts
    def count_login_attempt(self, key: str, window_s: float) -> int:
        """Count one attempt of ``key`` atomically and return the count within the window.

        One ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement: the database
        serialises concurrent attempts (SQLite: its write lock; PostgreSQL: the row lock), so
        N concurrent attempts get the counts 1..N, each exactly once (no read-then-write race).
        The count restarts at 1 when the previous attempt is older than ``window_s``."""
        import time as _time

        now = _time.time()
        table = LoginCounter.__table__
        with self._write_lock(), self.engine.connect() as c:
            if c.dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as _insert
            elif c.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as _insert
            else:  # pragma: no cover
                raise StudyError("database", f"login counting needs SQLite or PostgreSQL, not {c.dialect.name}")
            from sqlalchemy import case

            stmt = _insert(table).values(key=key, count=1, last_epoch=now)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={"count": case((table.c.last_epoch < now - float(window_s), 1), else_=table.c.count + 1),
                      "last_epoch": now}).returning(table.c.count)
            count = int(c.execute(stmt).scalar_one())
            c.commit()
        return count

    def uncount_login_attempt(self, key: str) -> None:
        """Take back one attempt of ``key`` (a successful login is no failure)."""
        table = LoginCounter.__table__
        with self._write_lock(), self.engine.connect() as c:
            c.execute(table.update().where(table.c.key == key, table.c.count > 0).values(count=table.c.count - 1))
            c.commit()

    def list_studies(self) -> list[dict]:
        with self.session() as s:
            studies = s.scalars(select(Study).order_by(Study.id)).all()
            return [self._study_summary(s, st) for st in studies]

    def study_summary(self, study_id: int) -> dict | None:
        with self.session() as s:
            st = s.get(Study, int(study_id))
            return None if st is None else self._study_summary(s, st)

    def _study_summary(self, s: Session, st: Study) -> dict:
        n_cand = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.study_id == st.id))
        experts = []
        now = utcnow()
        for e in s.scalars(select(Expert).where(Expert.study_id == st.id).order_by(Expert.id)):
            rated = s.scalar(select(func.count()).select_from(Rating).where(Rating.expert_id == e.id))
            last = s.scalar(select(func.max(RatingEvent.created_utc)).where(RatingEvent.expert_id == e.id))
            state = ("revoked" if e.revoked_utc else "expired" if e.expires_utc and e.expires_utc < now else "active")
            experts.append({"id": e.id, "name": e.name, "rated": rated, "total": n_cand, "state": state,
                            "expires_utc": _fmt(e.expires_utc), "revoked_utc": _fmt(e.revoked_utc),
                            "last_rating_utc": _fmt(last)})
        return {"id": st.id, "title": st.title, "dataset": st.dataset_path, "target": st.target_desc,
                "target_index": st.target_index, "methods": st.methods.split(","), "n_per_method": st.n_per_method,
                "n_candidates": n_cand, "status": st.status, "created_utc": _fmt(st.created_utc),
                "closed_utc": _fmt(st.closed_utc), "experts": experts}

    # ---------------------------------------------------------------- expert side
    # Everything below reads only studies.status, experts, assignments, candidates.png and ratings:
    # never candidate_sources nor candidates.dataset_index.
    # The per-request work (one connection, prebuilt statements, per-process caches) lives in
    # ainerd_core.study_expert; these are its entry points for the CLI, tests and other callers.
    def expert_for_token(self, token: str) -> tuple[int | None, str]:
        """(expert id, '') for a usable token, else (None, reason shown to the visitor)."""
        from . import study_expert

        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None, study_expert.INVALID
        return study_expert.for_token(self, hash_token(token))

    def check_expert(self, expert_id) -> tuple[int | None, str]:
        """(expert id, '') if the expert may rate now, else (None, reason)."""
        from . import study_expert

        return study_expert.check(self, expert_id)

    def expert_view(self, expert_id: int, position: int | None = None) -> dict:
        """What the expert sees: target key, the image key at ``position`` (default: resume
        position = first unrated), the current answer there, rated count and total."""
        from . import study_expert

        return study_expert.view(self, expert_id, position)

    def next_position(self, expert_id: int, after: int) -> int | None:
        from . import study_expert

        return study_expert.next_position(self, expert_id, after)

    def record_rating(self, expert_id: int, position: int, similar: bool) -> dict:
        """Upsert the answer at the expert's ``position`` and log the event; returns after COMMIT
        (the next view and ``version``). Raises StudyError if the position does not exist or
        the expert may no longer rate."""
        from . import study_expert

        return study_expert.rate(self, expert_id, position, similar)

    @contextlib.contextmanager
    def _write_lock(self):
        """SQLite: queue writers of all processes on an flock (woken at once when the holder
        commits, instead of SQLite's sleep-and-retry busy handler, which adds up to 100 ms per
        retry); the kernel releases it if the holder is killed. Other databases: no-op."""
        path = self._lock_path()
        if path is None:
            yield
            return
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lock_path(self) -> str | None:
        if not self.url.startswith("sqlite") or os.name != "posix":
            return None
        db = self.url.split(":///", 1)[-1]
        return None if not db or db == ":memory:" else db + ".writelock"

    def image_for_key(self, expert_id: int, key: str) -> bytes | None:
        """PNG of the expert's target or of one of the expert's candidates, else None."""
        from . import study_expert

        return study_expert.image(self, expert_id, key, check=False)[0]

    # ---------------------------------------------------------------- results
    def ratings_arrays(self, study_id: int) -> dict:
        """Answers arranged for :mod:`ainerd_core.evaluation`.

        Returns experts (list of dicts), methods, ``per_method`` {method: (E, N) 0/1/NaN by rank},
        ``items`` (E, C) answers per distinct candidate, ``candidate_ids`` (C,).
        """
        with self.session() as s:
            st = _get(s, Study, study_id, "study")
            experts = s.scalars(select(Expert).where(Expert.study_id == st.id).order_by(Expert.id)).all()
            cands = s.scalars(select(Candidate.id).where(Candidate.study_id == st.id).order_by(Candidate.id)).all()
            sources = s.execute(select(CandidateSource.method, CandidateSource.rank, CandidateSource.candidate_id)
                                .where(CandidateSource.study_id == st.id)).all()
            ratings = s.execute(select(Rating.expert_id, Rating.candidate_id, Rating.similar)
                                .where(Rating.study_id == st.id)).all()
        e_row = {e.id: i for i, e in enumerate(experts)}
        c_col = {c: j for j, c in enumerate(cands)}
        items = np.full((len(experts), len(cands)), np.nan)
        for r in ratings:
            items[e_row[r.expert_id], c_col[r.candidate_id]] = 1.0 if r.similar else 0.0
        methods = st.methods.split(",")
        per_method = {}
        for m in methods:
            ranks = sorted((rk, cid) for mm, rk, cid in sources if mm == m)
            y = np.full((len(experts), len(ranks)), np.nan)
            for k, (_, cid) in enumerate(ranks):
                y[:, k] = items[:, c_col[cid]]
            per_method[m] = y
        return {"study": st, "experts": [{"id": e.id, "name": e.name} for e in experts], "methods": methods,
                "per_method": per_method, "items": items, "candidate_ids": cands}

    def analyse(self, study_id: int, **kwargs) -> dict:
        from . import evaluation

        arr = self.ratings_arrays(study_id)
        res = evaluation.analyse(arr["per_method"], arr["items"], [e["name"] for e in arr["experts"]], **kwargs)
        res["study"] = self.study_summary(study_id)
        return res

    def export_tables(self, study_id: int, analysis: dict | None = None, **kwargs) -> dict[str, str]:
        """Every export as text: file name -> CSV/JSON content."""
        analysis = analysis or self.analyse(study_id, **kwargs)
        with self.session() as s:
            names = {e.id: e.name for e in s.scalars(select(Expert).where(Expert.study_id == int(study_id)))}
            cands = s.execute(select(Candidate.id, Candidate.dataset_index).where(Candidate.study_id == int(study_id))
                              .order_by(Candidate.id)).all()
            src = s.execute(select(CandidateSource.candidate_id, CandidateSource.method, CandidateSource.rank,
                                   CandidateSource.distance).where(CandidateSource.study_id == int(study_id))
                            .order_by(CandidateSource.method, CandidateSource.rank)).all()
            ratings = s.execute(select(Rating).where(Rating.study_id == int(study_id))
                                .order_by(Rating.expert_id, Rating.candidate_id)).scalars().all()
            events = s.execute(select(RatingEvent).where(RatingEvent.study_id == int(study_id))
                               .order_by(RatingEvent.id)).scalars().all()
        idx = {c.id: c.dataset_index for c in cands}
        out = {}

        def table(header, rows):
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
            return buf.getvalue()

        out["candidates.csv"] = table(["candidate_id", "dataset_index", "method", "rank", "distance"],
                                      [(r.candidate_id, idx[r.candidate_id], r.method, r.rank, f"{r.distance:.6g}")
                                       for r in src])
        out["ratings.csv"] = table(["expert_id", "expert", "candidate_id", "dataset_index", "similar", "version",
                                    "first_utc", "updated_utc"],
                                   [(r.expert_id, names.get(r.expert_id), r.candidate_id, idx[r.candidate_id],
                                     int(r.similar), r.version, _fmt(r.first_utc), _fmt(r.updated_utc)) for r in ratings])
        out["rating_events.csv"] = table(["event_id", "expert_id", "expert", "candidate_id", "dataset_index", "position",
                                          "similar", "version", "created_utc"],
                                         [(e.id, e.expert_id, names.get(e.expert_id), e.candidate_id,
                                           idx[e.candidate_id], e.position, int(e.similar), e.version,
                                           _fmt(e.created_utc)) for e in events])
        rows = []
        for m, res in analysis["methods"].items():
            for r in range(res["n_ranks"]):
                rows.append((m, r + 1, "average", res["average"][r], res["smoothed"][r], res["band_lo"][r],
                             res["band_hi"][r]))
                for name, ex in zip(analysis["experts"], res["experts"]):
                    rows.append((m, r + 1, name, ex["accuracy"][r], ex["smoothed"][r], "", ""))
        out["accuracy.csv"] = table(["method", "rank", "expert", "accuracy", "smoothed", "band_lo", "band_hi"],
                                    [tuple("" if v is None else v for v in row) for row in rows])
        out["analysis.json"] = json.dumps(analysis, indent=1)
        out["log.json"] = json.dumps({"study": analysis["study"], "events": [
            {"event_id": e.id, "expert_id": e.expert_id, "expert": names.get(e.expert_id), "candidate_id": e.candidate_id,
             "dataset_index": idx[e.candidate_id], "position": e.position, "similar": bool(e.similar),
             "version": e.version, "created_utc": _fmt(e.created_utc)} for e in events]}, indent=1)
        return out

    def export(self, study_id: int, out_dir, **kwargs) -> list[Path]:
        out_dir = Path(out_dir)
        tables = self.export_tables(study_id, **kwargs)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in tables.items():
            written.append(atomic_write_text(out_dir / name, content))
        return written
