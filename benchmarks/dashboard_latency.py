"""Latency and memory of the explorer against a real server (``python -m dashboard``).

    python -m benchmarks.dashboard_latency --data DIR --dataset ID [--repeat 20] [--browser]

Starts the server with ``dashboard.testing.start_server`` on the data folder, then times

* page loads over HTTP: the page HTML + ``/_dash-layout`` + ``/_dash-dependencies`` + the router
  callback that returns the page with its figures (what a browser requests once its JS bundles
  are cached), for /, /timeline, /sectors, /latent-map;
* interactions, as the browser sends them to ``/_dash-update-component``: recolour the latent
  map, change k (timeline, latent map), click a bar (the 18-map thumbnail grid), click a point
  (map + reconstruction + metadata), click a sector cell, lasso 500 points;
* PNG route: a thumbnail and a full map, cold (first render) and cached;
* with ``--browser``: full page loads in headless Chromium until the figure is drawn;

and prints p50 / p95 per item and the server's resident memory (psutil, server and children).
Targets (paper scale, 13,000 maps): page loads < 1.5 s, interactions < 150 ms at p95, RSS < 1 GB.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import requests

REPO = Path(__file__).resolve().parents[1]

from ainerd_core.results import K_SET
from dashboard.testing import start_server
from benchmarks.common import write_json

PAGES = ("/", "/timeline", "/sectors", "/latent-map")


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


class Client:
    def __init__(self, url: str):
        self.url = url
        self.s = requests.Session()
        self.deps = self.s.get(url + "/_dash-dependencies", timeout=30).json()

    def _output_spec(self, output: str):
        dep = next((d for d in self.deps if d["output"] == output), None)
        if dep is None:
            raise KeyError(f"no callback with output {output}")
        if output.startswith(".."):
            parts = output.strip(".").split("...")
            outputs = [dict(zip(("id", "property"), p.rsplit(".", 1))) for p in parts]
        else:
            outputs = dict(zip(("id", "property"), output.rsplit(".", 1)))
        return dep, outputs

    def callback(self, output: str, inputs: dict, state: dict | None = None, changed: list | None = None):
        """POST one callback like dash-renderer does; inputs/state: 'id.prop' -> value."""
        dep, outputs = self._output_spec(output)
        values = {**(inputs or {}), **(state or {})}

        def spec(items):
            out = []
            for it in items:
                key = f"{it['id']}.{it['property']}"
                out.append({"id": it["id"], "property": it["property"], "value": values.get(key)})
            return out
        body = {"output": output, "outputs": outputs, "inputs": spec(dep["inputs"]), "state": spec(dep["state"]),
                "changedPropIds": changed or list(inputs)}
        t0 = time.perf_counter()
        r = self.s.post(self.url + "/_dash-update-component", json=body, timeout=60)
        dt = time.perf_counter() - t0
        if r.status_code not in (200, 204):
            raise RuntimeError(f"{output}: HTTP {r.status_code}: {r.text[:300]}")
        return dt, r

    def router_output(self) -> str:
        return next(d["output"] for d in self.deps if "page-content.children" in d["output"])

    def page_load(self, path: str, dataset: str):
        t0 = time.perf_counter()
        size = 0
        for p in (f"{path}?dataset={dataset}", "/_dash-layout", "/_dash-dependencies"):
            r = self.s.get(self.url + p, timeout=60)
            r.raise_for_status()
            size += len(r.content)
        _, r = self.callback(self.router_output(), {"url.pathname": path, "url.search": f"?dataset={dataset}",
                                                    "dataset-select.value": None},
                             changed=["url.pathname", "url.search"])
        size += len(r.content)
        return time.perf_counter() - t0, size


def rss_mb(pid: int) -> float:
    p = psutil.Process(pid)
    total = p.memory_info().rss
    for c in p.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def browser_loads(url: str, dataset: str, repeat: int):
    from dashboard.testing import make_driver, quit_driver

    sel = {"/": "#overview-table", "/timeline": "#timeline-graph .main-svg",
           "/sectors": "#sectors-graph .main-svg", "/latent-map": "#latent-graph .main-svg"}
    driver = make_driver()
    out = {}
    try:
        driver.get(url + "/")  # warm the JS bundle cache
        time.sleep(2)
        for path in PAGES:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                driver.get(f"{url}{path}?dataset={dataset}")
                while not driver.execute_script(
                        "const e = document.querySelector(arguments[0]);"
                        "const g = e && e.closest('.js-plotly-plot');"
                        "return !!e && (!g || (g._fullData && g._fullData.length > 0));", sel[path]):
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(f"{path} did not render in 30 s")
                    time.sleep(0.02)
                times.append(time.perf_counter() - t0)
            out[path] = times
    finally:
        quit_driver(driver)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of precomputed datasets")
    ap.add_argument("--dataset", required=True, help="dataset id (file name without .h5)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--browser", action="store_true", help="also time full page loads in headless Chromium")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)

    from ainerd_core.dataset import open_dataset

    with open_dataset(Path(args.data) / f"{args.dataset}.h5") as ds:
        n = ds.n_maps
        has_maps = ds.has_maps
        times = ds.read_result("tables/times")
        umap = ds.read_result("umap")
    instance = Path(tempfile.mkdtemp(prefix="ainerd-bench-"))
    server = start_server(Path(args.data), instance)
    results: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    try:
        c = Client(server.url)
        ds_id = args.dataset
        state = {"dataset-store.data": ds_id}
        # warm-up: first touches read arrays from the file (reported separately)
        cold = {}
        for path in PAGES:
            cold[path], _ = c.page_load(path, ds_id)
        rss_after_pages = rss_mb(server.proc.pid)
        for _ in range(args.repeat):
            for path in PAGES:
                dt, size = c.page_load(path, ds_id)
                results.setdefault(f"page {path}", []).append(dt)
                sizes[f"page {path}"] = size
        _first_click(c, state, cold)
        _interactions(c, state, n, times, args.repeat, results, sizes)
        if has_maps:
            _png_route(c, state, times, args.repeat, results)
        rss_end = rss_mb(server.proc.pid)
        browser = browser_loads(server.url, ds_id, max(3, args.repeat // 4)) if args.browser else {}
        for path, v in browser.items():
            results[f"browser load {path}"] = v
        rss_end = max(rss_end, rss_mb(server.proc.pid))
    finally:
        server.stop()
    print(f"dataset {args.dataset}: {n:,} maps ({'with' if has_maps else 'without'} C2 maps), "
          f"{len(times)} time points, {args.repeat} repeats, UMAP {'present' if umap is not None else 'absent'}")
    print("first (cold) page loads: " + ", ".join(f"{p} {v * 1000:.0f} ms" for p, v in cold.items()))
    print(f"{'item':45s} {'p50 ms':>8s} {'p95 ms':>8s} {'bytes':>10s}")
    for name, v in results.items():
        print(f"{name:45s} {pct(v, 50):8.1f} {pct(v, 95):8.1f} {sizes.get(name, ''):>10}")
    print(f"server RSS after first page loads {rss_after_pages:.0f} MB, at the end {rss_end:.0f} MB")
    write_json(args.json, {"n_maps": n, "cold": cold, "rss_mb": rss_end,
                           "p50_ms": {k: pct(v, 50) for k, v in results.items()},
                           "p95_ms": {k: pct(v, 95) for k, v in results.items()}})
    return 0


def _first_click(c: Client, state: dict, cold: dict) -> None:
    """The first click on a point loads the autoencoder (its reconstruction is drawn in the detail
    card, with the map: no separate image request), once per process: timed apart."""
    t0 = time.perf_counter()
    _click_point(c, state, 1)
    cold["first point click"] = time.perf_counter() - t0


def _interactions(c: Client, state: dict, n: int, times, repeat: int, results: dict,
                  sizes: dict) -> None:
    """``repeat`` rounds of the interactive callbacks (recolour, change k, click, lasso, timeline,
    sectors), each timed into ``results`` (seconds per call)."""
    rng = np.random.default_rng(0)
    ks = list(K_SET)
    colors = ["cluster", "time", "sector", "class", "dynamics"]
    three = [0, len(times) // 2, len(times) - 1]
    for i in range(repeat):
        dt, r = c.callback("latent-graph.figure", {"latent-color.value": colors[i % 5], "latent-k.value": 5,
                                                   "latent-flowshare.value": ["on"], "latent-times.value": three},
                           state, changed=["latent-color.value"])
        results.setdefault("latent map: recolour", []).append(dt)
        sizes["latent map: recolour"] = len(r.content)
        dt, _ = c.callback("latent-graph.figure", {"latent-color.value": "cluster", "latent-k.value": ks[i % 3],
                                                   "latent-flowshare.value": ["on"], "latent-times.value": three},
                           state, changed=["latent-k.value"])
        results.setdefault("latent map: change k", []).append(dt)
        idx = int(rng.integers(n))
        t0 = time.perf_counter()
        _click_point(c, state, idx)
        results.setdefault("latent map: click a point", []).append(time.perf_counter() - t0)
        sel = rng.choice(n, size=min(500, n), replace=False).tolist()
        dt, _ = c.callback("..latent-selection.children...latent-selection-store.data...latent-selection-csv.disabled..",
                           {"latent-graph.selectedData": {"points": [{"customdata": j} for j in sel]}},
                           {**state, "latent-k.value": 5})
        results.setdefault("latent map: lasso 500 points", []).append(dt)
        dt, _ = c.callback("..timeline-graph.figure...timeline-graph.style..",
                           {"timeline-k.value": ks[i % 3], "timeline-time.data": None, "timeline-panels.value": []},
                           state, changed=["timeline-k.value"])
        results.setdefault("timeline: change k", []).append(dt)
        ti = int(rng.integers(len(times)))
        t0 = time.perf_counter()
        c.callback("timeline-time.data", {"timeline-graph.clickData": {"points": [
            {"curveNumber": 1, "pointNumber": ti, "customdata": ti, "x": float(times[ti])}]}}, state)
        c.callback("timeline-maps.children", {"timeline-time.data": ti, "timeline-k.value": 5}, state)
        dt = time.perf_counter() - t0
        results.setdefault("timeline: click a bar (18 thumbnails)", []).append(dt)
        t0 = time.perf_counter()
        _, r = c.callback("sectors-selected.data",
                          {"sectors-graph.clickData": {"points": [{"customdata": int(rng.integers(n))}]}}, state)
        c.callback("sectors-map.children", {"sectors-selected.data": r.json()["response"]["sectors-selected"]["data"],
                                            "sectors-k.value": 5}, state)
        dt = time.perf_counter() - t0
        results.setdefault("sectors: click a cell", []).append(dt)


def _click_point(c: Client, state: dict, index: int):
    """A click on a point of the latent map as the browser sends it: the click picks the point
    (latent-selected), which draws its detail card. Returns the second call's (seconds, response)."""
    c.callback("latent-selected.data", {"latent-graph.clickData": {"points": [
        {"curveNumber": 1, "pointNumber": 0, "customdata": index}]}}, state)
    return c.callback("latent-detail.children", {"latent-selected.data": index}, {**state, "latent-k.value": 5})


def _png_route(c: Client, state: dict, times, repeat: int, results: dict) -> None:
    """The map PNG route: the first request of a thumbnail (render) and the same again (cached)."""
    for i in range(repeat):
        _, r = c.callback("timeline-maps.children", {"timeline-time.data": i % len(times), "timeline-k.value": 5},
                          state)
        thumbs = sorted(u for u in set(_find_urls(r.json())) if u.startswith("/_maps/"))
        for u in thumbs[:3]:
            t0 = time.perf_counter()
            rr = c.s.get(c.url + u, timeout=30)
            rr.raise_for_status()
            results.setdefault("PNG: first request (render)", []).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.s.get(c.url + u, timeout=30).raise_for_status()
            results.setdefault("PNG: cached", []).append(time.perf_counter() - t0)


def _find_urls(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("src", "href") and isinstance(v, str):
                yield v
            else:
                yield from _find_urls(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_urls(v)


if __name__ == "__main__":
    sys.exit(main())
