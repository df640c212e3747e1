"""The explorer Dash app at '/' (placeholder until the dashboard issue lands)."""
from __future__ import annotations

import dash
from dash import html


def init_explorer(server, config) -> dash.Dash:
    app = dash.Dash(__name__, server=server, url_base_pathname="/", title="AI-NERD",
                    assets_folder=str((__import__("pathlib").Path(__file__).parent.parent / "assets").resolve()))
    files = sorted(p.name for p in config.data_dir.glob("*.h5")) if config.data_dir.exists() else []
    app.layout = html.Div([html.H1("AI-NERD"), html.P("Datasets:"), html.Ul([html.Li(f) for f in files])])
    return app
