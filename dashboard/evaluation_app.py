"""The expert's blind evaluation app at ``/evaluate/`` (the link is the only credential).

``/evaluate/<token>`` checks the token (SHA-256 lookup; revoked, expired or closed studies get a
refusal page), stores the expert id in the signed Flask session and redirects to ``/evaluate/``
so the token leaves the address bar. The page shows the target and one candidate at a time in
the expert's own stored order, with buttons ``rate-similar``, ``rate-not-similar``,
``rate-back``, ``rate-next`` and keys S / D / Left / Right (``/evaluate/keys.js``).

Blinding, enforced here
-----------------------
- :func:`_gate` (``before_request``) answers every path under ``/evaluate/`` itself: Dash's
  ``_dash-layout``, ``_dash-dependencies`` and ``_reload-hash`` and the page need a valid
  expert session (403 otherwise); images need a session of an expert who may rate now (403)
  and a key of that expert (404 otherwise); ``_dash-update-component`` needs a signed expert
  session (403 otherwise), and the callback checks in the rating's own transaction that the
  expert may still rate (a link revoked, or a study closed or expired, while the page was open
  gets the reason and disabled buttons; nothing is saved); only Dash's generic library bundles
  (``_dash-component-suites``) and ``keys.js`` are served without a session; anything else is 404.
- Per request the database is read once per connection checkout, one checkout per request
  (:mod:`ainerd_core.study_expert`: prebuilt statements, fixed data cached per process).
- Expert sessions are signed cookies holding the expert id, not server-side rows: the link is
  the credential, and revoking the expert (or closing the study) ends every copy of the cookie
  at once, because whether the expert may rate is read from the database on every request.
- Images are served only as ``/evaluate/img/<key>``, ``key`` a random string drawn per
  (expert, position) and stored in ``assignments``; the PNG bytes were rendered once at study
  creation by one function (:func:`ainerd_core.studies.render_png`), so every candidate takes
  the same code path and query; responses carry no ETag, Last-Modified, file name or
  Content-Disposition, and ``Cache-Control: private, no-store``.
- The layout and callback payloads carry only: image URLs (opaque keys), the expert's own
  position in their shuffled order, counts, and the expert's own answer. The expert-side store
  functions never read ``candidate_sources`` or ``candidates.dataset_index``.
- Component ids, texts and callback names avoid method words.
- Ratings are written (committed) before the callback returns; the next image is then shown.
"""
from __future__ import annotations

import html as _html
import re
from pathlib import Path

import dash
import flask
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ainerd_core import study_expert
from ainerd_core.studies import StudyStore

PREFIX = "/evaluate/"
SESSION_KEY = "ainerd_expert"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")  # secrets.token_urlsafe(32) is 43 such characters
_INTERNAL = frozenset({"_dash-layout", "_dash-dependencies", "_dash-update-component", "_reload-hash"})

KEYS_JS = """// keyboard shortcuts of the evaluation page: S similar, D not similar, Left back, Right forward
document.addEventListener('keydown', function (e) {
  if (e.repeat || e.ctrlKey || e.metaKey || e.altKey) { return; }
  var t = e.target && e.target.tagName;
  if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') { return; }
  var map = {'s': 'rate-similar', 'S': 'rate-similar', 'd': 'rate-not-similar', 'D': 'rate-not-similar',
             'ArrowLeft': 'rate-back', 'ArrowRight': 'rate-next'};
  var id = map[e.key];
  if (!id) { return; }
  // one answer at a time: ignore keys while the previous click is still being saved
  if (document.querySelector('[data-dash-is-loading="true"]')) { e.preventDefault(); return; }
  var b = document.getElementById(id);
  if (b && !b.disabled) { e.preventDefault(); b.click(); }
});
"""

_IMG_STYLE = {"width": "320px", "height": "320px", "border": "1px solid #999", "background": "#eee"}
_BTN = {"fontSize": "18px", "padding": "10px 22px", "margin": "6px", "cursor": "pointer"}


