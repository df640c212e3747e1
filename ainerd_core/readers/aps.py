"""APS 8-ID-I two-time result files (boost_corr output), one file per time point.

Current (NeXus) layout, as read here::

    /xpcs/twotime/correlation_map/c2_00001, c2_00002, ...   float32 N x N, upper triangle
                                                            incl. diagonal stored, lower = 0
    /xpcs/twotime/processed_bins        1-based dynamic ROI labels; c2_k <-> processed_bins[k-1]
    /xpcs/qmap/dynamic_num_pts          [n_q, n_phi]
    /xpcs/qmap/dynamic_index_mapping    label - 1 -> flat (q, phi) grid index f
    /xpcs/qmap/dynamic_v_list_dim0      q of grid row f // n_phi   (1/Angstrom)
    /xpcs/qmap/dynamic_v_list_dim1      phi of grid column f % n_phi (degrees)
    /entry/instrument/detector_1/frame_time             s
    /xpcs/twotime/config/stride_frame, avg_frame         (1 if absent)
    /entry/start_time                                   ISO 8601 text

Empty (q, phi) cells get no label, so labels are not a plain grid enumeration: the mapping is
always looked up, never assumed.

Older (legacy) layout::

    /exchange/C2T_all/g2_00001, ...     same upper-triangle maps; g2_k <-> dynamic bin k
    /xpcs/dqlist, /xpcs/dphilist        q and phi of bin k at index k - 1
    /measurement/instrument/detector/exposure_period    s per frame (else exposure_time)
    /xpcs/stride_frames, /xpcs/avg_frames               (1 if absent)
    /measurement/instrument/source_begin/datetime       start time (else /entry/start_time)

q index: in the current layout the q row of the grid (``f // n_phi``); in the legacy layout the
rank of the bin's q among the file's distinct q values.

Time per C2 pixel = frame_time x stride x avg; after resampling an n-pixel map to 256 it is
that x n / 256 (stored as ``c2_time_step_s``).
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError

NEXUS_C2 = "/xpcs/twotime/correlation_map"
NEXUS_BINS = "/xpcs/twotime/processed_bins"
NEXUS_QMAP = "/xpcs/qmap"
NEXUS_FRAME_TIME = "/entry/instrument/detector_1/frame_time"
NEXUS_CONFIG = "/xpcs/twotime/config"
NEXUS_START = "/entry/start_time"
LEGACY_C2 = "/exchange/C2T_all"
LEGACY_Q = "/xpcs/dqlist"
LEGACY_PHI = "/xpcs/dphilist"
LEGACY_START = "/measurement/instrument/source_begin/datetime"

_C2_NAME = re.compile(r"^c2_(\d+)$")
_G2_NAME = re.compile(r"^g2_(\d+)$")


@dataclass
class MapEntry:
    dataset: str          # full HDF5 path of the map
    label: int            # dynamic ROI label (1-based)
    q: float
    phi: float
    q_index: int


@dataclass
class FileInfo:
    path: Path
    layout: str                      # 'nexus' or 'legacy'
    size: int                        # pixels per side of the stored maps
    entries: list[MapEntry] = field(default_factory=list)
    pixel_time_s: float | None = None
    start_text: str | None = None     # start time as stored (ISO 8601), None if absent or empty
    start_key: str | None = None

    @property
    def start_time(self) -> _dt.datetime | None:
        """The start time parsed (raises InputError if it is not ISO 8601); None if absent."""
        if self.start_text is None:
            return None
        return parse_time_text(self.start_text, f"{self.path}: {self.start_key}")


def open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None


def _read(path: Path, f: h5py.File, key: str, required: bool = True):
    if key not in f:
        if required:
            raise InputError(path, f"missing dataset {key}")
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(path, f"{key} is a group, expected a dataset")
    try:
        return obj[()]
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(path, f"cannot read {key} (corrupt file?): {exc}") from None


def _scalar(path: Path, f: h5py.File, key: str, required: bool = False) -> float | None:
    val = _read(path, f, key, required)
    if val is None:
        return None
    arr = np.asarray(val).ravel()
    if arr.size != 1 or arr.dtype.kind not in "fiu":
        raise InputError(path, f"{key} should be one number, got {arr.size} values of type {arr.dtype}")
    x = float(arr[0])
    if not np.isfinite(x):
        raise InputError(path, f"{key} is NaN or infinite")
    return x


def _vector(path: Path, f: h5py.File, key: str) -> np.ndarray:
    arr = np.asarray(_read(path, f, key)).ravel()
    if arr.dtype.kind not in "fiu":
        raise InputError(path, f"{key} is not numeric (dtype {arr.dtype})")
    return arr


def _text(value) -> str | None:
    """Stored text (bytes, str, or a 1-element array of either) -> str; None if absent/empty."""
    v = value
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else ""
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode("utf-8", "replace")
    text = str(v).strip().strip("\x00").strip()
    return text or None


def parse_time_text(value, what) -> _dt.datetime:
    """ISO 8601 text -> datetime; ``what`` names the source in the error."""
    text = _text(value) or ""
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(what, f"start time {text!r} is not an ISO 8601 timestamp") from None


def seconds_between(start: _dt.datetime, ref: _dt.datetime) -> float:
    """``start - ref`` in seconds; a naive timestamp is taken in the other one's time zone."""
    if (start.tzinfo is None) != (ref.tzinfo is None):
        if start.tzinfo is None:
            start = start.replace(tzinfo=ref.tzinfo)
        else:
            ref = ref.replace(tzinfo=start.tzinfo)
    return (start - ref).total_seconds()


