"""'/' overview: every dataset of the data folder, its size, provenance, source kind, whether
maps exist, the state of its precomputation (which results, timings), and links to every page."""
from __future__ import annotations

import datetime as _dt

import dash_bootstrap_components as dbc
import numpy as np
from dash import dcc, html

PATH = "/"
TITLE = "Overview"
ORDER = 0
REQUIRES: tuple[str, ...] = ()

_GROUPS = (("clusters", ("labels", "labels_k", "kmeans/", "algorithms/", "stability/", "order_feature")),
           ("latent map", ("latent", "umap", "flow_share/", "sector_class", "dynamics_score")),
           ("tables", ("tables/", "stress_minima/")),
           ("similarity", ("similarity/",)),
           ("model", ("model/",)))


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _precompute_state(entry) -> html.Span:
    if not entry.has_results:
        return html.Span("not precomputed", className="badge bg-warning text-dark precompute-state")
    k = entry.k
    return html.Span(f"precomputed: {len(entry.result_names())} arrays" + (f", k = {k}" if k else ""),
                     className="badge bg-success precompute-state")


def _timings(entry):
    """The precompute's measured total (never a sum: stages and their parts overlap)."""
    t = entry.timings
    if t.total is None and not t.stages:
        return html.Span("—", className="text-muted")
    total = t.total if t.total is not None else sum(t.stages.values())
    detail = ", ".join(f"{k} {v:.1f} s" for k, v in t.stages.items())
    return html.Span(f"{total:.1f} s", title=detail, className="timings")


def _timing_rows(entry) -> list:
    t = entry.timings
    rows = []
    for stage, seconds in t.stages.items():
        rows.append(html.Tr([html.Td(stage), html.Td(f"{seconds:.2f} s")]))
        rows += [html.Tr([html.Td(f"\u2003{part}", className="text-muted"), html.Td(f"{v:.2f} s", className="text-muted")])
                 for part, v in t.parts.get(stage, {}).items()]
    if t.total is not None:
        rows.append(html.Tr([html.Td(html.B("total")), html.Td(html.B(f"{t.total:.2f} s"))], className="timings-total"))
    return rows


def _page_links(ctx, entry):
    return html.Div([dcc.Link(p.TITLE, href=ctx.services.href(p.PATH, entry.id), className="me-2 small")
                     for p in ctx.services.pages if p.PATH != PATH], className="page-links")


def _row(ctx, entry):
    if entry.error:
        return html.Tr([html.Td(entry.path.name), html.Td(f"cannot be read: {entry.error}", colSpan=7,
                                                          className="text-danger")])
    a = entry.attrs
    maps = ("yes" if entry.has_maps else "latents only")
    selected = entry.id == ctx.dataset_id
    return html.Tr([
        html.Td([dcc.Link(entry.id, href=ctx.services.href(PATH, entry.id), className="fw-semibold"),
                 html.Div(a.get("title", ""), className="small text-muted")]),
        html.Td(a.get("source_kind", "?")),
        html.Td(f"{entry.n_maps:,}"),
        html.Td(maps, className="has-maps"),
        html.Td("yes" if entry.has_rheology else "no"),
        html.Td(_size(entry.size_bytes)),
        html.Td([_precompute_state(entry), html.Div(_timings(entry), className="small")]),
        html.Td(_page_links(ctx, entry)),
    ], className="table-active" if selected else None, id={"type": "overview-row", "index": entry.id})


def _detail(ctx, entry):
    a = entry.attrs
    created = a.get("created_utc", "")
    rows = [("file", str(entry.path.name)), ("title", a.get("title", "")), ("source kind", a.get("source_kind", "")),
            ("created (UTC)", created), ("provenance", a.get("provenance", "") or "—"),
            ("maps", f"{entry.n_maps:,}" + ("" if entry.has_maps else " (latents only, no C2 maps)")),
            ("flow axis", f"{a.get('flow_axis_deg', '?')} deg"),
            ("sectors", f"{a.get('n_sectors', '?')} of {a.get('sector_width_deg', '?')} deg"),
            ("time points", str(np.unique(entry.meta["time"]).size) if entry.meta else "?"),
            ("rheology", f"{len(entry.rheology['time'])} rows" if entry.has_rheology else "none"),
            ("ground truth", ", ".join(sorted(entry.truth)) if entry.truth else "none")]
    ra = entry.result_attrs
    if entry.has_results:
        rows += [("chosen k", ra.get("k", "?")), ("suggested k", ra.get("suggested_k", "—")),
                 ("k rule", ra.get("k_rule", "—"))]
    names = entry.result_names()
    groups = []
    for title, prefixes in _GROUPS:
        have = [n for n in names if n.startswith(prefixes)]
        groups.append(html.Li([html.B(f"{title}: "), ", ".join(have) if have else html.I("none")]))
    timing_rows = _timing_rows(entry)
    return dbc.Card([
        dbc.CardHeader(html.Span(f"Dataset {entry.id}", className="fw-semibold")),
        dbc.CardBody(dbc.Row([
            dbc.Col(dbc.Table(html.Tbody([html.Tr([html.Th(k, className="fw-normal text-muted"), html.Td(str(v))])
                                          for k, v in rows]), size="sm"), md=6),
            dbc.Col([html.H6("Precomputed results"),
                     html.Ul(groups, className="small") if names else
                     html.P("Not precomputed yet: run `python -m ainerd_core precompute "
                            f"{entry.path.name}`.", className="text-warning"),
                     html.H6("Precompute timings") if timing_rows else None,
                     dbc.Table(html.Tbody(timing_rows), size="sm", className="small") if timing_rows else None],
                    md=6)]))], className="mb-3", id="overview-detail")


def layout(ctx):
    entries = ctx.datasets
    if not entries:
        return html.Div([html.H3("AI-NERD explorer"),
                         dbc.Alert(f"No datasets in {ctx.services.config.data_dir}: add .h5 files "
                                   "(python -m ainerd_core simulate / ingest, then precompute).", color="warning")])
    head = html.Thead(html.Tr([html.Th(h) for h in ("dataset", "source", "maps", "C2 maps", "rheology", "size",
                                                    "precomputation", "pages")]))
    table = dbc.Table([head, html.Tbody([_row(ctx, e) for e in entries])], hover=True, size="sm",
                      responsive=True, id="overview-table")
    intro = html.P(["Rheo-XPCS two-time correlation maps, clustered in the autoencoder's latent space "
                    "(AI-NERD, Horwath et al. 2024). Pick a dataset, then a view: the ",
                    html.B("timeline"), " (stress over cluster histograms, Fig. 3A-B), the ",
                    html.B("sectors"), " heatmap (Fig. 3C) or the ", html.B("latent map"),
                    " (Fig. 3D, Suppl. Fig. 4)."], className="text-muted")
    return html.Div([html.H3("Datasets"), intro, table,
                     _detail(ctx, ctx.dataset) if ctx.dataset is not None else None,
                     html.Small(f"as of {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
                                className="text-muted")], id="overview-page")


def register_callbacks(app, services) -> None:  # the overview is static
    return None
