"""The suite's PostgreSQL server: :mod:`ainerd_core.postgres_server` (benchmarks use it too)."""
from ainerd_core.postgres_server import REQUIRE_ENV, PostgresServer, PostgresUnavailable  # noqa: F401