def _refusal_page(message: str, status: int = 403):
    doc = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Evaluation - AI-NERD</title>"
           "<meta name='viewport' content='width=device-width,initial-scale=1'></head>"
           "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
           f"<h1>Blind evaluation</h1><p id='eval-refused'>{_html.escape(message)}</p>"
           "<p>If you think this is a mistake, ask the organiser of the study for a new link.</p></body></html>")
    resp = flask.make_response(doc, status)
    resp.headers["Content-Type"] = "text/html; charset=utf-8"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _view_outputs(v: dict, error: str = ""):
    """The values of the callback outputs (and the layout) for one expert view."""
    done = v["position"] >= v["total"]
    src = "" if done else f"{PREFIX}img/{v['image_key']}"
    cand_style = dict(_IMG_STYLE, visibility="hidden" if done else "visible")
    answer = "" if v["answer"] is None else ("Your answer: similar" if v["answer"] else "Your answer: not similar")
    where = (f"All {v['total']} images answered. Thank you! You can go back to change an answer, "
             "or close this window.") if done and v["rated"] >= v["total"] else (
        f"Image {v['position'] + 1} of {v['total']}" if not done else "")
    return (src, cand_style, f"{v['rated']} / {v['total']}", where, answer, bool(done), bool(done),
            v["position"], error)


def init_evaluation(server: flask.Flask, config) -> dash.Dash:
    """Mount the expert app on ``server``: the gate of every ``/evaluate/`` path, the page, its callback."""
    store = StudyStore(config.database_url)
    server.extensions["ainerd_study_store"] = store
    server.before_request(lambda: _gate(store))
    app = dash.Dash(__name__, server=server, url_base_pathname=PREFIX, title="Blind evaluation",
                    assets_folder=str(Path(__file__).parent / "_evaluation_assets_none"),
                    include_assets_files=False, serve_locally=True, suppress_callback_exceptions=True,
                    external_scripts=[f"{PREFIX}keys.js"], update_title=None)
    app.layout = lambda: _layout(store)
    _register_step(app, store)
    return app


# ---------------------------------------------------------------- who is asking
def _session_expert_id() -> int | None:
    """The expert id in this request's signed session (not yet checked against the database)."""
    eid = flask.session.get(SESSION_KEY)
    return eid if isinstance(eid, int) and not isinstance(eid, bool) else None


def _checked_expert(store: StudyStore) -> tuple[int | None, str]:
    """The session's expert if they may rate now (the database is read once per request)."""
    cached = getattr(flask.g, "ainerd_expert_check", None)
    if cached is None:
        eid = _session_expert_id()
        cached = (None, study_expert.NO_SESSION) if eid is None else store.check_expert(eid)
        flask.g.ainerd_expert_check = cached
    return cached


# ---------------------------------------------------------------- the gate (before_request)
def _plain(status: int, text: str):
    return flask.make_response((text, status, {"Content-Type": "text/plain", "Cache-Control": "no-store"}))


def _gate(store: StudyStore):
    """Answer every path under /evaluate/ that is not the page or Dash's callback (module doc)."""
    path = flask.request.path
    if path == "/evaluate":
        return flask.redirect(PREFIX, code=302)
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX):]
    if rest.startswith("_dash-component-suites/"):
        return None  # Dash's generic library bundles: identical for every visitor
    if rest == "keys.js":
        resp = flask.make_response(KEYS_JS)
        resp.headers["Content-Type"] = "application/javascript; charset=utf-8"
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp
    if rest.startswith("img/"):
        return _image_response(store, rest[4:])
    if rest == "_dash-update-component" and _session_expert_id() is not None:
        # the callback checks, in its own transaction, that this expert may still rate; a link
        # withdrawn while the page was open gets the reason and disabled buttons, nothing saved
        return None
    if rest in _INTERNAL or rest == "":
        eid, reason = _checked_expert(store)
        if eid is not None:
            return None
        if rest == "":
            return _refusal_page(reason)
        resp = flask.jsonify(error=reason)
        resp.status_code = 403
        resp.headers["Cache-Control"] = "no-store"
        return resp
    if not _TOKEN.fullmatch(rest) or rest.startswith(("_dash", "_reload", "_favicon", "_alive")) \
            or flask.request.method not in ("GET", "HEAD"):
        return _plain(404, "not found")
    return _token_login(store, rest)


