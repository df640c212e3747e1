"""Live mode: the appendable dataset format (segments) and the folder watcher.

Real HDF5 files written by the beamline fixtures, real subprocesses (a reader during appends, a
watcher killed with SIGKILL mid-append and restarted), a real Redis + Celery worker when
``redis-server`` is installed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline_fixtures import write_aps_nexus

from ainerd_core import dataset as D
from ainerd_core.dataset import open_dataset, write_dataset
from ainerd_core.errors import InputError
from ainerd_core.results import K_SET

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


# --------------------------------------------------------------------------- helpers
def _meta(n, t):
    return dict(time=np.full(n, float(t)), sector=np.arange(1, n + 1), phi=np.arange(n) * 20.0 + 10.0,
                q=np.full(n, 0.004), source=np.array([f"f{t}:{i}" for i in range(n)], dtype=object))


def _append(path, t, n=3, seed=0):
    rng = np.random.default_rng(seed)
    number = D.next_segment_number(path)
    return D.append_segment(path, number, maps=rng.random((n, 256, 256), dtype=np.float32), meta=_meta(n, t),
                            rows={"latent": rng.random((n, 4), dtype=np.float32), "labels": np.arange(n) % 2,
                                  "umap": rng.random((n, 2))},
                            state={"tables/times": np.array([float(t)])}, state_attrs={"k": 2},
                            ledger={"file": np.array([f"f{t}.hdf"], dtype=object), "status": np.array(["ok"], dtype=object)},
                            attrs={"file": f"f{t}.hdf"})


def aps_file(folder: Path, i: int, *, name=None, size=64, seed=None) -> Path:
    """One 18-map result file (one q, 18 sectors), start time 57 s after the previous one."""
    path = folder / (name or f"E031_{i:04d}_results.hdf")
    start = f"2024-03-01T10:{(i * 57) // 60:02d}:{(i * 57) % 60:02d}"
    write_aps_nexus(path, size=size, q_values=(0.004,), start_time=start, seed=i if seed is None else seed)
    return path


def reference_copy(explorer_data, tmp_path) -> Path:
    ref = tmp_path / "ref.h5"
    shutil.copy(explorer_data / "demo.h5", ref)
    return ref


def watcher(folder, out, ref=None, **kw):
    from ainerd_core.watch import WatchOptions, Watcher

    opts = WatchOptions(folder=folder, out=out, reference=ref, cessation=kw.pop("cessation", "first"),
                        poll_s=0.05, stable_s=kw.pop("stable_s", 0.2), retries=kw.pop("retries", 2),
                        retry_s=kw.pop("retry_s", 0.1), verbose=False, **kw)
    return Watcher(opts)


def run_until(w, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.poll_once()
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


# --------------------------------------------------------------------------- format
def test_segments_append_and_merge(tmp_path):
    p = D.create_live_dataset(tmp_path / "live.h5", source_kind="aps-8idi")
    with open_dataset(p) as ds:
        assert ds.n_maps == 0 and ds.attrs["schema_version"] == D.SCHEMA_VERSION and not ds.has_results
    for t in range(3):
        _append(p, t * 60, seed=t)
    with open_dataset(p) as ds:
        assert ds.n_maps == 9 and ds.segments == [1, 2, 3]
        assert ds.meta["time"].tolist() == [0.0] * 3 + [60.0] * 3 + [120.0] * 3
        assert ds.read_result("labels").shape == (9,) and ds.read_result("latent").shape == (9, 4)
        assert ds.read_result("tables/times").tolist() == [120.0]  # the latest segment's state wins
        assert ds.ledger["file"].tolist() == ["f0.hdf", "f60.hdf", "f120.hdf"]
        assert ds.live_info["file"] == "f120.hdf"
        m = ds.read_maps([7, 0, 4, 7])
        assert np.array_equal(m[0], ds.read_map(7)) and np.array_equal(m[0], m[3])
        assert sum(len(b) for _, b in ds.iter_maps(2)) == 9
    # precompute-style rebuild through segment 2: segment 3 stays appended on top of the new results
    D.write_results(p, {"latent": np.zeros((6, 4), np.float32), "labels": np.full(6, 1), "umap": np.zeros((6, 2))},
                    {"k": 2}, through_segment=2)
    assert [n for n, _ in D.list_segments(p)] == [3]
    with open_dataset(p) as ds:
        assert ds.n_maps == 9 and ds.segments_merged == 2
        assert ds.read_result("labels").tolist() == [1] * 6 + [0, 1, 0]
        assert ds.ledger["file"].tolist() == ["f0.hdf", "f60.hdf", "f120.hdf"]
    D.compact(p)
    assert D.list_segments(p) == []
    with open_dataset(p) as ds:
        assert ds.n_maps == 9 and ds.read_result("labels").tolist() == [1] * 6 + [0, 1, 0]


def test_rebuild_rejects_results_of_the_wrong_length(tmp_path):
    p = D.create_live_dataset(tmp_path / "live.h5")
    _append(p, 0)
    with pytest.raises(InputError, match="labels"):
        D.write_results(p, {"labels": np.zeros(5, int)})
    assert [n for n, _ in D.list_segments(p)] == [1]  # nothing merged, nothing lost


def test_migrate_schema_1(tmp_path, rng):
    p = tmp_path / "old.h5"
    maps = rng.random((4, 256, 256), dtype=np.float32)
    write_dataset(p, maps=maps, meta=_meta(4, 0))
    D.write_results(p, {"labels": np.arange(4), "tables/times": np.array([0.0])}, {"k": 4})
    with h5py.File(p, "r+") as f:  # what version 1 wrote: no segments_merged, no /live
        f.attrs["schema_version"] = 1
        del f.attrs["segments_merged"]
    with open_dataset(p) as ds:  # readable as is
        assert ds.attrs["schema_version"] == 1 and ds.n_maps == 4
    assert D.migrate(p) is True and D.migrate(p) is False
    with open_dataset(p) as ds:
        assert ds.attrs["schema_version"] == 2 and ds.n_maps == 4
        assert np.array_equal(ds.read_maps(range(4)), maps)
        assert ds.read_result("labels").tolist() == [0, 1, 2, 3] and ds.result_attrs["k"] == 4


def test_segment_validation(tmp_path):
    p = D.create_live_dataset(tmp_path / "live.h5")
    with pytest.raises(InputError, match="sector"):
        D.append_segment(p, 1, maps=np.zeros((2, 256, 256), np.float32), meta={"time": [0, 0], "phi": [0, 0],
                                                                                "q": [0, 0], "source": ["a", "b"]})
    with pytest.raises(InputError, match="per-map result"):
        D.append_segment(p, 1, maps=np.zeros((2, 256, 256), np.float32), meta=_meta(2, 0), rows={"labels": [0]})
    assert D.list_segments(p) == [] and not list(D.segment_dir(p).glob(".seg_*"))
    fd = D.acquire_writer_lock(p)
    try:
        with pytest.raises(InputError, match="another process"):
            D.acquire_writer_lock(p)
    finally:
        os.close(fd)


READER = r"""
import sys, time, numpy as np
from ainerd_core.dataset import open_dataset
path, stop = sys.argv[1], float(sys.argv[2])
seen, t_end = set(), time.time() + stop
while time.time() < t_end:
    with open_dataset(path) as ds:
        n = ds.n_maps
        assert ds.meta["time"].shape == (n,), "meta rows"
        lab = ds.read_result("labels")
        assert lab is None or lab.shape == (n,), "label rows"
        if n:
            ds.read_map(n - 1)
        seen.add(n)
