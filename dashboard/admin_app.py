"""The organiser's Dash app at ``/admin/``: studies, expert links, progress and results.

- ``/admin/``: create a study (a dataset of ``config.data_dir``; target = a map index or an
  uploaded ``.npy`` resampled and normalised to 256 x 256), the list of studies with progress per
  expert, revoke a link, add an expert, close a study. Links are shown once, at creation (only
  token hashes are stored).
- ``/admin/studies/<id>``: accuracy vs neighbour rank per method (per expert and averaged,
  smoothed, with bootstrap bands), the rank where the average falls below 50 %, the paired
  permutation test, Fleiss' kappa and Krippendorff's alpha, and the exports
  ``/admin/export/<id>/<file>`` (CSV/JSON, with the full rating log).

Access: ``dashboard.auth`` lets only the admin role reach ``/admin``; :func:`_admin_guard`
checks it again here (defence in depth, covering Dash's internal routes of this app and the
exports).
"""
from __future__ import annotations

import base64
import io
import re

import dash
import flask
import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ainerd_core.errors import AinerdError
from ainerd_core.studies import StudyStore, expert_link, prepare_target

PREFIX = "/admin/"
_EXPORT = re.compile(r"^/admin/export/(\d+)/([a-z_]+\.(?:csv|json))$")
_COLORS = {"latent": "#1f77b4", "raw": "#d62728"}


def _is_admin(config) -> bool:
    from .auth import current_role

    try:
        return current_role() == "admin"
    except Exception:  # noqa: BLE001 - a broken session is not admin
        return False


def _table(header, rows, **kw):
    return html.Table([html.Thead(html.Tr([html.Th(h, style={"padding": "2px 10px", "textAlign": "left"})
                                           for h in header])),
                       html.Tbody([html.Tr([html.Td(c, style={"padding": "2px 10px", "borderTop": "1px solid #ddd"})
                                            for c in r]) for r in rows])],
                      style={"borderCollapse": "collapse", "margin": "0.5em 0"}, className="admin-table", **kw)