def _image_response(store: StudyStore, key: str):
    """``/evaluate/img/<key>``: 403 without a usable expert session, 404 for a key not theirs."""
    eid = _session_expert_id()
    if eid is None:
        return _plain(403, "forbidden")
    png, reason = study_expert.image(store, eid, key)
    if png is None:
        return _plain(403 if reason else 404, "forbidden" if reason else "not found")
    resp = flask.Response(png, status=200, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _token_login(store: StudyStore, token: str):
    """``/evaluate/<token>``: a usable link puts its expert in the session; the token leaves the address bar."""
    new_eid, reason = store.expert_for_token(token)
    if new_eid is None:
        return _refusal_page(reason)
    flask.session[SESSION_KEY] = new_eid
    flask.session.permanent = True
    resp = flask.redirect(PREFIX, code=303)
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---------------------------------------------------------------- the page
def _layout(store: StudyStore):
    if not flask.has_request_context():
        return html.Div(id="eval-root")
    eid, reason = _checked_expert(store)
    if eid is None:
        return html.Div([html.H1("Blind evaluation"), html.P(reason, id="eval-refused")], id="eval-root")
    return _page(store.expert_view(eid))


def _page(v: dict):
    """The component tree of the evaluation page for one expert view ``v``."""
    src, cand_style, progress, where, answer, dis1, dis2, pos, err = _view_outputs(v)
    return html.Div(style={"fontFamily": "sans-serif", "maxWidth": "760px", "margin": "1em auto"}, id="eval-root",
                    children=[
        html.H1("Blind evaluation", style={"fontSize": "24px"}),
        html.P("Is the image on the right similar to the reference image on the left? "
               "Keys: S = similar, D = not similar, Left = back, Right = forward. "
               "Every answer is saved at once; you can close this window and come back with your link."),
        html.Div([
            html.Figure([html.Img(id="eval-target", src=f"{PREFIX}img/{v['target_key']}", style=_IMG_STYLE,
                                  alt="reference"), html.Figcaption("Reference")], style={"margin": "8px"}),
            html.Figure([html.Img(id="eval-candidate", src=src, style=cand_style, alt="image to judge"),
                         html.Figcaption(where, id="eval-position")], style={"margin": "8px"}),
        ], style={"display": "flex", "flexWrap": "wrap"}),
        html.Div([
            html.Button("Similar (S)", id="rate-similar", n_clicks=0, disabled=dis1,
                        style=dict(_BTN, background="#d8f0d8")),
            html.Button("Not similar (D)", id="rate-not-similar", n_clicks=0, disabled=dis2,
                        style=dict(_BTN, background="#f4d6d6")),
        ]),
        html.Div([
            html.Button("< Back", id="rate-back", n_clicks=0, style=_BTN),
            html.Button("Forward >", id="rate-next", n_clicks=0, style=_BTN),
            html.Span(progress, id="eval-progress", style={"fontSize": "18px", "marginLeft": "1em"}),
            html.Span(" answered", style={"fontSize": "18px"}),
        ]),
        html.P(answer, id="eval-answer", style={"fontWeight": "bold", "minHeight": "1.4em"}),
        html.P(err, id="eval-error", style={"color": "#a00"}),
        dcc.Store(id="eval-pos", data=pos),
    ])


# ---------------------------------------------------------------- the click
_ACTION = {"rate-similar": "similar", "rate-not-similar": "not-similar", "rate-back": "back", "rate-next": "next"}


def _register_step(app: dash.Dash, store: StudyStore) -> None:
    @app.callback(Output("eval-candidate", "src"), Output("eval-candidate", "style"),
                  Output("eval-progress", "children"), Output("eval-position", "children"),
                  Output("eval-answer", "children"), Output("rate-similar", "disabled"),
                  Output("rate-not-similar", "disabled"), Output("eval-pos", "data"), Output("eval-error", "children"),
                  Input("rate-similar", "n_clicks"), Input("rate-not-similar", "n_clicks"),
                  Input("rate-back", "n_clicks"), Input("rate-next", "n_clicks"), State("eval-pos", "data"),
                  prevent_initial_call=True)
    def step(_s, _d, _b, _n, pos):
        eid = _session_expert_id()
        action = _ACTION.get(ctx.triggered_id)
        if eid is None or action is None:
            raise PreventUpdate
        # one store call, one connection: the rating (committed before we answer), the check
        # that this expert may still rate, and the next view
        v = study_expert.click(store, eid, pos, action)
        if v.get("unchanged"):
            raise PreventUpdate
        if v["refused"]:  # revoked, expired or closed while the page was open: say so, save nothing
            nu = dash.no_update
            return nu, nu, nu, nu, nu, True, True, nu, v["refused"] + " Your last click was not saved."
        return _view_outputs(v)