print("OK", len(seen), max(seen))
"""


def test_reader_during_appends(tmp_path):
    """A separate process opens and reads the dataset continuously while segments are committed."""
    p = D.create_live_dataset(tmp_path / "live.h5")
    proc = subprocess.Popen([PY, "-c", READER, str(p), "6"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    for t in range(25):
        _append(p, t, seed=t)
        if t == 12:
            D.compact(p)  # a rebuild in the middle of it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("OK"), out
    with open_dataset(p) as ds:
        assert ds.n_maps == 75


def test_open_view_survives_a_compaction(tmp_path):
    """A reader that opened the dataset before a compaction merged and deleted the segments still
    reads every map, result and state of its view afterwards (no FileNotFoundError: the race
    CI once hit in test_reader_during_appends), and does not see segments committed later."""
    p = D.create_live_dataset(tmp_path / "live.h5")
    for t in range(4):
        _append(p, t, seed=t)
    with open_dataset(p) as fresh:
        expect = fresh.read_maps(range(12))
    view = open_dataset(p)   # lists 4 segments, opens none of their files yet
    batches = view.iter_maps(batch_size=2)
    first = next(batches)
    D.compact(p)             # merges all 4 into the base and deletes the segment files
    _append(p, 4, seed=4)    # committed after the view was opened
    assert not [q for q in D.segment_dir(p).glob("seg_*.h5") if int(q.stem[4:]) <= 4 - 1]
    try:
        np.testing.assert_array_equal(view.read_map(10), expect[10])
        rest = [first] + list(batches)
        np.testing.assert_array_equal(np.concatenate([m for _, m in rest]), expect)
        assert [s for s, _ in rest] == np.cumsum([0] + [len(m) for _, m in rest[:-1]]).tolist()  # contiguous
        assert view.n_maps == 12 and view.read_result("latent").shape == (12, 4)
        assert view.read_result("tables/times").tolist() == [3.0]
    finally:
        view.close()
    with open_dataset(p) as now:
        assert now.n_maps == 15


# --------------------------------------------------------------------------- watcher
def test_watch_rename_writer_and_tables(explorer_data, tmp_path):
    ref = reference_copy(explorer_data, tmp_path)
    folder = tmp_path / "beam"
    folder.mkdir()
    out = tmp_path / "live.h5"
    with watcher(folder, out, ref) as w:
        for i in range(3):  # boost_corr: <name>_results.hdf.temp, then rename
            tmp = aps_file(folder, i, name=f"E031_{i:04d}_results.hdf.temp")
            for _ in range(6):
                w.poll_once()
                time.sleep(0.05)
            with open_dataset(out) as ds:
                assert ds.n_maps == 18 * i  # a .temp file is never a result
            tmp.rename(folder / f"E031_{i:04d}_results.hdf")
            run_until(w, lambda: w.n == 18 * (i + 1))
        for _ in range(5):
            w.poll_once()  # nothing enters twice
    with open_dataset(out) as ds, open_dataset(ref, segments=False) as r:
        assert ds.n_maps == 54 and ds.ledger["file"].tolist() == [f"E031_{i:04d}_results.hdf" for i in range(3)]
        assert ds.meta["time"][::18].tolist() == [0.0, 57.0, 114.0]
        k = r.result_attrs["k"]
        assert ds.result_attrs["k"] == k
        lab = ds.read_result("labels")
        cent = r.read_result(f"kmeans/centroids_k{k}")
        lat = ds.read_result("latent")
        assert np.array_equal(lab, np.argmin(((lat[:, None] - cent[None]) ** 2).sum(-1), axis=1))
        counts = ds.read_result("tables/counts")
        assert counts.shape == (3, k) and counts.sum() == 54
        assert np.array_equal(counts, np.stack([np.bincount(lab[i * 18:(i + 1) * 18], minlength=k) for i in range(3)]))
        assert ds.read_result("tables/sector_time_labels").shape == (18, 3)
        umap = ds.read_result("umap")
        ref_umap = r.read_result("umap")
        assert umap.shape == (54, 2) and np.all(umap.min(0) >= ref_umap.min(0) - 1e-3)
        assert np.all(umap.max(0) <= ref_umap.max(0) + 1e-3)  # a weighted mean stays in the hull
        assert ds.read_result("flow_share/share").shape == (64, 64)
        for kk in K_SET:
            assert ds.read_result(f"labels_k{kk}").shape == (54,)
        assert ds.result_attrs["model_sha256"] == r.result_attrs["model_sha256"]


def test_watch_slow_in_place_writer_and_corrupt_file(explorer_data, tmp_path):
    ref = reference_copy(explorer_data, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    whole = aps_file(src, 1).read_bytes()
    folder = tmp_path / "beam"
    folder.mkdir()
    aps_file(folder, 0)
    (folder / "E031_0005_results.hdf").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(5000))  # corrupt
    target = folder / "E031_0001_results.hdf"
    done = threading.Event()

    def slow_writer():  # synced in place, in pieces, with pauses shorter than --stable
        with open(target, "wb") as fh:
            for i in range(0, len(whole), 4096):
                fh.write(whole[i:i + 4096])
                fh.flush()
                time.sleep(0.01)
        done.set()

    with watcher(folder, tmp_path / "live.h5", ref, stable_s=0.3, retries=2, retry_s=0.1) as w:
        th = threading.Thread(target=slow_writer)
        th.start()
        run_until(w, lambda: done.is_set() and w.n == 36 and "E031_0005_results.hdf" in w._failed, timeout=90)
        th.join()
        for _ in range(10):
            w.poll_once()
    with open_dataset(tmp_path / "live.h5") as ds:
        assert ds.n_maps == 36
        files, status = ds.ledger["file"].tolist(), ds.ledger["status"].tolist()
        assert sorted(zip(files, status)) == [("E031_0000_results.hdf", "ok"), ("E031_0001_results.hdf", "ok"),
                                              ("E031_0005_results.hdf", "failed")]
        alerts = ds.alerts
        failed = [i for i, k in enumerate(alerts["kind"]) if k == "file failed"]  # (novel maps may be alerted too)
        assert [alerts["file"][i] for i in failed] == ["E031_0005_results.hdf"]
        assert "E031_0005_results.hdf" in alerts["message"][failed[0]]
        assert np.array_equal(ds.read_maps(np.arange(18, 36)).shape, (18, 256, 256))


def test_watch_follows_growing_rheology(explorer_data, tmp_path):
    ref = reference_copy(explorer_data, tmp_path)
    folder = tmp_path / "beam"
    folder.mkdir()
    log = tmp_path / "rheo.csv"
    log.write_text("time,shear_stress\n" + "".join(f"{t},{10 - t / 100}\n" for t in range(0, 60, 2)))
    with watcher(folder, tmp_path / "live.h5", ref, rheology=log) as w:
        aps_file(folder, 0)
        run_until(w, lambda: w.n == 18)
        with open(log, "a") as fh:
            fh.write("".join(f"{t},{10 - t / 100}\n" for t in range(60, 120, 2)) + "120,")  # a line caught midway
        aps_file(folder, 1)
        run_until(w, lambda: w.n == 36)
    with open_dataset(tmp_path / "live.h5") as ds:
        assert ds.rheology["time"].max() >= 58


KILL_SCRIPT = r"""
import os, sys, time
from ainerd_core import dataset as D
real = D.commit
def slow_commit(tmp, path):
    # test hook: stop between writing a segment and renaming it, so SIGKILL lands mid-append
    if path.name.startswith("seg_") and os.environ.get("PAUSE_AT") and path.name == os.environ["PAUSE_AT"]:
        open(os.environ["MARK"], "w").write(str(tmp))
        time.sleep(600)
    return real(tmp, path)
