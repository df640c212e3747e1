"""Rheometer logs -> ``time`` (s, XPCS clock), ``shear_stress`` (Pa), ``shear_rate`` (1/s),
``viscosity`` (Pa s).

Two layouts are understood:

``csv``
    A comma-separated file with one header row, as ``rheology.csv`` of the published E031
    folder (``shear_rate,shear_stress,viscosity,torque,time_hr,time_min,time_sec,time,...``).
    Columns are found by name (``time``/``time_s``/``elapsed_time``, ``shear_stress``/
    ``stress``, ``shear_rate``/``rate``, ``viscosity``/``eta``; case, spaces and dashes do not
    matter). A unit may follow the name in brackets (``shear_stress [kPa]``); without one SI
    units are assumed. The split clock columns ``time_hr``/``time_min``/``time_sec`` are not used.
``rheocompass``
    An Anton Paar RheoCompass text export: tab-separated, usually UTF-16 with a byte-order
    mark, some header rows (``Project:``, ``Test:``, ``Result:``...), then per interval a
    column-name row (``Point No.``, ``Time``, ``Shear Rate``, ``Shear Stress``, ``Viscosity``,
    ...), a units row (``[s]``, ``[1/s]``, ``[Pa]``, ``[Pa·s]``, ``[mPa·s]``, ``[min]``...) and
    data rows, possibly with a decimal comma (``1,25E+03``). Several intervals are
    concatenated; if a ``Total Time``/``Global Time`` column exists it is used, otherwise
    ``Time``, and if the time restarts in a new interval that interval is placed after the
    previous one (the interval clock is assumed to restart at 0).

``auto`` picks ``rheocompass`` for UTF-16 files and for tab-separated text, else ``csv``.

Clock: the rheometer's clock is not the XPCS clock (time 0 = shear cessation). The reader adds
``offset`` seconds: ``t_xpcs = t_rheometer + offset``. For the published E031 log the shear
stops at rheometer time ~200 s, so the offset there is -200 s (see :mod:`.published`).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from ..errors import InputError

FORMATS = ("auto", "csv", "rheocompass")

_TIME_NAMES = ("total_time", "global_time", "time_total", "time", "time_s", "elapsed_time", "time_elapsed",
               "t")
_FIELDS = {
    "shear_stress": ("shear_stress", "stress", "tau"),
    "shear_rate": ("shear_rate", "rate", "gamma_dot", "shear_rate_gamma_dot"),
    "viscosity": ("viscosity", "eta", "apparent_viscosity", "dynamic_viscosity"),
}

# unit -> factor to SI; keys have brackets, spaces, '·', '*' and '.' removed; case matters (mPa/MPa)
_UNITS = {
    "time": {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "hr": 3600.0},
    "shear_stress": {"": 1.0, "Pa": 1.0, "mPa": 1e-3, "kPa": 1e3, "MPa": 1e6, "GPa": 1e9,
                     "N/m^2": 1.0, "N/m2": 1.0},
    "shear_rate": {"": 1.0, "1/s": 1.0, "s^-1": 1.0, "s-1": 1.0, "s⁻¹": 1.0, "/s": 1.0, "1/min": 1 / 60.0,
                   "Hz": 1.0},
    "viscosity": {"": 1.0, "Pas": 1.0, "mPas": 1e-3, "kPas": 1e3, "MPas": 1e6, "cP": 1e-3, "P": 0.1,
                  "Poise": 0.1, "cPoise": 1e-3},
}


def _norm_name(name: str) -> tuple[str, str]:
    """'Shear Stress [kPa]' -> ('shear_stress', 'kPa')."""
    name = name.strip().strip('"')
    unit = ""
    m = re.search(r"[\[(]([^\])]*)[\])]\s*$", name)
    if m:
        unit = m.group(1)
        name = name[:m.start()]
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return key, unit


def _norm_unit(unit: str) -> str:
    return re.sub(r"[\s\[\]()·•⋅*.]", "", unit or "")


def _factor(path, field: str, column: str, unit: str) -> float:
    table = _UNITS[field]
    u = _norm_unit(unit)
    if u in table:
        return table[u]
    raise InputError(path, f"column {column!r}: unknown unit {unit!r} for {field.replace('_', ' ')}")


def _number(cell: str) -> float:
    """Parse a number with a decimal point or a decimal comma; '' -> NaN; ValueError otherwise."""
    s = cell.strip().replace("\u00a0", "").replace(" ", "")
    if s == "":
        return np.nan
    if "," in s:
        if "." in s and s.rfind(".") > s.rfind(","):
            s = s.replace(",", "")  # 1,234.5
        else:
            s = s.replace(".", "").replace(",", ".")  # 1.234,5 or 1,5E+03
    return float(s)


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(path, "starts with a UTF-16 byte-order mark but is not valid UTF-16") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw[:4096]:
        raise InputError(path, "contains NUL bytes: wrong encoding (UTF-16 without a byte-order mark?)"
                               " - export as UTF-16 with BOM or UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 or UTF-16 text (wrong encoding; byte {exc.start}"
                               f" is 0x{raw[exc.start]:02x}) - re-export as UTF-8 or UTF-16") from None


def _pick_columns(path, names: list[str], units: list[str]) -> dict[str, tuple[int, float]]:
    """Map the four fields to (column index, unit factor)."""
    keys = [_norm_name(n) for n in names]
    found: dict[str, tuple[int, float]] = {}
    for pref in _TIME_NAMES:
        idx = [i for i, (k, _) in enumerate(keys) if k == pref]
        if idx:
            i = idx[0]
            found["time"] = (i, _factor(path, "time", names[i], units[i] or keys[i][1]))
            break
    for field, cands in _FIELDS.items():
        for cand in cands:
            idx = [i for i, (k, _) in enumerate(keys) if k == cand]
            if idx:
                i = idx[0]
                found[field] = (i, _factor(path, field, names[i], units[i] or keys[i][1]))
                break
    for need in ("time", "shear_stress"):
        if need not in found:
            shown = ", ".join(n.strip() for n in names if n.strip()) or "none"
            raise InputError(path, f"no {need.replace('_', ' ')} column (columns: {shown})")
    return found


def _columns_from_rows(path, rows: list[tuple[int, list[str]]], cols: dict[str, tuple[int, float]]):
    out = {f: [] for f in cols}
    for lineno, row in rows:
        vals = {}
        for field, (i, factor) in cols.items():
            cell = row[i] if i < len(row) else ""
            try:
                vals[field] = _number(cell) * factor
            except ValueError:
                what = field.replace("_", " ")
                raise InputError(path, f"line {lineno}: {what} {cell.strip()!r} is not a number") from None
        if np.isnan(vals["time"]) and np.isnan(vals["shear_stress"]):
            continue  # a blank row
        for field in ("time", "shear_stress"):
            if not np.isfinite(vals[field]):
                raise InputError(path, f"line {lineno}: {field.replace('_', ' ')} is missing, NaN or infinite")
        for field, v in vals.items():
            out[field].append(v)
    return {f: np.asarray(v, dtype=np.float64) for f, v in out.items()}


def _parse_csv(path, text: str):
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text))
    rows = [(i + 1, r) for i, r in enumerate(reader)]
    rows = [(i, r) for i, r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(path, "the rheology file is empty")
    header = rows[0][1]
    if len(header) < 2:
        raise InputError(path, f"not a comma-separated rheology log (header {lines[0][:60]!r})")
    cols = _pick_columns(path, header, [""] * len(header))
    if len(rows) < 2:
        raise InputError(path, "the rheology file has a header but no data rows")
    return _columns_from_rows(path, rows[1:], cols)


def _is_units_row(cells: list[str]) -> bool:
    nonempty = [c.strip() for c in cells if c.strip()]
    if not nonempty:
        return False
    return all(c.startswith("[") or c.startswith("(") for c in nonempty) or \
        all(_norm_unit(c) in set().union(*_UNITS.values()) for c in nonempty)


def _parse_rheocompass(path, text: str):
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise InputError(path, "the rheology file is empty")
    table = [line.split("\t") for line in lines]
    blocks = []
    i = 0
    while i < len(table):
        keys = [_norm_name(c)[0] for c in table[i]]
        has_time = any(k in _TIME_NAMES for k in keys)
        has_stress = any(k in _FIELDS["shear_stress"] for k in keys)
        if not (has_time and has_stress):
            i += 1
            continue
        names = table[i]
        units = [""] * len(names)
        j = i + 1
        if j < len(table) and _is_units_row(table[j]):
            units = [(table[j][k] if k < len(table[j]) else "") for k in range(len(names))]
            j += 1
        cols = _pick_columns(path, names, units)
        ti = cols["time"][0]
        rows = []
        while j < len(table):
            row = table[j]
            cell = row[ti] if ti < len(row) else ""
            try:
                _number(cell)
            except ValueError:
                break  # the next interval's header, or trailing text
            if not any(c.strip() for c in row):
                j += 1
                if rows:
                    break
                continue
            rows.append((j + 1, row))
            j += 1
        blocks.append(_columns_from_rows(path, rows, cols))
        i = j
    if not blocks:
        raise InputError(path, "no RheoCompass table found (need a header row with 'Time' and 'Shear Stress')")
    # concatenate intervals; put an interval whose clock restarts after the previous one
    out: dict[str, list[np.ndarray]] = {}
    last_end = None
    fields = set().union(*blocks)
    for b in blocks:
        if b["time"].size == 0:
            continue
        t = b["time"]
        if last_end is not None and t[0] < last_end:
            t = t + last_end
        last_end = t[-1]
        b = {**b, "time": t}
        for f in fields:
            out.setdefault(f, []).append(b.get(f, np.full(t.size, np.nan)))
    if not out:
        raise InputError(path, "the RheoCompass table has no data rows")
    return {f: np.concatenate(v) for f, v in out.items()}


def detect_format(text: str) -> str:
    head = [line for line in text.splitlines()[:50] if line.strip()]
    if head and any("\t" in line for line in head):
        return "rheocompass"
    return "csv"


def read_rheology(path, fmt: str = "auto", offset: float = 0.0) -> dict[str, np.ndarray]:
    """Read a rheometer log; returns ``time`` (s, XPCS clock = rheometer time + ``offset``),
    ``shear_stress`` (Pa), ``shear_rate`` (1/s), ``viscosity`` (Pa s), each (M,) float64
    (NaN where the log has no such column). Raises :class:`InputError` naming the file."""
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(path, f"unknown rheology format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a rheology file")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(path, "the rheology file is empty")
    utf16 = raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff")
    text = _decode(path, raw)
    if fmt == "auto":
        fmt = "rheocompass" if utf16 else detect_format(text)
    cols = _parse_rheocompass(path, text) if fmt == "rheocompass" else _parse_csv(path, text)
    n = cols["time"].size
    if n == 0:
        raise InputError(path, "the rheology file has no data rows")
    out = {"time": cols["time"] + float(offset), "shear_stress": cols["shear_stress"]}
    for f in ("shear_rate", "viscosity"):
        out[f] = cols.get(f, np.full(n, np.nan))
    return out
