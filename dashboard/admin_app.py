"""The organiser's Dash app at ``/admin/``: studies, expert links, progress, results, audit log.

- ``/admin/``: where blinding stands (datasets withheld from the explorer while their study is
  open, warnings where it is at risk), create a study (a background job with a progress bar;
  a dataset of ``config.data_dir``; target = a map index or an uploaded ``.npy``), the list of
  studies with answered/total per expert, revoke / restore an expert, close / reopen a study,
  add an expert, "log out everywhere", and the audit log. Links are shown once, at creation
  (only token hashes are stored), each with a copy button.
- ``/admin/studies/<id>``: accuracy vs neighbour rank per method (per expert and averaged,
  smoothed, bootstrap bands only where the window holds enough answers), completeness
  (answered/total per expert and method), the 50 % rank, the paired permutation test, Fleiss'
  kappa and Krippendorff's alpha - each withheld with its reason below the minimums of
  :mod:`ainerd_core.evaluation` - and the exports ``/admin/export/<id>/<file>``.

Destructive actions (revoke, restore, close, reopen, log out everywhere) take two steps on the
server: the button only asks; the server answers with a confirmation dialog and a token signed
with ``AINERD_SECRET_KEY`` naming the action, its target and this login session (valid 5
minutes); only "Confirm" with a valid token acts. Every action is written to ``audit_events``.

Access: ``dashboard.auth`` lets only the admin role reach ``/admin``; :func:`admin_only` (the
access rule as a decorator) checks it again here for every request under ``/admin`` (defence in
depth, covering Dash's internal routes of this app and the exports).

Layout of this module: the access rule and the export route; the study results page (pure
functions of :meth:`StudyStore.analyse`'s answer); :class:`AdminViews`, the page pieces bound
to one study store; one ``_register_*`` function per feature's callbacks; :func:`init_admin`
wires them together.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import dash
import dash_bootstrap_components as dbc
import flask
import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ainerd_core.errors import AinerdError
from ainerd_core.studies import StudyStore, expert_link, prepare_target
from ainerd_core.study_candidates import DEFAULT_METHODS, METHODS

from . import auth

PREFIX = "/admin/"
_EXPORT = re.compile(r"^/admin/export/(\d+)/([a-z_]+\.(?:csv|json))$")
_STUDY_PATH = re.compile(r"^/admin/studies/(\d{1,9})/?$")
_COLORS = {"latent": "#1f77b4", "raw": "#d62728", "smoothed": "#9467bd"}
EXPORT_FILES = ("accuracy.csv", "ratings.csv", "rating_events.csv", "candidates.csv", "analysis.json", "log.json")

CONFIRM_SALT = "ainerd-admin-confirm"
CONFIRM_MAX_AGE_S = 300
STYLESHEET = "/assets/00-bootstrap-5.3.3.min.css"  # the explorer's (same look)


# =========================================================================== access rule
def _is_admin(config=None) -> bool:
    try:
        return auth.current_role() == "admin"
    except Exception:  # noqa: BLE001 - a broken session is not admin
        return False


def _refusal() -> flask.Response:
    """A browser page navigation goes to the login; anything else (Dash's requests) gets 403."""
    path = flask.request.path
    if flask.request.method == "GET" and "_dash" not in path and "text/html" in flask.request.headers.get("Accept", ""):
        return flask.redirect("/login?next=" + path, code=302)
    resp = flask.jsonify(error="admin only")
    resp.status_code = 403
    return resp


def admin_only(view):
    """Decorator: ``view`` runs for the admin only; anyone else gets :func:`_refusal`."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if not _is_admin():
            return _refusal()
        return view(*args, **kwargs)
    return guarded


def _export_response(store: StudyStore, study_id: int, name: str) -> flask.Response:
    """One export file of a study as a download (404 for an unknown study or file)."""
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


def _install_guard(server: flask.Flask, store: StudyStore) -> None:
    """Every request under ``/admin`` passes :func:`admin_only`; the exports are answered here."""
    @admin_only
    def admin_request():
        m = _EXPORT.match(flask.request.path)
        return _export_response(store, int(m.group(1)), m.group(2)) if m else None

    def guard():
        path = flask.request.path
        if path == "/admin" or path.startswith(PREFIX):
            return admin_request()
        return None

    server.before_request(guard)


# =========================================================================== small components
def _table(header, rows, **kw):
    return dbc.Table([html.Thead(html.Tr([html.Th(h) for h in header])),
                      html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows])],
                     size="sm", striped=True, hover=True, className="admin-table align-middle", **kw)


def _fmt(v, nd=3, why: str = ""):
    """A number, or "-" with the reason right beside it (no unexplained dash)."""
    if v is None:
        return html.Span(["-", html.Small(f" ({why})" if why else " (no answers yet)", className="text-muted")])
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _card(title, body, **kw):
    return dbc.Card([dbc.CardHeader(title, className="fw-semibold"), dbc.CardBody(body)], className="mb-3", **kw)


def _link_with_copy(label: str, link: str, key: str):
    """An expert link with a copy button (dcc.Clipboard copies the text of the code element)."""
    cid = f"admin-link-{key}"
    return html.Div([html.Span(f"{label}: ", className="me-1"), html.Code(link, id=cid, className="me-2"),
                     dcc.Clipboard(target_id=cid, title="copy the link", className="d-inline-block",
                                   style={"cursor": "pointer", "fontSize": "1.1rem"})],
                    className="admin-link d-flex align-items-center mb-1")


def _error(text):
    return dbc.Alert(f"error: {text}", color="danger", className="p-2 mb-0 admin-create-error")


def _action_button(label, action, target, color="outline-danger"):
    """A button that asks for a destructive action (the server answers with a confirmation)."""
    return dbc.Button(label, id={"type": "admin-action", "action": action, "target": str(target)}, n_clicks=0,
                      size="sm", color=color.replace("outline-", ""), outline=color.startswith("outline"),
                      className="ms-2")


# =========================================================================== study results page
def _supported_runs(supported, lo):
    """(start, stop) of each run of ranks whose band is supported and defined."""
    start = None
    for k in range(len(supported) + 1):
        inside = k < len(supported) and supported[k] and not np.isnan(lo[k])
        if inside and start is None:
            start = k
        if not inside and start is not None:
            yield start, k
            start = None


def accuracy_figure(res: dict) -> go.Figure:
    """Accuracy vs neighbour rank per method: bands, per-expert curves, averages, the 50 % line."""
    fig = go.Figure()
    for m, r in res["methods"].items():
        color = _COLORS.get(m, "#555")
        x = list(range(1, r["n_ranks"] + 1))
        lo = [np.nan if v is None else v for v in r["band_lo"]]
        hi = [np.nan if v is None else v for v in r["band_hi"]]
        # one band segment per run of supported ranks: no fill across unanswered ranks
        sup = [bool(v) for v in r.get("supported", [True] * len(x))]
        for start, stop in _supported_runs(sup, lo):
            xs = x[start:stop]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi[start:stop] + lo[start:stop][::-1], fill="toself",
                                     line={"width": 0}, fillcolor=color, opacity=0.18, hoverinfo="skip",
                                     name=f"{m}: 95 % band", legendgroup=f"{m}-band",
                                     showlegend=start == next(i for i, v in enumerate(sup) if v)))
        for name, ex in zip(res["experts"], r["experts"]):
            fig.add_trace(go.Scatter(x=x, y=ex["smoothed"], mode="lines", line={"color": color, "dash": "dot",
                                                                                "width": 1},
                                     name=f"{m}: {name}"))
        fig.add_trace(go.Scatter(x=x, y=r["average"], mode="markers", marker={"color": color, "size": 4},
                                 name=f"{m}: average per rank"))
        sm = [v if s else None for v, s in zip(r["smoothed"], sup)]
        fig.add_trace(go.Scatter(x=x, y=sm, mode="lines", line={"color": color, "width": 3},
                                 name=f"{m}: average, smoothed", connectgaps=False))
    fig.add_hline(y=0.5, line={"dash": "dash", "color": "#888"})
    fig.update_layout(xaxis_title="neighbour rank", yaxis_title="accuracy (fraction 'similar')",
                      yaxis_range=[-0.05, 1.05], height=480, margin={"t": 30}, template="plotly_white")
    return fig


def completeness_alert(res: dict):
    """How many answers the statistics rest on, and the minimums below which a value is withheld."""
    comp = res.get("completeness", {})
    answered, total = comp.get("answered", 0), comp.get("total", 0)
    frac = answered / total if total else 0.0
    mins = res.get("minimums", {})
    return dbc.Alert([
        html.B(f"{answered} of {total} answers ({100 * frac:.1f} %). "),
        "Statistics below rest on the answers given so far; a value shown as '-' comes with its reason. "
        f"Minimums: {mins.get('window_answers')} answers in a rank's smoothing window for the smoothed curve, its "
        "band and the 50 % rank; "
        f"{mins.get('experts_for_interval')} experts for its interval; {mins.get('rank_pairs')} rank pairs for the "
        f"permutation test; {mins.get('agreement_images')} images for agreement."],
        color="success" if frac >= 0.999 else "warning", id="admin-completeness")


def _method_rows(res: dict) -> list:
    rows = []
    for m, r in res["methods"].items():
        ci = r["crossing_interval"]
        agr = r["agreement"]
        rows.append((m, f"{r['answered']} / {r['total']}", _fmt(r["mean_accuracy"]),
                     _fmt(r["rank_below_50"], why=r.get("crossing_note") or "never below 50 %"),
                     _fmt(r["last_rank_at_or_above_50"], why=r.get("crossing_note", "")),
                     f"{ci[0]} .. {ci[1]}" if ci else _fmt(None, why=r.get("crossing_interval_note", "")),
                     _fmt(agr.get("fleiss_kappa"), why=agr.get("fleiss_note", "")),
                     _fmt(agr.get("krippendorff_alpha"), why=agr.get("krippendorff_note", ""))))
    return rows


def _expert_rows(res: dict) -> list:
    rows = []
    for m, r in res["methods"].items():
        for name, ex in zip(res["experts"], r["experts"]):
            rows.append((m, name, f"{ex['n_rated']} / {ex.get('n_total', r['n_ranks'])}",
                         _fmt(ex["mean_accuracy"]),
                         _fmt(ex["rank_below_50"], why=ex.get("crossing_note") or "never below 50 %"),
                         _fmt(ex["last_rank_at_or_above_50"], why=ex.get("crossing_note", ""))))
    return rows


def _test_rows(res: dict) -> list:
    return [(f"{t['a']} - {t['b']}", _fmt(t["statistic"], why=t.get("note", "")),
             _fmt(t["p_value"], 4, why=t.get("note", "")), t["n_pairs"],
             "exact" if t["exact"] else f"Monte Carlo, {t['n_permutations']}") for t in res["permutation_tests"]]


def study_page(store: StudyStore, study_id: int):
    """``/admin/studies/<id>``: the study's results (see the module docstring)."""
    summary = store.study_summary(study_id)
    if summary is None:
        return dbc.Alert(f"No study {study_id}.", color="warning")
    res = store.analyse(study_id)
    agree = res.get("agreement", {})
    return html.Div([
        html.H2(f"Study {study_id}: {summary['title']}"),
        html.P(f"Status {summary['status']}; dataset {summary['dataset']}; target {summary['target']}; "
               f"{summary['n_candidates']} distinct images; experts: "
               + ", ".join(f"{e['name']} ({e['rated']} / {e['total']})" for e in summary["experts"])),
        completeness_alert(res),
        dcc.Graph(id="admin-accuracy", figure=accuracy_figure(res)),
        html.H4("Accuracy and the 50 % rank"),
        _table(["method", "answered / total", "mean accuracy", "first rank < 50 % (smoothed)", "last rank >= 50 %",
                "95 % interval (expert bootstrap)", "Fleiss kappa", "Krippendorff alpha"], _method_rows(res),
               id="admin-method-table"),
        _table(["method", "expert", "answered / total", "mean accuracy", "first rank < 50 %", "last rank >= 50 %"],
               _expert_rows(res), id="admin-expert-table"),
        html.H4("Paired permutation test"),
        _table(["methods (A - B)", "mean difference", "p (two-sided)", "rank pairs", "kind"], _test_rows(res),
               id="admin-perm-table"),
        html.H4("Agreement over all distinct images"),
        html.P(["Fleiss' kappa ", _fmt(agree.get("fleiss_kappa"), why=agree.get("fleiss_note", "")),
                ", Krippendorff's alpha (nominal) ",
                _fmt(agree.get("krippendorff_alpha"), why=agree.get("krippendorff_note", ""))], id="admin-agreement"),
        html.H4("Definitions"),
        html.Ul([html.Li(f"{k}: {v}") for k, v in res["definitions"].items()]),
        html.H4("Export"),
        html.Ul([html.Li(html.A(f, href=f"/admin/export/{study_id}/{f}", id=f"admin-export-{f.split('.')[0]}"))
                 for f in EXPORT_FILES]),
    ])


# =========================================================================== pages
class AdminViews:
    """The admin pages' pieces, bound to the server (blinding report), config and study store."""

    def __init__(self, server: flask.Flask, config, store: StudyStore):
        self.server, self.config, self.store = server, config, store

    def datasets(self) -> list[str]:
        d = self.config.data_dir
        return sorted(p.name for p in d.glob("*.h5")) if d.exists() else []

    # ---------------------------------------------------------------- shell
    @staticmethod
    def navbar():
        logout = html.Form([
            dcc.Input(type="hidden", name="csrf_token", value=auth.csrf_token(), id="admin-logout-csrf"),
            dbc.Button("Log out", type="submit", color="light", outline=True, size="sm", id="admin-logout"),
        ], method="POST", action="/logout", className="ms-3 mb-0", id="admin-logout-form")
        return dbc.Navbar(dbc.Container([
            dbc.NavbarBrand("AI-NERD · studies", href=PREFIX, className="fw-bold"),
            dbc.Nav([dbc.NavItem(dbc.NavLink("Studies", href=PREFIX, id="admin-nav-studies")),
                     dbc.NavItem(dbc.NavLink("Explorer", href="/", external_link=True, id="admin-nav-explorer"))],
                    navbar=True, className="me-auto"),
            html.Small(auth.actor(), className="text-light"),
            logout,
        ], fluid=True), color="dark", dark=True, className="mb-3")

    @staticmethod
    def confirm_modal():
        return dbc.Modal([
            dbc.ModalHeader(dbc.ModalTitle("Please confirm")),
            dbc.ModalBody(id="admin-confirm-text"),
            dbc.ModalFooter([dbc.Button("Cancel", id="admin-confirm-cancel", color="secondary", n_clicks=0),
                             dbc.Button("Confirm", id="admin-confirm-ok", color="danger", n_clicks=0)]),
        ], id="admin-confirm-modal", is_open=False)

    def layout(self):
        shell = [dcc.Location(id="admin-url"), dcc.Store(id="admin-confirm-token"), self.confirm_modal()]
        if not flask.has_request_context():
            return html.Div(shell + [html.Div(id="admin-page")])
        return html.Div(shell + [
            self.navbar(),
            dcc.Store(id="admin-base-url", data=flask.request.host_url.rstrip("/")),
            dcc.Store(id="admin-actor", data=auth.actor()),
            dbc.Container(html.Div(id="admin-page"), fluid=True, className="pb-4"),
        ])

    def route(self, pathname):
        m = _STUDY_PATH.match(pathname if isinstance(pathname, str) else "")
        if m:
            return study_page(self.store, int(m.group(1)))
        return self.home()

    # ---------------------------------------------------------------- home page
    def studies_table(self):
        rows = []
        for st in self.store.list_studies():
            experts = []
            for e in st["experts"]:
                btn = (_action_button("revoke", "revoke", e["id"]) if e["state"] == "active" else
                       _action_button("restore", "restore", e["id"], "outline-success") if e["state"] == "revoked"
                       else None)
                experts.append(html.Div([f"{e['name']} (id {e['id']}): {e['rated']} / {e['total']} answered ",
                                         dbc.Badge(e["state"], color={"active": "success", "revoked": "danger"}.get(
                                             e["state"], "secondary"), className="ms-1"), btn],
                                        className="mb-1"))
            toggle = (_action_button("close", "close", st["id"]) if st["status"] == "open"
                      else _action_button("reopen", "reopen", st["id"], "outline-success"))
            rows.append((st["id"], html.A(st["title"], href=f"{PREFIX}studies/{st['id']}"),
                         dbc.Badge(st["status"], color="success" if st["status"] == "open" else "secondary"),
                         f"{st['n_candidates']} images, {st['n_per_method']} per method ({', '.join(st['methods'])})",
                         html.Div(experts), toggle))
        if not rows:
            return html.P("No studies yet.")
        return _table(["id", "study", "status", "candidates", "experts (answered / total)", ""], rows,
                      id="admin-studies")

    def blinding_card(self):
        blinding = self.server.extensions.get("ainerd_blinding")
        if blinding is None:
            return None
        rep = blinding.report()
        items = []
        if rep["withheld"]:
            items.append(html.P(["Withheld from the explorer (viewers, anonymous users and expert browsers) while "
                                 "their study is open: ",
                                 html.B(", ".join(f"{d} (study {', '.join(map(str, s))})"
                                                  for d, s in sorted(rep["withheld"].items())))],
                                id="admin-withheld"))
        elif rep["n_open"]:
            items.append(html.P("No dataset of an open study is in the data folder."))
        else:
            items.append(html.P("No study is open: nothing is withheld."))
        items.append(html.P(rep["note"] + " Experts must not know the admin password.", className="text-muted small"))
        for w in rep["warnings"]:
            items.append(dbc.Alert(w, color="warning", className="p-2 mb-1 admin-blinding-warning"))
        return _card("Blinding", items, id="admin-blinding")

    def sessions_card(self):
        live = self.store.live_web_sessions()
        text = ", ".join(f"{n} {role}" for role, n in sorted(live.items())) or "none"
        return _card("Sessions", [html.Span(f"Live logins: {text}. ", id="admin-sessions"),
                                  _action_button("Log out everywhere", "logout-all", 0)])

    def audit_card(self):
        rows = [(e["utc"][:19].replace("T", " "), e["actor"], e["action"], e["study_id"] or "", e["expert_id"] or "",
                 e["detail"]) for e in self.store.audit_events(30)]
        body = _table(["UTC", "who", "action", "study", "expert", "detail"], rows, id="admin-audit") if rows \
            else html.P("Nothing yet.", id="admin-audit")
        return _card("Audit log (newest first)", body)

    def create_form(self):
        opts = [{"label": n, "value": n} for n in self.datasets()]
        return dbc.Form([
            dbc.Row([dbc.Label("Dataset", width=3), dbc.Col(dcc.Dropdown(id="admin-dataset", options=opts,
                                                                         value=opts[0]["value"] if opts else None,
                                                                         clearable=False))], className="mb-2"),
            dbc.Row([dbc.Label("Target map index", width=3),
                     dbc.Col(dbc.Input(id="admin-target-index", type="number", min=0, step=1), width=3),
                     dbc.Col([dcc.Upload(dbc.Button("or upload a target .npy", color="secondary", outline=True,
                                                    size="sm"), id="admin-target-upload", multiple=False,
                                         max_size=-1),
                              html.Small(id="admin-upload-name", className="ms-2")], className="d-flex")],
                    className="mb-2"),
            dbc.Row([dbc.Label("Neighbours per method", width=3),
                     dbc.Col(dbc.Input(id="admin-n", type="number", value=300, min=1), width=3)], className="mb-2"),
            dbc.Row([dbc.Label("Experts (comma-separated)", width=3),
                     dbc.Col(dbc.Input(id="admin-experts", type="text"))], className="mb-2"),
            dbc.Row([dbc.Label("Methods", width=3),
                     dbc.Col(dbc.Checklist(id="admin-methods", options=list(METHODS), value=list(DEFAULT_METHODS),
                                           inline=True))], className="mb-2"),
            dbc.Row([dbc.Label("Links expire after days (empty = never)", width=3),
                     dbc.Col(dbc.Input(id="admin-expires", type="number", min=0), width=3)], className="mb-2"),
            dbc.Button("Create study", id="admin-create", n_clicks=0, color="primary"),
            dbc.Progress(id="admin-create-progress", value=0, label="", className="my-2", style={"height": "1.2rem"}),
            dcc.Store(id="admin-upload-checked"),
            html.Div(id="admin-create-result"),
        ])

    def home(self):
        add = html.Div([dbc.InputGroup([dbc.InputGroupText("Add expert to study"),
                                        dbc.Input(id="admin-add-study", type="number", min=1),
                                        dbc.Input(id="admin-add-name", type="text", placeholder="name"),
                                        dbc.Button("Add", id="admin-add", n_clicks=0)], className="mb-2"),
                        html.Div(id="admin-add-result")])
        return html.Div([
            html.H2("Blind expert evaluation: studies"),
            self.blinding_card(),
            _card("New study", self.create_form()),
            _card("Studies", [add, html.Div(id="admin-action-result"),
                              html.Div(self.studies_table(), id="admin-studies-box")]),
            html.Div(self.sessions_card(), id="admin-sessions-box"),
            html.Div(self.audit_card(), id="admin-audit-box"),
        ])

    # ---------------------------------------------------------------- destructive actions
    def describe(self, action: str, target: int) -> str:
        """The confirmation question for ``action`` on ``target``; AinerdError for an unknown one."""
        store = self.store
        if action in ("revoke", "restore"):
            with store.session() as s:
                from ainerd_core.studies import Expert

                e = s.get(Expert, target)
            if e is None:
                raise AinerdError(None, f"no expert {target}")
            rated = next((x["rated"] for st in store.list_studies() for x in st["experts"] if x["id"] == target), 0)
            if action == "revoke":
                return (f"Revoke expert {target} ({e.name}, {rated} answers)? Their link stops working at once; "
                        "their answers are kept and you can restore the link later.")
            return f"Restore expert {target} ({e.name}, {rated} answers)? Their link works again."
        if action in ("close", "reopen"):
            st = store.study_summary(target)
            if st is None:
                raise AinerdError(None, f"no study {target}")
            if action == "close":
                return (f"Close study {target} ({st['title']})? All its links stop working and its dataset is "
                        "released to the explorer. You can reopen it.")
            return (f"Reopen study {target} ({st['title']})? Its links work again (unless revoked or expired) and "
                    "its dataset is withheld from the explorer again.")
        if action == "logout-all":
            return "End every viewer and admin login, this one included? Copied cookies stop working too."
        raise AinerdError(None, f"unknown action {action!r}")

    def apply(self, action, target, who: str) -> str:
        """Carry out a confirmed action, audited; returns what was done (AinerdError if nothing)."""
        store = self.store
        if action == "revoke":
            e = store.revoke(str(target))
            store.audit(who, "revoke", e.study_id, e.id, detail=e.name)
            return f"expert {e.id} ({e.name}) revoked"
        if action == "restore":
            e = store.restore(target)
            store.audit(who, "restore", e.study_id, e.id, detail=e.name)
            return f"expert {e.id} ({e.name}) restored"
        if action == "close":
            st = store.close_study(target)
            store.audit(who, "close", st.id)
            return f"study {st.id} closed"
        if action == "reopen":
            st = store.reopen(target)
            store.audit(who, "reopen", st.id)
            return f"study {st.id} reopened"
        if action == "logout-all":
            store.audit(who, "logout-all")
            n_ended = auth.end_all_sessions()
            return f"{n_ended} logins ended; log in again"
        raise AinerdError(None, f"unknown action {action!r}")


# =========================================================================== callbacks
def _register_routing(app, views: AdminViews) -> None:
    @app.callback(Output("admin-page", "children"), Input("admin-url", "pathname"))
    def route(pathname):
        return views.route(pathname)


def _study_request(views: AdminViews, dataset, index, contents, filename, n, experts, expires) -> dict:
    """The create form's values, checked: ``{"target", "desc", "names", "n", "expires_days"}``;
    ValueError with the message for the admin."""
    if not isinstance(dataset, str) or dataset not in views.datasets():
        raise ValueError("choose a dataset")
    if contents:
        from .validation import decode_upload, load_npy_bytes

        try:
            arr = load_npy_bytes(decode_upload(contents, filename), filename or "upload")
            target = prepare_target(arr, filename or "upload")
        except (ValueError, AinerdError) as exc:
            raise ValueError(str(exc)) from None
        desc = f"file {filename}"
    elif index is not None:
        try:
            target, desc = int(index), None
        except (TypeError, ValueError):
            raise ValueError("the target map index must be a whole number") from None
    else:
        raise ValueError("give a target map index or upload a .npy")
    names = [e.strip() for e in (experts if isinstance(experts, str) else "").split(",") if e.strip()]
    if not names:
        raise ValueError("give at least one expert name")
    try:
        n = int(n or 300)
        expires_days = float(expires) if expires not in (None, "") else None
    except (TypeError, ValueError):
        raise ValueError("neighbours per method and expiry must be numbers") from None
    return {"target": target, "desc": desc, "names": names, "n": n, "expires_days": expires_days}


def _register_create(app, views: AdminViews) -> None:
    """The target upload's browser-side check and the create-study background job."""
    from .validation import upload_check_js

    app.clientside_callback(upload_check_js(views.config), Output("admin-upload-checked", "data"),
                            Output("admin-upload-name", "children"), Input("admin-target-upload", "contents"),
                            State("admin-target-upload", "filename"), prevent_initial_call=True)

    @app.callback(Output("admin-create-result", "children"),
                  Output("admin-studies-box", "children", allow_duplicate=True),
                  Input("admin-create", "n_clicks"),
                  State("admin-dataset", "value"), State("admin-target-index", "value"),
                  State("admin-upload-checked", "data"), State("admin-target-upload", "filename"),
                  State("admin-n", "value"), State("admin-experts", "value"), State("admin-methods", "value"),
                  State("admin-expires", "value"), State("admin-base-url", "data"), State("admin-actor", "data"),
                  background=True, prevent_initial_call=True, interval=400,
                  progress=[Output("admin-create-progress", "value"), Output("admin-create-progress", "label")],
                  running=[(Output("admin-create", "disabled"), True, False)])
    def create(set_progress, _n, dataset, index, contents, filename, n, experts, methods, expires, base, actor):
        set_progress((0, ""))
        try:
            req = _study_request(views, dataset, index, contents, filename, n, experts, expires)
        except ValueError as exc:
            return _error(str(exc)), dash.no_update
        store = views.store
        try:
            study, tokens = store.create_study(views.config.data_dir / dataset, req["target"], n=req["n"],
                                               experts=req["names"],
                                               methods=methods if isinstance(methods, list) else [],
                                               target_desc=req["desc"], expires_days=req["expires_days"],
                                               progress=lambda pct, text: set_progress((pct, text)))
        except AinerdError as exc:
            set_progress((0, ""))
            return _error(str(exc)), dash.no_update
        store.audit(actor or "admin", "create", study.id, detail=f"{dataset}, {study.n_per_method} per method, "
                                                                 f"experts {', '.join(req['names'])}")
        set_progress((100, "done"))
        base = base if isinstance(base, str) and base.startswith("http") else ""
        body = [html.P(f"Study {study.id} created ({study.n_per_method} per method). Send each expert their link "
                       "(shown only now; only hashes are stored):", id="admin-create-done")]
        body += [_link_with_copy(e.name, expert_link(base, t), f"{study.id}-{e.id}") for e, t in tokens]
        return dbc.Alert(body, color="success", className="p-2 mb-0"), views.studies_table()


def _register_add_expert(app, views: AdminViews) -> None:
    """Adding an expert to a study (not destructive: no confirmation step)."""
    @app.callback(Output("admin-add-result", "children"), Output("admin-studies-box", "children", allow_duplicate=True),
                  Input("admin-add", "n_clicks"), State("admin-add-study", "value"), State("admin-add-name", "value"),
                  prevent_initial_call=True)
    def add(n, study_id, name):
        if not n:
            raise PreventUpdate
        try:
            expert, token = views.store.add_expert(int(study_id or 0), name if isinstance(name, str) else "")
        except (AinerdError, TypeError, ValueError) as exc:
            return _error(str(exc)), dash.no_update
        views.store.audit(auth.actor(), "add-expert", expert.study_id, expert.id, detail=expert.name)
        link = expert_link(flask.request.host_url.rstrip("/"), token)
        return (dbc.Alert([html.Small("shown only now"), _link_with_copy(expert.name, link, f"add-{expert.id}")],
                          color="success", className="p-2"), views.studies_table())


def _session_id() -> str:
    rec = auth.session_record()
    return rec["id"] if rec else ""


def _register_confirm(app, views: AdminViews, signer: URLSafeTimedSerializer) -> None:
    """Destructive actions in two server-side steps: ask (a signed token naming the action, its
    target and this login) and confirm (acts only on a valid token of this login)."""
    @app.callback(Output("admin-confirm-modal", "is_open"), Output("admin-confirm-text", "children"),
                  Output("admin-confirm-token", "data"),
                  Input({"type": "admin-action", "action": ALL, "target": ALL}, "n_clicks"),
                  Input("admin-confirm-cancel", "n_clicks"), prevent_initial_call=True)
    def ask(_clicks, _cancel):
        trig = ctx.triggered_id
        if trig == "admin-confirm-cancel" or not ctx.triggered or not ctx.triggered[0].get("value"):
            if trig == "admin-confirm-cancel":
                return False, "", None
            raise PreventUpdate
        action, target = trig["action"], int(trig["target"])
        try:
            text = views.describe(action, target)
        except AinerdError as exc:
            return True, f"error: {exc}", None
        token = signer.dumps({"a": action, "t": target, "s": _session_id()})
        return True, text, token

    @app.callback(Output("admin-confirm-modal", "is_open", allow_duplicate=True),
                  Output("admin-action-result", "children"),
                  Output("admin-studies-box", "children", allow_duplicate=True),
                  Output("admin-audit-box", "children"), Output("admin-sessions-box", "children"),
                  Input("admin-confirm-ok", "n_clicks"), State("admin-confirm-token", "data"),
                  prevent_initial_call=True)
    def confirm(n, token):
        if not n:
            raise PreventUpdate
        nu = dash.no_update
        try:
            order = signer.loads(token if isinstance(token, str) else "", max_age=CONFIRM_MAX_AGE_S)
        except BadSignature:
            return (False, dbc.Alert("Nothing done: the confirmation is missing or expired; click the action again.",
                                     color="warning", className="p-2"), nu, nu, nu)
        if not isinstance(order, dict) or order.get("s") != _session_id():
            return (False, dbc.Alert("Nothing done: this confirmation belongs to another login.", color="warning",
                                     className="p-2"), nu, nu, nu)
        try:
            msg = views.apply(order.get("a"), order.get("t"), auth.actor())
        except AinerdError as exc:
            return False, dbc.Alert(f"error: {exc}", color="danger", className="p-2"), nu, nu, nu
        return (False, dbc.Alert(msg, color="success", className="p-2", id="admin-action-done"),
                views.studies_table(), views.audit_card(), views.sessions_card())


# =========================================================================== the app
def init_admin(server: flask.Flask, config) -> dash.Dash:
    """Mount the admin Dash app at ``/admin/`` on ``server`` behind :func:`admin_only`."""
    from .background import make_background_manager

    store = StudyStore(config.database_url)
    _install_guard(server, store)
    app = dash.Dash(__name__, server=server, url_base_pathname=PREFIX, title="AI-NERD studies",
                    assets_folder=str(Path(__file__).parent / "_admin_assets_none"),
                    include_assets_files=False, suppress_callback_exceptions=True,
                    external_stylesheets=[STYLESHEET], background_callback_manager=make_background_manager(config),
                    update_title=None)
    views = AdminViews(server, config, store)
    app.layout = views.layout
    _register_routing(app, views)
    _register_create(app, views)
    _register_add_expert(app, views)
    _register_confirm(app, views, URLSafeTimedSerializer(config.secret_key, salt=CONFIRM_SALT))
    return app
