"""App factory. ``gunicorn 'dashboard.app:server'`` builds the app on first access of ``server``.

Every Dash app here registers its callbacks on its own instance (``app.callback``), never with
the global ``dash.callback``: global callbacks would be copied into whichever Dash app starts
first, and the expert app must expose nothing but its own callbacks.
"""
from __future__ import annotations

import flask

from .config import Config


def create_app(config: Config | None = None) -> flask.Flask:
    """Build the Flask server with the explorer, admin and evaluation apps mounted."""
    config = config or Config.from_env()
    config.instance_dir.mkdir(parents=True, exist_ok=True)
    server = flask.Flask(__name__, static_folder=None)
    server.config.update(SECRET_KEY=config.secret_key, MAX_CONTENT_LENGTH=config.max_upload_bytes,
                         SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                         SESSION_COOKIE_SECURE=config.hosted, TESTING=config.testing)
    server.extensions["ainerd_config"] = config

    @server.get("/healthz")
    def healthz():
        return {"status": "ok"}

    from . import admin_app, auth, evaluation_app, explorer, validation

    auth.init_auth(server, config)  # first: the gate runs before every other route
    explorer_dash = explorer.init_explorer(server, config)  # withholds datasets of open studies
    admin_dash = admin_app.init_admin(server, config)
    evaluation_dash = evaluation_app.init_evaluation(server, config)
    # last: malformed requests get 4xx with one line, after the access checks ran
    validation.install(server, {"/": explorer_dash, "/admin/": admin_dash, "/evaluate/": evaluation_dash})
    return server


def __getattr__(name: str):
    # PEP 562: gunicorn's 'dashboard.app:server' builds the app here, not at import time
    if name == "server":
        global server
        server = create_app()
        return server
    raise AttributeError(name)
