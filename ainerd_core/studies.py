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

    study create DATASET --target INDEX|FILE.npy --n 300 --experts "Alice,Bob" [--methods latent,raw]
                 [--expires-days N] [--base-url http://host:8050] [--db URL] [--title T] [--model PATH]
    study list | close ID | revoke TOKEN_OR_EXPERT_ID | add-expert ID NAME | results ID --out DIR

The database URL defaults to ``$AINERD_DATABASE_URL``, else ``sqlite:///<$AINERD_INSTANCE_DIR or
instance>/ainerd.db`` (the dashboard's default).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import hashlib
import io
import json
import os
import secrets
import threading
from pathlib import Path

import numpy as np
from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint, create_engine, event, func, select)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, deferred, mapped_column

from .atomic import atomic_write_text
from .errors import InputError
from .results import ModelProvenance, checkpoint_sha256

METHODS = ("latent", "raw")
MAP_SIZE = 256
IMAGE_CMAP = "viridis"
DEFAULT_N = 300


# ====================================================================== models
class Base(DeclarativeBase):
    pass


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    dataset_path: Mapped[str] = mapped_column(Text)
    target_desc: Mapped[str] = mapped_column(Text)
    target_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_per_method: Mapped[int] = mapped_column(Integer)
    methods: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_utc: Mapped[_dt.datetime] = mapped_column(DateTime)
    closed_utc: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    target_png: Mapped[bytes] = deferred(mapped_column(LargeBinary))


class Candidate(Base):
    """One distinct image shown to experts (rows inserted in random order: ids carry no rank)."""
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("study_id", "dataset_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    dataset_index: Mapped[int] = mapped_column(Integer)
    png: Mapped[bytes] = deferred(mapped_column(LargeBinary))


class CandidateSource(Base):
    """Which method found a candidate at which rank (admin side only)."""
    __tablename__ = "candidate_sources"
    __table_args__ = (UniqueConstraint("study_id", "method", "rank"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)
    distance: Mapped[float] = mapped_column(Float)


class Expert(Base):
    __tablename__ = "experts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_utc: Mapped[_dt.datetime] = mapped_column(DateTime)
    expires_utc: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_utc: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    order_seed: Mapped[int] = mapped_column(BigInteger)
    target_key: Mapped[str] = mapped_column(String(64), unique=True, index=True)


class Assignment(Base):
    """Expert ``expert_id`` sees ``candidate_id`` at ``position`` (0-based) under ``image_key``."""
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("expert_id", "position"), UniqueConstraint("expert_id", "candidate_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("experts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    image_key: Mapped[str] = mapped_column(String(64), unique=True, index=True)


class Rating(Base):
    """The current answer of an expert to a candidate (upserted; ``version`` counts writes)."""
    __tablename__ = "ratings"
    expert_id: Mapped[int] = mapped_column(ForeignKey("experts.id"), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    similar: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer)
    first_utc: Mapped[_dt.datetime] = mapped_column(DateTime)
    updated_utc: Mapped[_dt.datetime] = mapped_column(DateTime)


class RatingEvent(Base):
    """Append-only log of every rating click (who, what, when, every change)."""
    __tablename__ = "rating_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("experts.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    position: Mapped[int] = mapped_column(Integer)
    similar: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer)
    created_utc: Mapped[_dt.datetime] = mapped_column(DateTime)


class WebSession(Base):
    """A login of the explorer/admin (server-side session; the cookie holds only the random id).

    ``id_hash`` is the SHA-256 of the id in the signed cookie; ``fingerprint`` ties the session to
    the role's password at login (a new password ends it); ``revoked_utc`` is set by logout and
    "log out everywhere"."""
    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_utc: Mapped[_dt.datetime] = mapped_column(DateTime)
    expires_utc: Mapped[_dt.datetime] = mapped_column(DateTime, index=True)
    revoked_utc: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LoginCounter(Base):
    """Login attempts per client address (hashed) within a window; updated by one atomic upsert."""
    __tablename__ = "login_counters"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_epoch: Mapped[float] = mapped_column(Float)


class AuditEvent(Base):
    """Append-only log of organiser actions (create, revoke, restore, close, reopen, sessions)."""
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_utc: Mapped[_dt.datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


# ====================================================================== engine
def default_database_url(env=None) -> str:
    env = os.environ if env is None else env
    url = env.get("AINERD_DATABASE_URL")
    if url:
        return url
    instance = Path(env.get("AINERD_INSTANCE_DIR", "instance"))
    return f"sqlite:///{(instance / 'ainerd.db').resolve()}"


_ENGINES: dict[tuple[str, int], object] = {}
_ENGINE_LOCK = threading.Lock()


def get_engine(url: str | None = None):
    """One engine per (URL, process): safe after gunicorn forks. Creates the tables on first use."""
    url = url or default_database_url()
    key = (url, os.getpid())
    with _ENGINE_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        kwargs = {}
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                private_sqlite_file(path)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        for attempt in range(5):
            try:
                Base.metadata.create_all(engine)
                break
            except OperationalError:  # another process created the tables at the same moment
                if attempt == 4:
                    raise
                import time

                time.sleep(0.2 * (attempt + 1))
        _ENGINES[key] = engine
        return engine


def private_sqlite_file(path) -> None:
    """Create the SQLite file mode 0600 (its folder 0700 if we create it) or tighten both.

    The database holds ``candidate_sources`` (which method found which image) and every
    rating: no other local user may read it, however the app or the CLI was started (a
    umask of 022 would otherwise give 0755 / 0644). SQLite gives its -wal and -shm files the
    database file's mode; they are tightened too when they exist. Files of another user are
    left alone (we could not change them)."""
    import stat

    path = Path(path)
    if not path.parent.exists():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    try:
        # only ever create: opening and closing an existing database file would drop the POSIX
        # locks SQLite holds on it in this process (a documented way to corrupt it)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(p, 0o600)


def private_folder(path) -> None:
    """Create ``path`` mode 0700 or tighten it to 0700 (only a folder this user owns)."""
    import stat

    path = Path(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """``secrets.token_urlsafe(32)`` (256 bits), redrawn if it starts with '_' or '-': no link can
    look like one of Dash's internal routes under /evaluate/ (``_dash-...``, ``_reload-hash``), and
    ``study revoke TOKEN`` never reads a token as an option."""
    while True:
        token = secrets.token_urlsafe(32)
        if token[0] not in "_-":
            return token


def _opaque() -> str:
    return secrets.token_urlsafe(24)


# ====================================================================== images and targets
def render_png(c2, cmap: str = IMAGE_CMAP) -> bytes:
    """Every image experts see goes through here: 256 x 256, viridis, [0, 1], origin lower-left."""
    from .imaging import c2_to_png

    return c2_to_png(c2, cmap=cmap, vmin=0.0, vmax=1.0)


def prepare_target(arr, where="target") -> np.ndarray:
    """An uploaded map as (256, 256) float32 in [0, 1] (area-averaged, min-max normalised)."""
    from .readers.resample import prepare_target as _prepare

    return _prepare(arr, where, size=MAP_SIZE)


def load_target_file(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array: {exc}") from None
    return prepare_target(arr, path)


def _latent_matrix(ds):
    lat = ds.read_result("latent")
    if lat is None:
        lat = ds.latents
    return lat


def find_candidates(ds, target, methods, n: int, model_path=None) -> tuple[dict, np.ndarray, int | None]:
    """Nearest neighbours of the target for each method.

    Returns ({method: (index (n,), distance (n,))}, target map (256, 256), target index or None).
    An uploaded target identical to a dataset map (pixel distance < 1e-3 per pixel) is treated as
    that map (excluded from its own neighbours and placed in latent space by its latent).
    """
    if not ds.has_maps:
        raise InputError(ds.path, "this dataset holds latents only: experts need C2 maps to look at")
    from . import similarity as S

    if isinstance(target, (int, np.integer)):
        t_index = int(target)
        if not 0 <= t_index < ds.n_maps:
            raise InputError("--target", f"index {t_index} outside 0..{ds.n_maps - 1}")
        t_map = ds.read_map(t_index)
    else:
        t_map = prepare_target(target)
        t_index = None
    n_avail = ds.n_maps - 1 if t_index is not None else ds.n_maps
    if n < 1:
        raise InputError("--n", f"must be >= 1, got {n}")
    n = min(n, n_avail)
    out = {}
    raw = None
    if "raw" in methods or t_index is None:
        idx, dist = S.nearest_neighbours(ds, t_index if t_index is not None else t_map, "raw", n + 1)
        idx, dist = np.asarray(idx), np.asarray(dist, np.float64)
        if t_index is None and dist.size and dist[0] < 1e-3 * MAP_SIZE:
            t_index = int(idx[0])  # the uploaded map is this dataset map
            idx, dist = idx[1:], dist[1:]
            n = min(n, ds.n_maps - 1)
        raw = (idx[:n], dist[:n])
        if "raw" in methods:
            out["raw"] = raw
    if "latent" in methods:
        lat = _latent_matrix(ds)
        if t_index is not None:
            if lat is None:
                raise InputError(ds.path, "no latents: run `python -m ainerd_core precompute` first")
            idx, dist = S.nearest_neighbours({"latent": lat}, t_index, "latent", n)
        else:
            # the checkpoint that made the latents (ainerd_core.results: the one lookup)
            mp = model_path or ModelProvenance.from_attrs(ds.result_attrs).resolve(ds.path, demo_fallback=False)[0]
            if mp is None or not Path(mp).exists():
                raise InputError("--target", "an uploaded map that is not in the dataset needs --model PATH "
                                             "to be placed in latent space (or use --methods raw)")
            sha = ModelProvenance.from_attrs(ds.result_attrs).sha256
            if model_path and sha and checkpoint_sha256(mp) != sha:  # issue 12: only the model of the latents
                raise InputError("--model", f"{Path(mp).name} is not the model that made this dataset's latents "
                                            f"(SHA-256 differs from the recorded {sha[:12]}); they would not be comparable")
            if lat is None:
                raise InputError(ds.path, "no latents: run `python -m ainerd_core precompute` first")
            from .model import load_model

            idx, dist = S.nearest_neighbours({"latent": lat}, t_map, "latent", n, model=load_model(mp))
        out["latent"] = (np.asarray(idx)[:n], np.asarray(dist, np.float64)[:n])
    return out, t_map, t_index


# ====================================================================== the store
class StudyError(InputError):
    """A study operation that cannot be done (no such study, closed, revoked...): one line."""


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
    def create_study(self, dataset_path, target, n: int = DEFAULT_N, experts=(), methods=METHODS,
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
            study = s.get(Study, int(study_id))
            if study is None:
                raise StudyError("study", f"no study {study_id}")
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
            study = s.get(Study, int(study_id))
            if study is None:
                raise StudyError("study", f"no study {study_id}")
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
            expert = s.get(Expert, int(expert_id))
            if expert is None:
                raise StudyError("restore", f"no expert {expert_id}")
            expert.revoked_utc = None
            return expert

    def reopen(self, study_id: int) -> Study:
        """Reopen a closed study: its links work again (unless revoked or expired)."""
        with self.session() as s, s.begin():
            study = s.get(Study, int(study_id))
            if study is None:
                raise StudyError("study", f"no study {study_id}")
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
            st = s.get(Study, int(study_id))
            if st is None:
                raise StudyError("study", f"no study {study_id}")
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


# ====================================================================== CLI
def expert_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/evaluate/{token}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (default $AINERD_DATABASE_URL or sqlite:///instance/ainerd.db)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="create a study and print one expert link per line")
    p.add_argument("dataset", help="dataset file (.h5) with C2 maps and /results/latent")
    p.add_argument("--target", required=True, help="map index in the dataset, or a .npy file (resampled to 256x256)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="neighbours per method (default 300)")
    p.add_argument("--experts", required=True, help='comma-separated names, e.g. "Alice,Bob"')
    p.add_argument("--methods", default="latent,raw", help="latent,raw (default both)")
    p.add_argument("--expires-days", type=float, default=None, help="links expire after N days")
    p.add_argument("--base-url", default="http://127.0.0.1:8050", help="address experts open")
    p.add_argument("--title", default=None)
    p.add_argument("--model", default=None, help="checkpoint to encode an uploaded target (latent method)")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    sub.add_parser("list", help="studies with progress per expert").add_argument("--db", dest="db_sub", default=None,
                                                                               help=argparse.SUPPRESS)
    p = sub.add_parser("close", help="close a study (links stop working)")
    p.add_argument("study_id", type=int)
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("revoke", help="revoke one expert link (by token or expert id)")
    p.add_argument("token_or_expert_id")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("add-expert", help="add an expert to an open study; prints the link")
    p.add_argument("study_id", type=int)
    p.add_argument("name")
    p.add_argument("--expires-days", type=float, default=None)
    p.add_argument("--base-url", default="http://127.0.0.1:8050")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("results", help="write accuracy, statistics and the full rating log (CSV/JSON)")
    p.add_argument("study_id", type=int)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=int, default=21, help="smoothing window in ranks (odd, default 21)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--permutations", type=int, default=10000)
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)


def _target_arg(value: str):
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    if not v.lower().endswith(".npy"):
        raise InputError("--target", f"expected a map index or a .npy file, got {value!r}")
    return load_target_file(v)


def run(args) -> int:
    store = StudyStore(getattr(args, "db_sub", None) or args.db)
    if args.action == "create":
        target = _target_arg(args.target)
        desc = None if isinstance(target, int) else f"file {Path(args.target).name}"
        study, tokens = store.create_study(args.dataset, target, n=args.n, experts=args.experts.split(","),
                                           methods=args.methods.split(","), expires_days=args.expires_days,
                                           title=args.title, model_path=args.model, target_desc=desc)
        if not tokens:
            raise InputError("--experts", "give at least one expert name")
        import sys

        print(f"study {study.id}: {study.title} ({study.n_per_method} per method, {study.methods})", file=sys.stderr)
        for expert, token in tokens:
            print(expert_link(args.base_url, token))
        return 0
    if args.action == "list":
        for st in store.list_studies():
            print(f"{st['id']}\t{st['status']}\t{st['n_candidates']} images\t{st['title']}")
            for e in st["experts"]:
                print(f"\texpert {e['id']}\t{e['name']}\t{e['rated']} / {e['total']}\t{e['state']}")
        return 0
    if args.action == "close":
        st = store.close_study(args.study_id)
        print(f"study {st.id} closed")
        return 0
    if args.action == "revoke":
        e = store.revoke(args.token_or_expert_id)
        print(f"expert {e.id} ({e.name}) revoked")
        return 0
    if args.action == "add-expert":
        expert, token = store.add_expert(args.study_id, args.name, args.expires_days)
        print(expert_link(args.base_url, token))
        return 0
    if args.action == "results":
        if store.study_summary(args.study_id) is None:
            raise InputError("study", f"no study {args.study_id}")
        if args.window < 1 or args.window % 2 == 0:
            raise InputError("--window", f"must be an odd positive number, got {args.window}")
        for p in store.export(args.study_id, args.out, window=args.window, n_boot=args.bootstrap,
                              n_perm=args.permutations):
            print(p)
        return 0
    raise InputError(None, f"unknown action {args.action}")
