"""The evaluation studies' database: tables (SQLAlchemy ORM), the per-process engine, private
file modes, and expert tokens. The operations on it are :class:`ainerd_core.studies.StudyStore`.

Tables: ``studies``, ``candidates``, ``candidate_sources``, ``experts``, ``assignments``,
``ratings``, ``rating_events``, ``web_sessions``, ``login_counters``, ``audit_events``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
import threading
from pathlib import Path

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint, create_engine, event)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


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
        engine = create_engine(url, **kwargs)
        if engine.dialect.name != "sqlite":
            _ping_when_idle(engine)
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


#: A pooled server connection unused for this long is pinged before use (seconds).
PING_IDLE_S = 10.0


def _ping_when_idle(engine) -> None:
    """Ping a pooled connection at checkout only when it sat unused for ``PING_IDLE_S``.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout, i.e. on every request;
    a connection used a moment ago is almost surely alive. One that died while idle (database
    restarted overnight, a firewall dropped it) is replaced before the request sees it; one
    that died within the last seconds fails that request, and SQLAlchemy then replaces the
    whole pool."""
    import time

    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine.pool, "checkin")
    def _used(_dbapi_conn, record):
        if record is not None:
            record.info["ainerd_last_used"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_conn, record, _proxy):
        last = record.info.get("ainerd_last_used")
        if last is None or time.monotonic() - last < PING_IDLE_S:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: let the pool connect anew
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


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


def expert_link(base_url: str, token: str) -> str:
    """The link an expert opens (the token is its only key)."""
    return f"{base_url.rstrip('/')}/evaluate/{token}"


def _opaque() -> str:
    return secrets.token_urlsafe(24)