def _map_names(path: Path, group: h5py.Group, pattern: re.Pattern) -> list[tuple[int, str]]:
    names = []
    for name in group:
        m = pattern.match(name)
        if m:
            names.append((int(m.group(1)), name))
    if not names:
        raise InputError(path, f"{group.name} holds no maps named like {pattern.pattern[1:-1]}")
    return sorted(names)


def _map_size(path: Path, dset, key: str) -> int:
    if not isinstance(dset, h5py.Dataset):
        raise InputError(path, f"{key} is a group, expected a C2 map")
    if dset.ndim != 2:
        raise InputError(path, f"{key} must be a 2-D map, got shape {dset.shape}")
    if dset.shape[0] != dset.shape[1]:
        raise InputError(path, f"{key} is not square: {dset.shape[0]} x {dset.shape[1]}")
    return int(dset.shape[0])


def _scan_nexus(path: Path, f: h5py.File) -> FileInfo:
    group = f[NEXUS_C2]
    names = _map_names(path, group, _C2_NAME)
    bins = _vector(path, f, NEXUS_BINS).astype(np.int64)
    num_pts = _vector(path, f, f"{NEXUS_QMAP}/dynamic_num_pts").astype(np.int64)
    if num_pts.size != 2 or np.any(num_pts < 1):
        raise InputError(path, f"{NEXUS_QMAP}/dynamic_num_pts should be [n_q, n_phi], got {num_pts.tolist()}")
    n_q, n_phi = (int(x) for x in num_pts)
    mapping = _vector(path, f, f"{NEXUS_QMAP}/dynamic_index_mapping").astype(np.int64)
    qv = _vector(path, f, f"{NEXUS_QMAP}/dynamic_v_list_dim0").astype(np.float64)
    pv = _vector(path, f, f"{NEXUS_QMAP}/dynamic_v_list_dim1").astype(np.float64)
    if qv.size < n_q or pv.size < n_phi:
        raise InputError(path, f"q-map lists have {qv.size} q and {pv.size} phi values, dynamic_num_pts says"
                               f" {n_q} x {n_phi}")
    info = FileInfo(path, "nexus", 0)
    sizes = set()
    for k, name in names:
        key = f"{NEXUS_C2}/{name}"
        sizes.add(_map_size(path, group[name], key))
        if k > bins.size:
            raise InputError(path, f"{key} has no entry in {NEXUS_BINS} ({bins.size} entries)")
        label = int(bins[k - 1])
        if not 1 <= label <= mapping.size:
            raise InputError(path, f"ROI label {label} of {key} is outside 1..{mapping.size}"
                                   f" of {NEXUS_QMAP}/dynamic_index_mapping")
        flat = int(mapping[label - 1])
        if not 0 <= flat < n_q * n_phi:
            raise InputError(path, f"ROI label {label} maps to grid cell {flat}, outside the"
                                   f" {n_q} x {n_phi} q-phi grid")
        iq, ip = divmod(flat, n_phi)
        info.entries.append(MapEntry(key, label, float(qv[iq]), float(pv[ip]), iq))
    if len(sizes) > 1:
        raise InputError(path, f"maps of different sizes in one file: {sorted(sizes)}")
    info.size = sizes.pop()
    frame_time = _scalar(path, f, NEXUS_FRAME_TIME)
    stride = _scalar(path, f, f"{NEXUS_CONFIG}/stride_frame") or 1.0
    avg = _scalar(path, f, f"{NEXUS_CONFIG}/avg_frame") or 1.0
    info.pixel_time_s = None if frame_time is None else frame_time * stride * avg
    info.start_text, info.start_key = _text(_read(path, f, NEXUS_START, required=False)), NEXUS_START
    return info


