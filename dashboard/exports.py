"""CSV exports of the figures' data: pure functions, data in, CSV text out.

- :func:`figure_to_csv` any plotly figure (a ``go.Figure`` or the JSON dict the browser holds,
  base64 typed arrays included) in long format: one row per data point of every trace.
- :func:`counts_csv` Figure 3B's table: time and maps per cluster (wide), optional extra
  columns per time (the fitted rate per time point).
- :func:`sector_time_csv` Figure 3C's matrix in long format (sector, class, time, label, map).
- :func:`points_csv` a list of maps with their metadata (the latent map, a lasso selection).
"""
from __future__ import annotations

import csv
import io
from typing import Mapping, Sequence

import numpy as np

from .figures.common import as_array


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else repr(float(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _write(header: Sequence[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_fmt(v) for v in row])
    return buf.getvalue()


def figure_to_csv(figure) -> str:
    """Every trace's points as rows ``trace, name, type, point, x, y, z, customdata``.

    Heatmaps are flattened to one row per cell (x, y from the axes, z the value); shapes
    (e.g. vertical minima lines) become rows of type ``shape`` with x = x0.
    """
    fig = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else dict(figure)
    rows = []
    for t, trace in enumerate(fig.get("data") or []):
        kind = trace.get("type", "scatter")
        name = trace.get("name", "")
        if kind == "heatmap":
            z = as_array(trace.get("z"))
            if z.ndim != 2:
                continue
            xs = as_array(trace.get("x")) if trace.get("x") is not None else np.arange(z.shape[1])
            ys = as_array(trace.get("y")) if trace.get("y") is not None else np.arange(z.shape[0])
            cd = trace.get("customdata")
            cd = as_array(cd) if cd is not None else None
            for i in range(z.shape[0]):
                for j in range(z.shape[1]):
                    rows.append((t, name, kind, i * z.shape[1] + j, xs[j], ys[i], z[i, j],
                                 None if cd is None or cd.ndim != 2 else cd[i, j]))
            continue
        x = as_array(trace.get("x")) if trace.get("x") is not None else None
        y = as_array(trace.get("y")) if trace.get("y") is not None else None
        n = max(len(x) if x is not None else 0, len(y) if y is not None else 0)
        cd = trace.get("customdata")
        cd = as_array(cd) if cd is not None else None
        for i in range(n):
            xv = x[i] if x is not None and i < len(x) else None
            yv = y[i] if y is not None and i < len(y) else None
            if xv is None and yv is None:
                continue
            c = cd[i] if cd is not None and i < len(cd) else None
            if isinstance(c, np.ndarray):
                c = " ".join(_fmt(v) for v in c)
            rows.append((t, name, kind, i, xv, yv, None, c))
    for s, shape in enumerate((fig.get("layout") or {}).get("shapes") or []):
        rows.append(("", shape.get("name") or "shape", "shape", s, shape.get("x0"), shape.get("y0"), None, None))
    return _write(("trace", "name", "type", "point", "x", "y", "z", "customdata"), rows)


def counts_csv(times, counts, minima=None, extra_columns: Mapping[str, Sequence] | None = None) -> str:
    """Wide table: ``time_s, n_maps, cluster_0 .. cluster_{k-1}, stress_minimum`` (1 if a
    stress minimum is the nearest time point, else 0), then ``extra_columns`` (name -> (T,)
    values, e.g. the fitted rate per time point; NaN is written empty)."""
    times = np.asarray(times, dtype=float)
    counts = np.asarray(counts)
    near = np.zeros(times.size, dtype=int)
    for m in np.asarray([] if minima is None else minima, dtype=float):
        if times.size:
            near[int(np.argmin(np.abs(times - m)))] = 1
    extra = {k: np.asarray(v) for k, v in (extra_columns or {}).items()}
    for name, v in extra.items():
        if len(v) != times.size:
            raise ValueError(f"column {name} has {len(v)} values for {times.size} times")
    header = ["time_s", "n_maps"] + [f"cluster_{c}" for c in range(counts.shape[1])] + ["stress_minimum"] + list(extra)
    rows = ([t, int(row.sum()), *[int(v) for v in row], near[i], *[v[i] for v in extra.values()]]
            for i, (t, row) in enumerate(zip(times, counts)))
    return _write(header, rows)


def sector_time_csv(times, sectors, labels, sector_classes: Mapping | None = None, map_index=None,
                    map_columns: Mapping[str, Sequence] | None = None) -> str:
    """Long table ``sector, class, time_s, label, map_index`` (label -1 / empty map: no map),
    then ``map_columns`` (name -> (N,) per-map values, e.g. the fitted parameters) of each
    cell's map (empty where the cell has no map)."""
    times = np.asarray(times, dtype=float)
    labels = np.asarray(labels)
    classes = sector_classes or {}
    mi = None if map_index is None else np.asarray(map_index)
    extra = {k: np.asarray(v) for k, v in (map_columns or {}).items()} if mi is not None else {}
    rows = []
    for i, s in enumerate(np.asarray(sectors)):
        for j, t in enumerate(times):
            idx = None if mi is None or mi[i, j] < 0 else int(mi[i, j])
            rows.append((int(s), classes.get(int(s), ""), t, int(labels[i, j]), idx,
                         *[(None if idx is None else v[idx]) for v in extra.values()]))
    return _write(("sector", "class", "time_s", "label", "map_index", *extra), rows)


def points_csv(columns: Mapping[str, Sequence], indices=None) -> str:
    """Rows of maps: ``columns`` name -> (N,) array (must include what you want, e.g.
    map_index, time_s, sector, class, cluster, umap_x, umap_y); ``indices`` picks rows."""
    names = list(columns)
    arrays = [np.asarray(columns[c]) for c in names]
    idx = np.arange(len(arrays[0]) if arrays else 0) if indices is None else np.asarray(indices, dtype=int)
    return _write(names, ([a[i] for a in arrays] for i in idx))


#: rheology columns of a timeline CSV: column -> (series name, unit)
RHEOLOGY_SERIES = {"shear_stress": ("shear stress", "Pa"), "shear_rate": ("shear rate", "1/s"),
                   "viscosity": ("viscosity", "Pa s")}


def timeline_long_csv(times, counts, *, rheology: Mapping | None = None, minima=None, clustering: str = "",
                      fits: Mapping[str, tuple] | None = None) -> str:
    """Everything the timeline draws, long format ``series, unit, time_s, value, clustering``.

    Parameters
    ----------
    times : (T,) float
        Time points of the histogram, s.
    counts : (T, C) int or None
        Maps per cluster; series ``"cluster c"`` (unit ``maps``).
    rheology : dict of (M,) arrays, optional
        ``time`` and any of shear_stress (Pa), shear_rate (1/s), viscosity (Pa s): every
        stored row, whether or not its panel is switched on.
    minima : (P,) float, optional
        Times of the stress minima (series ``"stress minimum"``, value = the time).
    fits : {series: (time (T,), value (T,), unit)}, optional
        Fitted quantities drawn on the timeline (e.g. a median fitted relaxation rate).
    """
    rows = []
    times = np.asarray([] if times is None else times, dtype=float)
    if counts is not None:
        counts = np.asarray(counts)
        for c in range(counts.shape[1]):
            rows += [(f"cluster {c}", "maps", t, int(v), clustering) for t, v in zip(times, counts[:, c])]
        rows += [("maps at this time", "maps", t, int(v), "") for t, v in zip(times, counts.sum(1))]
    for col, (name, unit) in RHEOLOGY_SERIES.items():
        if rheology and np.size(rheology.get(col, [])) > 0:
            rows += [(name, unit, t, v, "") for t, v in zip(np.asarray(rheology["time"], dtype=float),
                                                            np.asarray(rheology[col], dtype=float))]
    for m in np.asarray([] if minima is None else minima, dtype=float):
        rows.append(("stress minimum", "s", m, m, ""))
    for name, (ft, fv, unit) in (fits or {}).items():
        rows += [(name, unit, t, v, "") for t, v in zip(np.asarray(ft, dtype=float), np.asarray(fv, dtype=float))]
    return _write(("series", "unit", "time_s", "value", "clustering"), rows)


def timeline_csv(entry, counts, clustering: str = "", fit_columns: Mapping[str, Sequence] | None = None,
                 fit_unit: str = "") -> str:
    """:func:`timeline_long_csv` of a dataset entry: its rheology and minima, and
    ``fit_columns`` (name -> (T,) values per time point, e.g. the fitted-rate medians)."""
    rh = entry.rheology if entry.has_rheology else None
    times = entry.result("tables/times")
    fits = {}
    for name, values in (fit_columns or {}).items():
        unit = "fits" if name.startswith("n_fits") else fit_unit
        fits[name] = (times, np.asarray(values, dtype=float), unit)
    return timeline_long_csv(times, counts, rheology=rh,
                             minima=entry.result("stress_minima/time") if rh else None,
                             clustering=clustering, fits=fits)


def csv_text(columns, rows) -> str:
    """A header and rows as CSV text, values as Python writes them."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