D.commit = slow_commit
from ainerd_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_watch_killed_mid_append_and_restarted(explorer_data, tmp_path):
    ref = reference_copy(explorer_data, tmp_path)
    folder = tmp_path / "beam"
    folder.mkdir()
    for i in range(4):
        aps_file(folder, i)
    out = tmp_path / "live.h5"
    mark = tmp_path / "mark"
    args = [PY, "-c", KILL_SCRIPT, "watch", str(folder), "--out", str(out), "--reference", str(ref),
            "--cessation-time", "first", "--poll", "0.05", "--stable", "0.1", "--no-dynamics"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAUSE_AT": "seg_000003.h5", "MARK": str(mark)}
    proc = subprocess.Popen(args + ["--quiet"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not mark.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the watcher never reached the third append"
            time.sleep(0.1)
        half = Path(mark.read_text())
        assert half.exists() and half.stat().st_size > 0  # the third file's segment is half-way
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open_dataset(out) as ds:  # consistent: exactly the two committed files
        assert ds.n_maps == 36 and ds.ledger["file"].tolist() == [f"E031_{i:04d}_results.hdf" for i in range(2)]
    res = subprocess.run(args + ["--idle-exit", "1.5", "--quiet"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not half.exists()  # the half-written segment was cleaned up
    with open_dataset(out) as ds:
        files = ds.ledger["file"].tolist()
        assert sorted(files) == [f"E031_{i:04d}_results.hdf" for i in range(4)] and len(set(files)) == 4
        assert ds.n_maps == 72 and ds.read_result("labels").shape == (72,)
        assert sorted(set(ds.meta["time"].tolist())) == [0.0, 57.0, 114.0, 171.0]


def test_watch_cli_errors(tmp_path):
    res = subprocess.run([PY, "-m", "ainerd_core", "watch", str(tmp_path / "nope"), "--out", str(tmp_path / "o.h5"),
                          "--cessation-time", "first", "--once"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path / 'nope'}: is not a folder"
    assert not (tmp_path / "o.h5").exists()


def test_result_row_reads_appended_rows(tmp_path):
    p = D.create_live_dataset(tmp_path / "live.h5")
    _append(p, 0, seed=1)
    _append(p, 60, seed=2)
    with open_dataset(p) as ds:
        lat = ds.read_result("latent")
        for i in (0, 2, 3, 5):
            assert np.array_equal(ds.read_result_row("latent", i), lat[i])
        with pytest.raises(IndexError):
            ds.read_result_row("latent", 6)
        assert ds.read_result_row("nope", 0, default="x") == "x"


# --------------------------------------------------------------------------- Celery
from test_celery import _stop, _wait_log, redis_url  # noqa: E402,F401  (real redis-server on a free port)


@pytest.mark.slow
def test_watch_celery_workers(explorer_data, tmp_path, redis_url):
    """Per-file work in a real Celery worker over a real Redis; the watcher appends."""
    ref = reference_copy(explorer_data, tmp_path)
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AINERD_WATCH_BROKER": redis_url}
    env.pop("AINERD_REDIS_URL", None)
    proc = subprocess.Popen([str(Path(PY).parent / "celery"), "-A", "ainerd_core.watch_celery", "worker", "--pool",
                             "solo", "--loglevel", "INFO", "--logfile", str(log), "--hostname", "watch@%h"],
                            cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        _wait_log(log, "ready", proc, timeout=120)
        folder = tmp_path / "beam"
        folder.mkdir()
        for i in range(3):
            aps_file(folder, i)
        (folder / "E031_0007_results.hdf").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
        with watcher(folder, tmp_path / "live.h5", ref, celery=True, broker=redis_url) as w:
            run_until(w, lambda: w.n == 54 and "E031_0007_results.hdf" in w._failed, timeout=180)
        text = log.read_text()
        assert text.count("ainerd.watch.compute_file") >= 4 and "succeeded" in text  # the work ran in the worker
        with open_dataset(tmp_path / "live.h5") as ds:
            assert ds.n_maps == 54 and ds.read_result("labels").shape == (54,)
            assert sorted(ds.ledger["status"].tolist()) == ["failed", "ok", "ok", "ok"]
            assert len(set(ds.ledger["file"].tolist())) == 4
    finally:
        _stop(proc)


def test_watch_novelty_rows_and_alerts(explorer_data, tmp_path):
    """With ainerd_core.novelty present: every live map gets a novelty score, and exactly the maps
    at or above the threshold are alerted (with their dataset row)."""
    N = pytest.importorskip("ainerd_core.novelty")
    if not hasattr(N, "novelty_of_maps"):
        pytest.skip("ainerd_core.novelty has no novelty_of_maps")
    ref = reference_copy(explorer_data, tmp_path)
    folder = tmp_path / "beam"
    folder.mkdir()
    rng = np.random.default_rng(3)
    # unlike any training map, for any shipped model: full-resolution white noise (64 px noise, once
    # upsampled, is smooth; a model trained on randomised maps with strong speckle noise then scored
    # it 0.985-0.995, below the threshold)
    noise = {lab: rng.random((256, 256)).astype(np.float32) for lab in range(1, 19)}
    write_aps_nexus(folder / "b_odd_results.hdf", size=256, q_values=(0.004,), maps=noise,
                    start_time="2024-03-01T10:01:00")
    with open_dataset(ref) as r:  # maps of the reference itself: in distribution
        known = {lab: r.read_map(lab * 7) for lab in range(1, 19)}
    write_aps_nexus(folder / "a_known_results.hdf", size=256, q_values=(0.004,), maps=known,
                    start_time="2024-03-01T10:00:00")
    with watcher(folder, tmp_path / "live.h5", ref) as w:
        if w._novelty_ref is None:
            pytest.skip("no novelty reference stored with the reference or the model")
        run_until(w, lambda: w.n == 36)
    with open_dataset(tmp_path / "live.h5") as ds:
        score = ds.read_result("novelty/score")
        assert score.shape == (36,) and np.all((score >= 0) & (score <= 1))
        known_rows = np.array([str(x).startswith("a_known") for x in ds.meta["source"]])  # either file may come first
        assert known_rows.sum() == 18
        assert np.median(score[known_rows]) < 0.9 and np.all(score[~known_rows] >= N.NOVEL_THRESHOLD), score
        flagged = np.flatnonzero(score >= N.NOVEL_THRESHOLD)
        alerts = ds.alerts or {"kind": np.array([]), "map": np.array([])}
        novel = [int(m) for k, m in zip(alerts["kind"], alerts["map"]) if k == "novel map"]
        assert sorted(novel) == flagged.tolist()


def test_precompute_replaces_live_results(explorer_data, tmp_path):
    """A full precompute of the live dataset while the watcher runs: its results replace the live
    ones, the segments are merged, and later maps join the new clusters."""
    from ainerd_core.precompute import precompute

    ref = reference_copy(explorer_data, tmp_path)
    folder = tmp_path / "beam"
    folder.mkdir()
    out = tmp_path / "live.h5"
    for i in range(2):
        aps_file(folder, i)
    with watcher(folder, out, ref) as w:
        run_until(w, lambda: w.n == 36)
        precompute(out, k=3, n_init=3, n_boot=2, neighbours=10, targets=10, verbose=False)
        assert D.list_segments(out) == []
        with open_dataset(out) as ds:
            assert ds.n_maps == 36 and ds.result_attrs["k"] == 3 and "timings_json" in ds.result_attrs
            assert len(ds.ledger["file"]) == 2
        aps_file(folder, 2)
        run_until(w, lambda: w.n == 54)
        assert Path(w.reference.path) == out
    with open_dataset(out) as ds, open_dataset(out, segments=False) as base:
        lab, lat = ds.read_result("labels"), ds.read_result("latent")
        cent = base.read_result("kmeans/centroids_k3")
        assert lab.shape == (54,) and ds.result_attrs["k"] == 3
        assert np.array_equal(lab[36:], np.argmin(((lat[36:, None] - cent[None]) ** 2).sum(-1), axis=1))
        assert ds.read_result("tables/counts").sum() == 54 and ds.read_result("tables/counts").shape == (3, 3)
        assert ds.ledger["file"].tolist() == [f"E031_{i:04d}_results.hdf" for i in range(3)]


def test_pack_result_round_trip():
    from ainerd_core.watch import pack_result, unpack_result

    res = {"maps": np.arange(8, dtype=np.float32).reshape(2, 2, 2), "scalar": np.asarray(0.5, np.float32),
           "meta/source": np.array(["a:1", "b:2"], dtype=object), "start_time": "2024-03-01T10:00:00", "size": 64}
    import json

    back = unpack_result(json.loads(json.dumps(pack_result(res))))
    assert back["scalar"].shape == () and back["scalar"].dtype == np.float32 and float(back["scalar"]) == 0.5
    assert np.array_equal(back["maps"], res["maps"]) and back["meta/source"].tolist() == ["a:1", "b:2"]
    assert back["start_time"] == res["start_time"] and back["size"] == 64