def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def init_admin(server: flask.Flask, config) -> dash.Dash:
    store = StudyStore(config.database_url)

    def _admin_guard():
        path = flask.request.path
        if not (path == "/admin" or path.startswith(PREFIX)):
            return None
        if not _is_admin(config):
            if flask.request.method == "GET" and "_dash" not in path and "text/html" in flask.request.headers.get("Accept", ""):
                return flask.redirect("/login?next=" + path, code=302)
            resp = flask.jsonify(error="admin only")
            resp.status_code = 403
            return resp
        m = _EXPORT.match(path)
        if m:
            study_id, name = int(m.group(1)), m.group(2)
            if store.study_summary(study_id) is None:
                flask.abort(404)
            tables = store.export_tables(study_id)
            if name not in tables:
                flask.abort(404)
            mime = "text/csv" if name.endswith(".csv") else "application/json"
            resp = flask.Response(tables[name], mimetype=mime)
            resp.headers["Content-Disposition"] = f'attachment; filename="study{study_id}_{name}"'
            resp.headers["Cache-Control"] = "no-store"
            return resp
        return None

    server.before_request(_admin_guard)

    app = dash.Dash(__name__, server=server, url_base_pathname=PREFIX, title="AI-NERD studies",
                    assets_folder=str(__import__("pathlib").Path(__file__).parent / "_admin_assets_none"),
                    include_assets_files=False, suppress_callback_exceptions=True)

    app.layout = html.Div(style={"fontFamily": "sans-serif", "margin": "1em 2em"}, children=[
        dcc.Location(id="admin-url"),
        html.Div([html.A("Studies", href=PREFIX), html.Span(" | "), html.A("Explorer", href="/")]),
        html.Div(id="admin-page"),
    ])

    # ---------------------------------------------------------------- pages
    def datasets():
        d = config.data_dir
        return sorted(p.name for p in d.glob("*.h5")) if d.exists() else []

    def studies_table():
        rows = []
        for st in store.list_studies():
            experts = []
            for e in st["experts"]:
                experts.append(html.Div([
                    f"{e['name']} (id {e['id']}): {e['rated']} / {e['total']} [{e['state']}] ",
                    html.Button("revoke", id={"type": "admin-revoke", "index": e["id"]}, n_clicks=0,
                                disabled=e["state"] != "active"),
                ]))
            rows.append((st["id"], html.A(st["title"], href=f"{PREFIX}studies/{st['id']}"), st["status"],
                         f"{st['n_candidates']} images, {st['n_per_method']} per method ({', '.join(st['methods'])})",
                         html.Div(experts),
                         html.Button("close", id={"type": "admin-close", "index": st["id"]}, n_clicks=0,
                                     disabled=st["status"] != "open")))
        if not rows:
            return html.P("No studies yet.")
        return _table(["id", "study", "status", "candidates", "experts (rated / total)", ""], rows, id="admin-studies")

    def home():
        opts = [{"label": n, "value": n} for n in datasets()]
        return html.Div([
            html.H1("Blind expert evaluation: studies"),
            html.H2("New study"),
            html.Div([
                html.Label("Dataset "), dcc.Dropdown(id="admin-dataset", options=opts,
                                                     value=opts[0]["value"] if opts else None, clearable=False,
                                                     style={"width": "24em", "display": "inline-block"}),
            ]),
            html.Div([html.Label("Target map index "), dcc.Input(id="admin-target-index", type="number", min=0, step=1,
                                                                           style={"width": "8em"}),
                      html.Span(" or upload a target .npy: "),
                      dcc.Upload(html.Button("Choose .npy"), id="admin-target-upload", multiple=False,
                                 style={"display": "inline-block"}),
                      html.Span(id="admin-upload-name")]),
            html.Div([html.Label("Neighbours per method "), dcc.Input(id="admin-n", type="number", value=300, min=1,
                                                                             style={"width": "8em"})]),
            html.Div([html.Label("Experts (comma-separated) "), dcc.Input(id="admin-experts", type="text",
                                                                          style={"width": "24em"})]),
            html.Div([html.Label("Methods "), dcc.Checklist(id="admin-methods", options=["latent", "raw"],
                                                            value=["latent", "raw"], inline=True)]),
            html.Div([html.Label("Links expire after days (empty = never) "),
                      dcc.Input(id="admin-expires", type="number", min=0, style={"width": "8em"})]),
            html.Button("Create study", id="admin-create", n_clicks=0),
            dcc.Loading(html.Pre(id="admin-create-result", style={"whiteSpace": "pre-wrap"})),
            html.H2("Studies"),
            html.Div([html.Label("Add expert to study "), dcc.Input(id="admin-add-study", type="number", min=1,
                                                                             style={"width": "8em"}),
                      dcc.Input(id="admin-add-name", type="text", placeholder="name", style={"width": "16em"}),
                      html.Button("Add", id="admin-add", n_clicks=0)]),
            html.Pre(id="admin-action-result"),
            html.Div(studies_table(), id="admin-studies-box"),
        ])

    def study_page(study_id: int):
        summary = store.study_summary(study_id)
        if summary is None:
            return html.P(f"No study {study_id}.")
        res = store.analyse(study_id)
        fig = go.Figure()
        for m, r in res["methods"].items():
            color = _COLORS.get(m, "#555")
            x = list(range(1, r["n_ranks"] + 1))
            lo = [np.nan if v is None else v for v in r["band_lo"]]
            hi = [np.nan if v is None else v for v in r["band_hi"]]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", line={"width": 0},
                                     fillcolor=color, opacity=0.18, name=f"{m}: 95 % band", hoverinfo="skip"))
            for name, ex in zip(res["experts"], r["experts"]):
                fig.add_trace(go.Scatter(x=x, y=ex["smoothed"], mode="lines", line={"color": color, "dash": "dot",
                                                                                    "width": 1},
                                         name=f"{m}: {name}"))
            fig.add_trace(go.Scatter(x=x, y=r["average"], mode="markers", marker={"color": color, "size": 4},
                                     name=f"{m}: average per rank"))
            fig.add_trace(go.Scatter(x=x, y=r["smoothed"], mode="lines", line={"color": color, "width": 3},
                                     name=f"{m}: average, smoothed"))
        fig.add_hline(y=0.5, line={"dash": "dash", "color": "#888"})
        fig.update_layout(xaxis_title="neighbour rank", yaxis_title="accuracy (fraction 'similar')",
                          yaxis_range=[-0.05, 1.05], height=480, margin={"t": 30})
        method_rows = []
        for m, r in res["methods"].items():
            ci = r["crossing_interval"]
            method_rows.append((m, r["n_ranks"], _fmt(r["mean_accuracy"]), _fmt(r["rank_below_50"]),
                                _fmt(r["last_rank_at_or_above_50"]), "-" if not ci else f"{ci[0]} .. {ci[1]}",
                                _fmt(r["agreement"]["fleiss_kappa"]), _fmt(r["agreement"]["krippendorff_alpha"])))
        expert_rows = []
        for m, r in res["methods"].items():
            for name, ex in zip(res["experts"], r["experts"]):
                expert_rows.append((m, name, ex["n_rated"], _fmt(ex["mean_accuracy"]), _fmt(ex["rank_below_50"]),
                                    _fmt(ex["last_rank_at_or_above_50"])))
        tests = [(f"{t['a']} - {t['b']}", _fmt(t["statistic"]), _fmt(t["p_value"], 4), t["n_pairs"],
                  "exact" if t["exact"] else f"Monte Carlo, {t['n_permutations']}") for t in res["permutation_tests"]]
        agree = res.get("agreement", {})
        files = ["accuracy.csv", "ratings.csv", "rating_events.csv", "candidates.csv", "analysis.json", "log.json"]
        return html.Div([
            html.H1(f"Study {study_id}: {summary['title']}"),
            html.P(f"Status {summary['status']}; dataset {summary['dataset']}; target {summary['target']}; "
                   f"{summary['n_candidates']} distinct images; experts: "
                   + ", ".join(f"{e['name']} ({e['rated']} / {e['total']})" for e in summary["experts"])),
            dcc.Graph(id="admin-accuracy", figure=fig),
            html.H2("Accuracy and the 50 % rank"),
            _table(["method", "ranks", "mean accuracy", "first rank < 50 % (smoothed)", "last rank >= 50 %",
                    "95 % interval (expert bootstrap)", "Fleiss kappa", "Krippendorff alpha"], method_rows,
                   id="admin-method-table"),
            _table(["method", "expert", "rated", "mean accuracy", "first rank < 50 %", "last rank >= 50 %"],
                   expert_rows, id="admin-expert-table"),
            html.H2("Paired permutation test"),
            _table(["methods (A - B)", "mean difference", "p (two-sided)", "rank pairs", "kind"], tests,
                   id="admin-perm-table"),
            html.H2("Agreement over all distinct images"),
            html.P(f"Fleiss' kappa {_fmt(agree.get('fleiss_kappa'))}, Krippendorff's alpha (nominal) "
                   f"{_fmt(agree.get('krippendorff_alpha'))}", id="admin-agreement"),
            html.H2("Definitions"),
            html.Ul([html.Li(f"{k}: {v}") for k, v in res["definitions"].items()]),
            html.H2("Export"),
            html.Ul([html.Li(html.A(f, href=f"/admin/export/{study_id}/{f}", id=f"admin-export-{f.split('.')[0]}"))
                     for f in files]),
        ])

    @app.callback(Output("admin-page", "children"), Input("admin-url", "pathname"))
    def route(pathname):
        m = re.match(r"^/admin/studies/(\d+)/?$", pathname or "")
        if m:
            return study_page(int(m.group(1)))
        return home()

    # ---------------------------------------------------------------- actions
    @app.callback(Output("admin-upload-name", "children"), Input("admin-target-upload", "filename"),
                  prevent_initial_call=True)
    def upload_name(name):
        return f" {name}" if name else ""

    @app.callback(Output("admin-create-result", "children"), Output("admin-studies-box", "children", allow_duplicate=True),
                  Input("admin-create", "n_clicks"),
                  State("admin-dataset", "value"), State("admin-target-index", "value"),
                  State("admin-target-upload", "contents"), State("admin-target-upload", "filename"),
                  State("admin-n", "value"), State("admin-experts", "value"), State("admin-methods", "value"),
                  State("admin-expires", "value"), prevent_initial_call=True)
    def create(_n, dataset, index, contents, filename, n, experts, methods, expires):
        if not dataset or dataset not in datasets():
            return "error: choose a dataset", dash.no_update
        if contents:
            try:
                raw = base64.b64decode(contents.split(",", 1)[1])
                target = prepare_target(np.load(io.BytesIO(raw), allow_pickle=False), filename or "upload")
            except (ValueError, OSError, IndexError) as exc:
                return f"error: {filename}: not a readable .npy array ({exc})", dash.no_update
            except AinerdError as exc:
                return f"error: {exc}", dash.no_update
            desc = f"file {filename}"
        elif index is not None:
            target, desc = int(index), None
        else:
            return "error: give a target map index or upload a .npy", dash.no_update
        names = [e.strip() for e in (experts or "").split(",") if e.strip()]
        if not names:
            return "error: give at least one expert name", dash.no_update
        try:
            study, tokens = store.create_study(config.data_dir / dataset, target, n=int(n or 300), experts=names,
                                               methods=methods or [], target_desc=desc,
                                               expires_days=float(expires) if expires else None)
        except AinerdError as exc:
            return f"error: {exc}", dash.no_update
        base = flask.request.host_url.rstrip("/")
        lines = [f"Study {study.id} created ({study.n_per_method} per method). Send each expert their link "
                 "(shown only now; only hashes are stored):"]
        lines += [f"{e.name}: {expert_link(base, t)}" for e, t in tokens]
        return "\n".join(lines), studies_table()

    @app.callback(Output("admin-action-result", "children"), Output("admin-studies-box", "children"),
                  Input({"type": "admin-revoke", "index": ALL}, "n_clicks"),
                  Input({"type": "admin-close", "index": ALL}, "n_clicks"), Input("admin-add", "n_clicks"),
                  State("admin-add-study", "value"), State("admin-add-name", "value"), prevent_initial_call=True)
    def act(_r, _c, _a, add_study, add_name):
        trig = ctx.triggered_id
        if not ctx.triggered or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        try:
            if trig == "admin-add":
                expert, token = store.add_expert(int(add_study or 0), add_name or "")
                msg = f"{expert.name}: {expert_link(flask.request.host_url.rstrip('/'), token)} (shown only now)"
            elif trig["type"] == "admin-revoke":
                e = store.revoke(trig["index"])
                msg = f"expert {e.id} ({e.name}) revoked"
            else:
                st = store.close_study(trig["index"])
                msg = f"study {st.id} closed"
        except AinerdError as exc:
            msg = f"error: {exc}"
        return msg, studies_table()

    return app
