"""Cost of one blind-evaluation request, in process: CPU ms, database statements and pool checkouts.

    python -m benchmarks.evaluation_request_cost [--postgres | --db URL] [--n 40] [--profile 25]

Builds a small dataset and a study, creates the app with :func:`dashboard.app.create_app` (the
same Flask server, gates and Dash callbacks as under gunicorn) and drives it with Flask's test
client from one thread, so the figures are the server's own work without HTTP or concurrency:

- ``rating``: a ``POST /evaluate/_dash-update-component`` answering the image on screen (the
  click that stores a rating and returns the next view);
- ``image``: ``GET /evaluate/img/<key>`` of the next candidate;
- ``baseline``: ``GET /healthz`` through the same before/after-request hooks (the plain request
  every other figure is divided by, measured in the same run).

For each: CPU ms per request (``time.process_time``, median of the requests), SQL statements and
connection-pool checkouts per request (SQLAlchemy events on the study store's engine).
``--profile N`` also prints the N functions with the most cumulative time over the rating
requests (cProfile). ``--postgres`` starts the suite's throw-away PostgreSQL server (durable).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

from benchmarks.common import write_json


def _click(dep: dict, button: str, pos: int) -> dict:
    from benchmarks.evaluation_load import click_payload

    return click_payload(dep, button, pos)


class Counter:
    """SQL statements and pool checkouts on one engine (both of its autocommit/transactional faces)."""

    def __init__(self, engine):
        self.statements = self.checkouts = 0
        event.listen(engine, "before_cursor_execute", self._stmt)
        event.listen(engine.pool, "checkout", self._checkout)

    def _stmt(self, *_a, **_k):
        self.statements += 1

    def _checkout(self, *_a, **_k):
        self.checkouts += 1


def measure(db_url: str, n: int, profile: int, sort: str = "cumulative") -> dict:
    from ainerd_core.studies import StudyStore, get_engine
    from ainerd_core.testing import build_tiny
    from dashboard.app import create_app
    from dashboard.config import Config
    from dashboard.testing import find_props

    tmp = Path(tempfile.mkdtemp(prefix="ainerd-cost-"))
    data = tmp / "data"
    data.mkdir()
    tiny = build_tiny(data / "tiny.h5", n=max(2 * n + 2, 30))
    config = Config(data_dir=data, instance_dir=tmp / "instance", secret_key="c" * 48, admin_password="cost-admin",
                    database_url=db_url).validated()
    app = create_app(config)
    store = StudyStore(config.database_url)
    _, tokens = store.create_study(tiny, 0, n=n, experts=["timed", "profiled"])
    counter = Counter(get_engine(config.database_url))
    figures = {"baseline": [], "rating": [], "image": []}
    counts = {"rating": [0, 0], "image": [0, 0], "baseline": [0, 0]}
    prof = cProfile.Profile() if profile else None

    def timed(kind, fn):
        s0, c0 = counter.statements, counter.checkouts
        t0 = time.process_time()
        r = fn()
        figures[kind].append(time.process_time() - t0)
        counts[kind][0] += counter.statements - s0
        counts[kind][1] += counter.checkouts - c0
        assert r.status_code == 200, (kind, r.status_code, r.data[:200])
        return r

    def profiled(_kind, fn):
        prof.enable()
        r = fn()
        prof.disable()
        return r

    # the first expert is timed; the second, with the profiler on (its overhead distorts timings)
    for token, run in zip(tokens, (timed, profiled if prof else None)):
        if run is None:
            break
        c = app.test_client()
        assert c.get(f"/evaluate/{token[1]}").status_code == 303
        dep = json.loads(c.get("/evaluate/_dash-dependencies").data)[0]
        layout = json.loads(c.get("/evaluate/_dash-layout").data)
        pos = find_props(layout, "eval-pos")["data"]
        total = int(find_props(layout, "eval-progress")["children"].split("/")[1])
        k = 0
        while pos < total:
            run("baseline", lambda: c.get("/healthz"))
            button = "rate-similar" if k % 2 else "rate-not-similar"
            r = run("rating", lambda: c.post("/evaluate/_dash-update-component", json=_click(dep, button, pos)))
            resp = json.loads(r.data)["response"]
            pos, src = resp["eval-pos"]["data"], resp["eval-candidate"]["src"]
            if src:
                run("image", lambda: c.get(src))
            k += 1
    out = {"database": db_url.split(":", 1)[0], "images": total}
    for kind, vals in figures.items():
        vals = vals[1:] if len(vals) > 2 else vals  # the first of each warms caches
        out[kind] = {"cpu_ms_median": round(statistics.median(vals) * 1000, 2),
                     "cpu_ms_mean": round(statistics.fmean(vals) * 1000, 2),
                     "statements": round(counts[kind][0] / len(figures[kind]), 2),
                     "checkouts": round(counts[kind][1] / len(figures[kind]), 2)}
    base = out["baseline"]["cpu_ms_median"]
    for kind in ("rating", "image"):
        out[kind]["over_baseline"] = round(out[kind]["cpu_ms_median"] / base, 1) if base else None
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(sort).print_stats(profile)
        out["profile"] = buf.getvalue()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="neighbours per method (images <= 2n)")
    p.add_argument("--db", help="database URL (default: SQLite in a temporary folder)")
    p.add_argument("--postgres", action="store_true", help="start a throw-away PostgreSQL server and use it")
    p.add_argument("--profile", type=int, default=0, help="print the N functions with most cumulative time")
    p.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime"), help="profile order")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.postgres:
        from ainerd_core.postgres_server import PostgresServer

        with PostgresServer(durable=True) as pg:
            return _report(measure(pg.new_database("cost"), args.n, args.profile, args.sort), args.json)
    db = args.db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='ainerd-cost-db-')) / 'ainerd.db'}"
    return _report(measure(db, args.n, args.profile, args.sort), args.json)


def _report(out: dict, json_path) -> int:
    prof = out.pop("profile", None)
    print(json.dumps(out, indent=1))
    for kind in ("rating", "image"):
        f = out[kind]
        print(f"{kind}: {f['cpu_ms_median']} ms CPU (x{f['over_baseline']} of GET /healthz "
              f"{out['baseline']['cpu_ms_median']} ms), {f['statements']} SQL statements, "
              f"{f['checkouts']} pool checkouts per request", file=sys.stderr)
    write_json(json_path, out)
    if prof:
        print(prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
