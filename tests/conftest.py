"""Shared fixtures. Paths to the published data beside the checkout: ../shared/data/ainerd_e031.

Imported here so every module has them: ``explorer_data`` (tests/dashboard_fixtures.py),
``dynamics_data`` (tests/dynamics_fixtures.py) and the browser tests' ``server`` and ``driver``
(tests/browser_support.py, which says how a module chooses their data and window size)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from browser_support import browser_data, driver, explorer_server, server  # noqa: F401
from dashboard_fixtures import explorer_data  # noqa: F401
from dynamics_fixtures import dynamics_data  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
E031 = REPO.parent / "shared" / "data" / "ainerd_e031"


@pytest.fixture
def e031_dir() -> Path:
    if not E031.exists():
        pytest.skip("../shared/data/ainerd_e031 is not beside this checkout")
    return E031


def small_meta(n: int, n_sectors: int = 6):
    """Metadata of n maps: sector-major, times 0, 60, 120 ... s."""
    n_times = n // n_sectors
    sector = np.repeat(np.arange(1, n_sectors + 1), n_times)
    time = np.tile(np.arange(n_times) * 60.0, n_sectors)
    return dict(time=time, sector=sector, q=np.full(n, 0.01), source=[f"sim:{i}" for i in range(n)])


def simulated(tmp_path_factory, name: str, **config) -> Path:
    """A simulated experiment written to a fresh temp folder; ``config``: SimConfig fields (its
    defaults are the demo's, as ``make demo`` builds it)."""
    from ainerd_core.simulate import SimConfig, simulate

    path = tmp_path_factory.mktemp("sim") / f"{name}.h5"
    simulate(path, SimConfig(**config))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- databases: a test that takes `database` (or `module_database`) runs on SQLite and on a real
# PostgreSQL server the suite starts itself (tests/postgres_support.py; required under
# AINERD_REQUIRE_POSTGRES=1, which .ci/run sets)

class TestDatabase:
    """An empty database for one test (or module): ``kind`` 'sqlite' or 'postgresql', its
    SQLAlchemy ``url``, and ``stored_bytes()``: every byte the database keeps on disk."""

    __test__ = False  # not a test class

    def __init__(self, kind: str, url: str, stored_bytes):
        self.kind, self.url, self._stored = kind, url, stored_bytes

    def stored_bytes(self) -> bytes:
        return self._stored()


@pytest.fixture(scope="session")
def postgres_server():
    from postgres_support import REQUIRE_ENV, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{exc} ({REQUIRE_ENV}=1)")
        pytest.skip(str(exc))
    yield server
    server.stop()


def _database(request, folder: Path) -> TestDatabase:
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres_server")
        return TestDatabase("postgresql", pg.new_database(), pg.stored_bytes)
    path = folder / "studies.db"
    return TestDatabase("sqlite", f"sqlite:///{path}",
                        lambda: b"".join(p.read_bytes() for p in [path, *folder.glob("studies.db-*")] if p.exists()))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> TestDatabase:
    return _database(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database(request, tmp_path_factory) -> TestDatabase:
    return _database(request, tmp_path_factory.mktemp("db"))
