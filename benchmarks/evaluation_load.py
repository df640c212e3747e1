"""Load test of the blind evaluation: N experts rating at once against a real gunicorn server.

    python -m benchmarks.evaluation_load [--experts 30] [--workers 3] [--n 15] [--postgres] [--json out.json]

Builds a small dataset, creates one study with N experts (same database as the server: SQLite,
``--db URL``, or ``--postgres``: a throw-away PostgreSQL server with its default, durable
settings, started from Debian's binaries by ``ainerd_core/postgres_server.py``), starts gunicorn with
``gunicorn.conf.py`` and W workers (3 = the image's WEB_CONCURRENCY), and runs one thread per expert, each
with its own HTTP session cookie: open the link, read the layout and the callback definitions,
then rate every image through ``POST /evaluate/_dash-update-component`` exactly like the browser
(and fetch the next image, like the browser does). Every 7th click is sent twice (a retry).
By default each expert looks at an image for 0.5-1.5 s (``--think-ms 1000``) before clicking;
``--think-ms 0`` is a burst with no pause at all (every expert clicking as fast as the server
answers), which measures the ceiling: each rating is one fsync'ed SQLite commit, serialised.

Checks afterwards, in the database: every expert has exactly one rating per image (no lost or
duplicated rating), every acknowledged click is in the event log (and nothing else is), and each
stored answer is the last one acknowledged for that image. Prints p50/p95/p99/max latency of the
rating POSTs and of the image GETs. Target: p95 < 200 ms.

Baselines, measured in the same run on the same server before the others start: ``GET /healthz``
(``healthz_ms``) and one extra expert rating alone, without pause (``alone_ms``);
``p50_over_alone_p50`` / ``p95_over_alone_p50`` = the load's p50 / p95 over that p50. The load
average (``os.getloadavg``) before and at the end of the run is recorded: on a shared machine
the figures mean little without it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]

from ainerd_core.studies import Assignment, Rating, RatingEvent, StudyStore
from dashboard.testing import find_props
from benchmarks.common import write_json


def build_dataset(path: Path, n: int = 60) -> Path:
    from ainerd_core.testing import build_tiny

    return build_tiny(path, n=n)


def click_payload(dep: dict, button: str, pos: int) -> dict:
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in dep["output"].strip(".").split("...")]
    inputs = [{"id": i["id"], "property": i["property"], "value": 1 if i["id"] == button else 0} for i in dep["inputs"]]
    state = [{"id": s["id"], "property": s["property"], "value": pos} for s in dep["state"]]
    return {"output": dep["output"], "outputs": outputs, "inputs": inputs, "state": state,
            "changedPropIds": [f"{button}.n_clicks"]}


def expert_worker(base: str, token: str, seed: int, out: dict, barrier: threading.Barrier, think_s: float = 0.0):
    rng = np.random.default_rng(seed)
    s = requests.Session()
    lat, img_lat, acked, errors = [], [], [], []
    try:
        r = s.get(f"{base}/evaluate/{token}", allow_redirects=False, timeout=30)
        assert r.status_code == 303, r.status_code
        s.get(f"{base}/evaluate/", timeout=30).raise_for_status()
        dep = s.get(f"{base}/evaluate/_dash-dependencies", timeout=30).json()[0]
        layout = s.get(f"{base}/evaluate/_dash-layout", timeout=30).json()
        pos = find_props(layout, "eval-pos")["data"]
        total = int(find_props(layout, "eval-progress")["children"].split("/")[1])
        barrier.wait(timeout=300)
        k = 0
        if think_s:
            time.sleep(rng.uniform(0, think_s))  # experts do not start in lockstep
        while pos < total:
            if think_s:
                time.sleep(rng.uniform(0.5, 1.5) * think_s)  # looking at the image
            similar = bool(rng.random() < 0.5)
            button = "rate-similar" if similar else "rate-not-similar"
            sends = 2 if k % 7 == 3 else 1  # a retry of the same click
            for _ in range(sends):
                t0 = time.perf_counter()
                r = s.post(f"{base}/evaluate/_dash-update-component", json=click_payload(dep, button, pos), timeout=60)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors.append(r.status_code)
                    continue
                lat.append(dt)
                acked.append((pos, similar))
                resp = r.json()["response"]
            k += 1
            pos = resp["eval-pos"]["data"]
            src = resp["eval-candidate"]["src"]
            if src:
                t0 = time.perf_counter()
                ri = s.get(base + src, timeout=30)
                img_lat.append(time.perf_counter() - t0)
                if ri.status_code != 200:
                    errors.append(ri.status_code)
    except Exception as exc:  # noqa: BLE001 - reported
        errors.append(repr(exc))
        barrier.abort()
    out.update(lat=lat, img=img_lat, acked=acked, errors=errors)


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=30)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--n", type=int, default=15, help="neighbours per method (images per expert <= 2n)")
    p.add_argument("--think-ms", type=float, default=1000.0,
                   help="mean time an expert looks at an image before clicking (uniform 0.5-1.5 x); 0 = burst")
    p.add_argument("--db", help="database URL for the study and the server (default: SQLite in a temporary "
                               "instance folder); e.g. postgresql+psycopg://user@host/db")
    p.add_argument("--postgres", action="store_true",
                   help="start a throw-away PostgreSQL server (durable defaults) and use it")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.postgres:
        # the suite's own throw-away server (run from the checkout root: python -m benchmarks.evaluation_load)
        from ainerd_core.postgres_server import PostgresServer

        with PostgresServer(durable=True) as pg:
            rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--postgres"]
            return main([*rest, "--db", pg.new_database("load")])

    from dashboard.testing import start_server

    tmp = Path(tempfile.mkdtemp(prefix="ainerd-load-"))
    data, instance = tmp / "data", tmp / "instance"
    data.mkdir()
    ds = build_dataset(data / "load.h5")
    db = args.db or f"sqlite:///{(instance / 'ainerd.db').resolve()}"
    store = StudyStore(db)
    study, tokens = store.create_study(ds, 30, n=args.n, experts=[f"E{i:02d}" for i in range(args.experts)] + ["alone"])
    tokens, alone_token = tokens[:-1], tokens[-1]
    server = start_server(data, instance, gunicorn_workers=args.workers, AINERD_SECRET_KEY="L" * 48,
                          AINERD_ADMIN_PASSWORD="load-admin", GUNICORN_LOGLEVEL="warning", AINERD_DATABASE_URL=db)
    load_before = os.getloadavg()
    try:
        run = _storm(server.url, tokens, alone_token, args.think_ms / 1000.0)
    finally:
        server.stop()
        print(f"server log: {server.log_path}", file=sys.stderr)
    results, alone, lat = run["results"], run["alone"], run["lat"]
    errors = [e for r in results for e in r.get("errors", [])]
    problems = [f"alone: {e}" for e in alone.get("errors", [])] + _check_database(store, tokens, alone_token, results, alone)
    img, healthz, wall = run["img"], run["healthz"], run["wall"]
    load_after = run["load_after"]
    figures = {
        "experts": len(tokens), "think_ms": args.think_ms, "gunicorn_workers": args.workers, "threads_per_worker": 4,
        "images_per_expert": store.expert_view(tokens[0][0].id)["total"], "rating_posts": len(lat),
        "wall_s": round(wall, 2), "posts_per_s": round(len(lat) / wall, 1),
        "rating_ms": {"p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1), "p99": round(pct(lat, 99), 1),
                      "max": round(max(lat) * 1000, 1) if lat else None,
                      "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None},
        "image_ms": {"p50": round(pct(img, 50), 1), "p95": round(pct(img, 95), 1)},
        "alone_ms": {"p50": round(pct(alone.get("lat", []), 50), 1), "p95": round(pct(alone.get("lat", []), 95), 1)},
        "healthz_ms": {"p50": round(pct(healthz, 50), 1)},
        "p50_over_alone_p50": round(pct(lat, 50) / pct(alone.get("lat", []), 50), 1) if alone.get("lat") else None,
        "p95_over_alone_p50": round(pct(lat, 95) / pct(alone.get("lat", []), 50), 1) if alone.get("lat") else None,
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after],
        "errors": sorted({str(e) for e in errors})[:10], "n_errors": len(errors), "problems": problems[:10], "n_problems": len(problems),
        "database": "sqlite WAL synchronous=FULL" if db.startswith("sqlite") else db.split(":", 1)[0],
    }
    print(json.dumps(figures, indent=1))
    write_json(args.json, figures)
    ok = not problems and not errors
    print("OK: no lost or duplicated rating" if ok else "FAILED", file=sys.stderr)
    r, a = figures["rating_ms"], figures["alone_ms"]
    print(f"rating p50 {r['p50']} ms (x{figures['p50_over_alone_p50']} of one expert alone, {a['p50']} ms), "
          f"p95 {r['p95']} ms (x{figures['p95_over_alone_p50']}; target < 200 ms); GET /healthz alone "
          f"{figures['healthz_ms']['p50']} ms; load average {load_before[0]:.1f} before, {load_after[0]:.1f} at the end",
          file=sys.stderr)
    return 0 if ok else 1


def _storm(url: str, tokens, alone_token, think_s: float) -> dict:
    """The plain baselines on the same server first (GET /healthz, one expert alone), then every
    expert at once; returns the per-expert outcomes and the pooled latencies (seconds)."""
    healthz = []
    for _ in range(30):
        t0 = time.perf_counter()
        requests.get(url + "/healthz", timeout=30).raise_for_status()
        healthz.append(time.perf_counter() - t0)
    alone = {}
    expert_worker(url, alone_token[1], 999, alone, threading.Barrier(1), 0.0)
    results = [dict() for _ in tokens]
    barrier = threading.Barrier(len(tokens))
    threads = [threading.Thread(target=expert_worker, args=(url, tok, i, results[i], barrier, think_s))
               for i, (_, tok) in enumerate(tokens)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"healthz": healthz, "alone": alone, "results": results, "wall": wall, "load_after": os.getloadavg(),
            "lat": [x for r in results for x in r.get("lat", [])], "img": [x for r in results for x in r.get("img", [])]}


def _check_database(store, tokens, alone_token, results, alone) -> list[str]:
    """The database after the storm: one rating per image and one event per acknowledged click,
    and every expert's last acknowledged answer stored. Returns the problems found."""
    problems = []
    with store.session() as s:
        for (expert, _), res in zip([*tokens, alone_token], [*results, alone]):
            pos_cand = {a.position: a.candidate_id for a in s.query(Assignment).filter_by(expert_id=expert.id)}
            ratings = {r.candidate_id: r for r in s.query(Rating).filter_by(expert_id=expert.id)}
            events = s.query(RatingEvent).filter_by(expert_id=expert.id).count()
            if len(ratings) != len(pos_cand):
                problems.append(f"{expert.name}: {len(ratings)} ratings for {len(pos_cand)} images")
            if events != len(res.get("acked", [])):
                problems.append(f"{expert.name}: {events} events for {len(res.get('acked', []))} acknowledged clicks")
            last = {}
            for pos, similar in res.get("acked", []):
                last[pos] = similar
            for pos, similar in last.items():
                r = ratings.get(pos_cand[pos])
                if r is None or r.similar is not similar:
                    problems.append(f"{expert.name}: answer at position {pos} lost or wrong")
    return problems


if __name__ == "__main__":
    sys.exit(main())