def _scan_legacy(path: Path, f: h5py.File) -> FileInfo:
    group = f[LEGACY_C2]
    names = _map_names(path, group, _G2_NAME)
    qlist = _vector(path, f, LEGACY_Q).astype(np.float64)
    philist = _vector(path, f, LEGACY_PHI).astype(np.float64)
    if qlist.size != philist.size:
        raise InputError(path, f"{LEGACY_Q} has {qlist.size} entries but {LEGACY_PHI} has {philist.size}")
    distinct_q = np.unique(qlist)
    info = FileInfo(path, "legacy", 0)
    sizes = set()
    for k, name in names:
        key = f"{LEGACY_C2}/{name}"
        sizes.add(_map_size(path, group[name], key))
        if not 1 <= k <= qlist.size:
            raise InputError(path, f"{key} has no q/phi: {LEGACY_Q} has {qlist.size} entries")
        q = float(qlist[k - 1])
        info.entries.append(MapEntry(key, k, q, float(philist[k - 1]), int(np.searchsorted(distinct_q, q))))
    if len(sizes) > 1:
        raise InputError(path, f"maps of different sizes in one file: {sorted(sizes)}")
    info.size = sizes.pop()
    frame_time = (_scalar(path, f, "/measurement/instrument/detector/exposure_period")
                  or _scalar(path, f, "/measurement/instrument/detector/exposure_time"))
    stride = _scalar(path, f, "/xpcs/stride_frames") or 1.0
    avg = _scalar(path, f, "/xpcs/avg_frames") or 1.0
    info.pixel_time_s = None if frame_time is None else frame_time * stride * avg
    for key in (LEGACY_START, NEXUS_START):
        text = _text(_read(path, f, key, required=False))
        if text is not None:
            info.start_text, info.start_key = text, key
            break
    return info


def scan_file(path) -> FileInfo:
    """Read one result file's layout and small metadata (no maps)."""
    path = Path(path)
    with open_h5(path) as f:
        try:
            if NEXUS_C2 in f:
                return _scan_nexus(path, f)
            if LEGACY_C2 in f:
                return _scan_legacy(path, f)
        except (OSError, KeyError, RuntimeError) as exc:  # a damaged object header or link
            raise InputError(path, f"cannot read the file's structure (corrupt?): {exc}") from None
    raise InputError(path, f"not an APS two-time result file: missing {NEXUS_C2} (or the older {LEGACY_C2})")


def read_map(path: Path, f: h5py.File, key: str) -> np.ndarray:
    """One stored (upper-triangle) map, as float64."""
    try:
        return np.asarray(f[key][()], dtype=np.float64)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"cannot read {key} (truncated or corrupt?): {exc}") from None


def read_time_table(path) -> dict[str, float]:
    """CSV ``file,time_s`` (header required; ``time`` accepted for ``time_s``) -> {file name: s}."""
    from . import read_csv_rows

    path = Path(path)
    rows = [r for _, r in read_csv_rows(path)]
    if not rows:
        raise InputError(path, "the time table is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "file" not in header or not ({"time_s", "time"} & set(header)):
        raise InputError(path, f"the time table needs columns 'file' and 'time_s', got {rows[0]}")
    fi = header.index("file")
    ti = header.index("time_s") if "time_s" in header else header.index("time")
    table: dict[str, float] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        try:
            t = float(row[ti])
        except (ValueError, IndexError):
            cell = row[ti] if ti < len(row) else ""
            raise InputError(path, f"line {lineno}: time {cell!r} is not a number") from None
        if not np.isfinite(t):
            raise InputError(path, f"line {lineno}: time is NaN or infinite")
        name = Path(row[fi].strip()).name
        if name in table:
            raise InputError(path, f"line {lineno}: {name} is listed twice")
        table[name] = t
    if not table:
        raise InputError(path, "the time table has no rows")
    return table
