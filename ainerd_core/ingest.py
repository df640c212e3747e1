"""``python -m ainerd_core ingest KIND ...``: beamline files, plain stacks and the published
AI-NERD folder -> one dataset file (format: :mod:`ainerd_core.dataset`).

Kinds::

    ingest aps FILE|DIR... --out OUT.h5 (--cessation-time ISO|first | --time-table CSV)
           [--q-index all|0,2] [--diagonal-fix] [--flow-axis-deg 90] [--sector-width-deg 20]
    ingest stack MAPS.npy|MAPS.h5 --meta META.csv --out OUT.h5 [--dataset NAME]
           [--upper-triangle] [--diagonal-fix] [--c2-time-step S]
    ingest published DIR --out OUT.h5

and, with every kind, a rheometer log: ``--rheology FILE --rheology-offset S
[--rheology-format auto|csv|rheocompass]`` (XPCS time = rheometer time + offset).

Every map goes through the same pipeline (:mod:`ainerd_core.readers.resample`): symmetrise the
stored upper triangle -> optional diagonal fix -> area-average (or, for small maps,
interpolate) to 256 x 256 -> min-max normalise. Maps are streamed: one file, one map at a
time, written straight into the dataset; rows are ordered sector-major (sector, then q, then
time). Bad input stops with one line naming the file and the problem, and leaves no output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .dataset import MAP_SIZE, DatasetWriter
from .errors import InputError
from .readers import aps as aps_reader
from .readers.published import (DEFAULT_RHEOLOGY_OFFSET_S, FLOW_AXIS_DEG, N_SECTORS, SECTOR_WIDTH_DEG,
                                read_published)
from .readers.resample import check_map, prepare_map
from .readers.rheology import FORMATS, read_rheology
from .readers.stack import MapStack, read_meta_csv

APS_SUFFIXES = {".h5", ".hdf", ".hdf5", ".nxs"}


# --------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser, geometry: bool = True) -> None:
    p.add_argument("--out", required=True, type=Path, help="dataset file to write (.h5); replaced atomically")
    p.add_argument("--title", default=None, help="dataset title (default: the output file name)")
    if geometry:
        p.add_argument("--flow-axis-deg", type=float, default=90.0,
                       help="azimuth of the flow direction on the detector, degrees (default 90)")
        p.add_argument("--sector-width-deg", type=float, default=20.0,
                       help="width of one azimuthal sector, degrees (default 20: 18 sectors)")
    g = p.add_argument_group("rheometer log")
    g.add_argument("--rheology", type=Path, default=None, help="rheometer log (CSV or RheoCompass export)")
    g.add_argument("--rheology-offset", type=float, default=None, metavar="SECONDS",
                   help="added to the rheometer clock to reach the XPCS clock (0 = shear cessation);"
                        " default 0 (-200 for the published folder's own rheology.csv)")
    g.add_argument("--rheology-format", choices=FORMATS, default="auto", help="layout of the log (default auto)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    p = sub.add_parser("aps", help="APS 8-ID-I / boost_corr two-time result files (one per time point)",
                       description="APS 8-ID-I two-time result files -> dataset. Files are read one at a time.")
    p.add_argument("files", nargs="+", type=Path, help="result files (.h5/.hdf), or folders of them")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--cessation-time", metavar="ISO|first",
                   help="time of shear cessation (ISO 8601, e.g. 2023-03-15T10:31:00); each map's time is"
                        " the file's start time minus this. 'first' = the earliest file's start")
    t.add_argument("--time-table", type=Path, metavar="CSV",
                   help="CSV with columns file,time_s giving each file's time since shear cessation")
    p.add_argument("--q-index", default="all", help="q rows to keep: 'all' (default) or e.g. '0' or '0,2'")
    p.add_argument("--diagonal-fix", action="store_true",
                   help="replace the C2 diagonal by the mean of its two off-diagonal neighbours")
    _common(p)

    p = sub.add_parser("stack", help="a NumPy/HDF5 stack (N, n, n) plus a metadata CSV",
                       description="Plain stack of maps + CSV (time, sector and/or phi, optional q, source).")
    p.add_argument("maps", type=Path, help="maps: .npy or .h5 with a (N, n, n) dataset")
    p.add_argument("--meta", required=True, type=Path, help="CSV, one row per map: time, sector|phi[, q, source]")
    p.add_argument("--dataset", default=None, help="HDF5 dataset holding the stack (default: the only 3-D one)")
    p.add_argument("--upper-triangle", action="store_true",
                   help="maps store only the upper triangle (mirror it, as for APS files)")
    p.add_argument("--diagonal-fix", action="store_true",
                   help="replace the C2 diagonal by the mean of its two off-diagonal neighbours")
    p.add_argument("--c2-time-step", type=float, default=None, metavar="S",
                   help="seconds per pixel of the input maps (stored, scaled to 256 pixels)")
    _common(p)

    p = sub.add_parser("published", help="the published AI-NERD folder (latents, sectors, times, rheology)",
                       description="Published AI-NERD layout (latents_64.npy, sector.npy, start_time_s.npy,"
                                   " rheology.csv) -> latents-only dataset.")
    p.add_argument("folder", type=Path, help="folder, e.g. ../shared/data/ainerd_e031")
    p.add_argument("--flow-axis-deg", type=float, default=FLOW_AXIS_DEG,
                   help="azimuth of the flow direction, degrees (default 90: sectors 5 and 14)")
    _common(p, geometry=False)


# --------------------------------------------------------------------------- helpers
def _geometry(args) -> tuple[float, int]:
    width = float(args.sector_width_deg)
    if not 0 < width <= 360:
        raise InputError("--sector-width-deg", f"must be in (0, 360], got {width}")
    n = int(round(360.0 / width))
    if abs(n * width - 360.0) > 1e-6:
        raise InputError("--sector-width-deg", f"{width} does not divide 360 degrees into whole sectors")
    return width, n


def sector_of_phi(phi, width: float, n_sectors: int) -> np.ndarray:
    """1-based sector of azimuth(s) phi (degrees): sector k covers [(k-1) w, k w) after phi mod 360."""
    p = np.mod(np.asarray(phi, dtype=np.float64), 360.0)
    return np.clip(np.floor(p / width + 1e-9).astype(np.int64) + 1, 1, n_sectors).astype(np.int32)


def _rheology(args, default_path=None, default_offset=0.0):
    """The rheometer log of --rheology (offset default 0), else ``default_path`` (the published
    folder's own log, offset default ``default_offset``); None without either."""
    if args.rheology is not None:
        path, offset = args.rheology, 0.0
    elif default_path is not None:
        path, offset = default_path, default_offset
    else:
        if args.rheology_offset is not None:
            raise InputError("--rheology-offset", "given without --rheology")
        return None
    if args.rheology_offset is not None:
        offset = args.rheology_offset
    if not np.isfinite(offset):
        raise InputError("--rheology-offset", f"must be a finite number of seconds, got {offset}")
    return read_rheology(path, args.rheology_format, offset), Path(path), offset


def _check_out(out: Path, inputs) -> None:
    if out.exists() and out.is_dir():
        raise InputError(out, "is a folder; --out must be a file name")
    for p in inputs:
        try:
            if p.exists() and out.exists() and out.resolve() == p.resolve():
                raise InputError(out, "--out would overwrite an input file")
        except OSError:
            pass


def _rheology_note(rheo) -> str:
    if rheo is None:
        return ""
    _, path, offset = rheo
    return f"; rheology {path.name} (XPCS time = rheometer time {offset:+g} s)"


def _expand(files, exclude: Path) -> list[Path]:
    """Files as given, folders replaced by their .h5/.hdf/.hdf5/.nxs files (sorted by name);
    the output file itself is never an input; a file given twice is an error."""
    out, seen = [], set()
    skip = exclude.resolve()
    for f in files:
        f = Path(f)
        if f.is_dir():
            found = sorted(p for p in f.iterdir()
                           if p.suffix.lower() in APS_SUFFIXES and p.is_file() and p.resolve() != skip)
            if not found:
                raise InputError(f, "folder holds no .h5/.hdf result files")
        else:
            found = [f]
        for p in found:
            key = p.resolve()
            if key in seen:
                raise InputError(p, "is given twice")
            seen.add(key)
            out.append(p)
    return out


def _q_selection(text: str):
    if text.strip().lower() == "all":
        return None
    try:
        sel = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise InputError("--q-index", f"expected 'all' or comma-separated whole numbers, got {text!r}") from None
    if not sel or min(sel) < 0:
        raise InputError("--q-index", f"expected 'all' or whole numbers >= 0, got {text!r}")
    return sel


# --------------------------------------------------------------------------- aps
def _dataset_attrs(args, kind: str, width: float, n_sectors: int, provenance: str) -> dict:
    """The attributes every ingested dataset carries (``/`` of the file)."""
    return dict(source_kind=kind, title=args.title or args.out.stem, flow_axis_deg=float(args.flow_axis_deg),
                sector_width_deg=width, n_sectors=n_sectors, provenance=provenance)


def _positions(order: np.ndarray) -> np.ndarray:
    """(N,) int64: the row of the dataset each input row goes to (the inverse of ``order``)."""
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return position


def _aps_times(args, infos, table, cessation) -> list[float]:
    """Seconds of every file: from ``--time-table``, else its /entry/start_time relative to
    ``cessation`` (None: the earliest file)."""
    times = []
    for info in infos:
        if table is not None:
            if info.path.name not in table:
                raise InputError(args.time_table, f"has no time for {info.path.name}")
            times.append(table[info.path.name])
        else:
            if info.start_time is None:
                raise InputError(info.path, "has no start time (/entry/start_time); use --time-table")
            times.append(info.start_time)
    if table is None:
        ref = cessation or min(times, key=lambda t: aps_reader.seconds_between(t, times[0]))
        times = [aps_reader.seconds_between(t, ref) for t in times]
    return times


def _aps_scan(args, files, table) -> list:
    """Pass 1: the small metadata of every file (no maps); one experiment has one map size."""
    infos = [aps_reader.scan_file(p) for p in files]
    names = [i.path.name for i in infos]
    dup = {n for n in names if names.count(n) > 1}
    if dup and table is not None:
        raise InputError(sorted(dup)[0], "given twice (file names must be unique with --time-table)")
    first = infos[0]
    for info in infos[1:]:
        if info.size != first.size:
            raise InputError(info.path, f"maps are {info.size} x {info.size} but {first.path.name} has"
                                        f" {first.size} x {first.size} (one experiment, one map size)")
    return infos


def _aps_rows(infos, q_sel) -> list:
    """(file index, entry) of every selected map."""
    rows = [(fi, e) for fi, info in enumerate(infos) for e in info.entries if q_sel is None or e.q_index in q_sel]
    if not rows:
        present = sorted({e.q_index for i in infos for e in i.entries})
        raise InputError("--q-index", f"selects no maps (q indices present: {present})")
    return rows


def ingest_aps(args) -> tuple[Path, int]:
    width, n_sectors = _geometry(args)
    files = _expand(args.files, args.out)
    _check_out(args.out, files)
    q_sel = _q_selection(args.q_index)
    rheo = _rheology(args)
    table = aps_reader.read_time_table(args.time_table) if args.time_table else None
    cessation = None
    if args.cessation_time and args.cessation_time.strip().lower() != "first":
        cessation = aps_reader.parse_time_text(args.cessation_time, "--cessation-time")
    infos = _aps_scan(args, files, table)
    times = _aps_times(args, infos, table, cessation)
    rows = _aps_rows(infos, q_sel)
    first, n = infos[0], len(rows)
    time = np.array([times[fi] for fi, _ in rows], dtype=np.float64)
    q = np.array([e.q for _, e in rows], dtype=np.float64)
    phi = np.mod(np.array([e.phi for _, e in rows], dtype=np.float64), 360.0)
    sector = sector_of_phi(phi, width, n_sectors)
    q_index = np.array([e.q_index for _, e in rows], dtype=np.int32)
    label = np.array([e.label for _, e in rows], dtype=np.int32)
    fidx = np.array([fi for fi, _ in rows])
    order = np.lexsort((label, fidx, time, q_index, sector))  # sector-major, then q, then time

    step = {i.pixel_time_s for i in infos}
    pixel_time = np.array([np.nan if infos[fi].pixel_time_s is None else infos[fi].pixel_time_s
                           for fi, _ in rows]) * (first.size / MAP_SIZE)
    attrs = _dataset_attrs(args, "aps-8idi", width, n_sectors,
                           f"ingest aps: {len(files)} {first.layout} files, {n} maps of {first.size} x {first.size}"
                           f" -> {MAP_SIZE} (upper triangle mirrored, "
                           f"{'diagonal fixed, ' if args.diagonal_fix else ''}area-averaged, min-max normalised);"
                           f" times {'from ' + str(args.time_table.name) if table else 'from /entry/start_time'}"
                           f"{_rheology_note(rheo)}")
    if len(step) == 1 and None not in step:
        attrs["c2_time_step_s"] = float(pixel_time[0])
    with DatasetWriter(args.out, n, **attrs) as w:
        c2_min, c2_max = _aps_write_maps(args, w, infos, rows, _positions(order))
        src = np.array([f"{infos[fi].path.name}:{e.dataset.rsplit('/', 1)[-1]} (label {e.label})"
                        for fi, e in rows], dtype=object)
        extra = {} if np.isnan(pixel_time).any() else {"c2_time_step_s": pixel_time[order]}
        w.set_meta(time=time[order], sector=sector[order], phi=phi[order], q=q[order], source=src[order],
                   q_index=q_index[order], roi_label=label[order], c2_min=c2_min[order], c2_max=c2_max[order],
                   **extra)
        if rheo is not None:
            w.set_rheology(**rheo[0])
    return args.out, n


def _aps_write_maps(args, w, infos, rows, position) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: one file open at a time, one map in memory at a time; returns each row's raw
    C2 minimum and maximum (before normalisation), (N,) each."""
    c2_min = np.empty(len(rows))
    c2_max = np.empty(len(rows))
    by_file: dict[int, list[int]] = {}
    for r, (fi, _) in enumerate(rows):
        by_file.setdefault(fi, []).append(r)
    for fi, rs in by_file.items():
        path = infos[fi].path
        with aps_reader.open_h5(path) as f:
            for r in rs:
                key = rows[r][1].dataset
                raw = check_map(path, aps_reader.read_map(path, f, key), key, upper_triangle=True)
                m, c2_min[r], c2_max[r] = prepare_map(raw, size=MAP_SIZE, diagonal_fix=args.diagonal_fix,
                                                      upper_triangle=True)
                w.write_maps(int(position[r]), m[None])
    return c2_min, c2_max


# --------------------------------------------------------------------------- stack
def ingest_stack(args) -> tuple[Path, int]:
    width, n_sectors = _geometry(args)
    _check_out(args.out, [args.maps, args.meta])
    rheo = _rheology(args)
    with MapStack(args.maps, args.dataset) as stack:
        n = stack.n_maps
        meta = read_meta_csv(args.meta, n)
        if "sector" in meta:
            sector = meta["sector"]
            if sector.max() > n_sectors:
                raise InputError(args.meta, f"sector {int(sector.max())} is beyond the {n_sectors} sectors of"
                                            f" {width:g} degrees")
        else:
            if np.any(np.isnan(meta["phi"])):
                raise InputError(args.meta, "phi is missing in some rows and there is no sector column")
            sector = sector_of_phi(meta["phi"], width, n_sectors)
        phi = meta.get("phi")
        if phi is not None:
            phi = np.where(np.isnan(phi), phi, np.mod(phi, 360.0))
        time = meta["time"]
        q = meta.get("q", np.full(n, np.nan))
        source = meta.get("source", np.array([f"{args.maps.name}[{i}]" for i in range(n)], dtype=object))
        order = np.lexsort((np.arange(n), time, np.nan_to_num(q, nan=np.inf), sector))
        position = _positions(order)
        attrs = _dataset_attrs(args, "stack", width, n_sectors,
                               f"ingest stack: {args.maps.name} ({n} maps of {stack.size} x {stack.size}"
                               f" -> {MAP_SIZE},"
                               f" {'upper triangle mirrored, ' if args.upper_triangle else ''}"
                               f"{'diagonal fixed, ' if args.diagonal_fix else ''}area-averaged, min-max normalised)"
                               f" + {args.meta.name}{_rheology_note(rheo)}")
        if args.c2_time_step is not None:
            if not (np.isfinite(args.c2_time_step) and args.c2_time_step > 0):
                raise InputError("--c2-time-step", f"must be a positive number of seconds, got {args.c2_time_step}")
            attrs["c2_time_step_s"] = args.c2_time_step * stack.size / MAP_SIZE
        c2_min = np.empty(n)
        c2_max = np.empty(n)
        with DatasetWriter(args.out, n, **attrs) as w:
            for i in range(n):
                raw = check_map(args.maps, stack.read(i), f"map {i}", upper_triangle=args.upper_triangle)
                m, c2_min[i], c2_max[i] = prepare_map(raw, size=MAP_SIZE, diagonal_fix=args.diagonal_fix,
                                                      upper_triangle=args.upper_triangle)
                w.write_maps(int(position[i]), m[None])
            w.set_meta(time=time[order], sector=sector[order], phi=None if phi is None else phi[order],
                       q=q[order], source=source[order], c2_min=c2_min[order], c2_max=c2_max[order])
            if rheo is not None:
                w.set_rheology(**rheo[0])
    return args.out, n


# --------------------------------------------------------------------------- published
def ingest_published(args) -> tuple[Path, int]:
    data = read_published(args.folder)
    _check_out(args.out, [data["latents_path"]])
    rheo = _rheology(args, data["rheology_path"], DEFAULT_RHEOLOGY_OFFSET_S)
    n = data["latents"].shape[0]
    attrs = _dataset_attrs(args, "ainerd-published", SECTOR_WIDTH_DEG, N_SECTORS,
                           f"ingest published: {Path(args.folder).resolve().name} ({data['latents_path'].name},"
                           f" sector.npy, start_time_s.npy; Horwath et al., Nat. Commun. 2024, "
                           f"doi 10.5281/zenodo.8101899){_rheology_note(rheo)}")
    with DatasetWriter(args.out, n, has_maps=False, **attrs) as w:
        w.set_meta(time=data["time"], sector=data["sector"], source=data["source"])
        w.set_latents(data["latents"])
        if rheo is not None:
            w.set_rheology(**rheo[0])
    return args.out, n


KINDS = {"aps": ingest_aps, "stack": ingest_stack, "published": ingest_published}


def run(args) -> int:
    out, n = KINDS[args.kind](args)
    print(f"wrote {out}: {n} {'maps' if args.kind != 'published' else 'rows (latents only)'}", file=sys.stdout)
    return 0
