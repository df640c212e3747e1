"""Export of every figure as PNG, SVG or PDF, optionally stamped with where it came from.

The browser draws the figures (plotly.js), so it also exports them: ``assets/export.js``
renders the figure shown on screen with ``Plotly.toImage`` (PNG or SVG; images of C2 maps are
inlined as data URLs so an SVG is self-contained), adds the stamp in the bottom-right corner
when the card's "stamp" box is ticked, and saves the file. A PDF is the SVG converted on the
server (``POST /_export/pdf``, :func:`svg_to_pdf`, cairosvg): vector, same look. No headless
browser is needed on the server (plotly's own static export, kaleido, would need one).

The stamp (:func:`stamp_text`): dataset title and id, the checksum of the model that made the
latents (``model_sha256``), the software version; the browser adds the date of the export.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

#: limit of an SVG sent for conversion (a 13,000-point scatter with inlined maps is ~10 MB)
MAX_SVG_BYTES = 40 * 1024 * 1024
#: id of the dcc.Store holding this dataset's stamp text (set by the router)
STAMP_STORE = "export-stamp"
FORMATS = ("png", "svg", "pdf")


class ExportError(ValueError):
    """The SVG cannot be converted (message for the user)."""


def stamp_text(entry) -> str:
    """``"E031 published latents (e031) · model sha256 3f2a9c1b4d5e… · AI-NERD 0.1.0"``."""
    from ainerd_core import __version__

    if entry is None:
        return f"AI-NERD {__version__}"
    title = str(entry.attrs.get("title") or "").strip()
    parts = [f"{title} ({entry.id})" if title else entry.id]
    sha = entry.result_attrs.get("model_sha256")
    parts.append(f"model sha256 {sha[:12]}…" if isinstance(sha, str) and sha else "model unknown")
    parts.append(f"AI-NERD {__version__}")
    return " · ".join(parts)


def svg_to_pdf(svg: bytes) -> bytes:
    """A one-page vector PDF of an SVG document (plotly's toImage output).

    Raises
    ------
    ExportError
        Not an SVG, too big, or cairosvg unavailable (then the message says so).
    """
    if not svg or len(svg) > MAX_SVG_BYTES:
        raise ExportError("the SVG is empty or larger than 40 MB")
    head = svg[:2000].lstrip()
    if not re.match(rb"^(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<svg[\s>]", head, re.S):
        raise ExportError("not an SVG document")
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: the cairo library is missing
        raise ExportError(f"PDF export is not available on this server ({exc}); export SVG instead") from None
    try:
        # unsafe=False: no XML entities, and only data: URLs are fetched (the browser inlines the
        # images), never a file or a network address named inside the posted SVG
        return cairosvg.svg2pdf(bytestring=svg, unsafe=False)
    except Exception as exc:  # noqa: BLE001 - a malformed SVG is the client's
        raise ExportError(f"the SVG could not be converted: {exc}") from None


def init_export_routes(server) -> None:
    """``POST /_export/pdf`` (body: an SVG document) -> ``application/pdf``; 400 with a one-line
    message for a bad SVG, never a 500. Behind the login gate like every route."""
    import flask

    @server.post("/_export/pdf")
    def export_pdf():
        name = re.sub(r"[^A-Za-z0-9._-]", "_", flask.request.args.get("name", "figure"))[:80] or "figure"
        try:
            pdf = svg_to_pdf(flask.request.get_data(cache=False))
        except ExportError as exc:
            return flask.Response(str(exc), status=400, mimetype="text/plain")
        return flask.Response(pdf, mimetype="application/pdf",
                              headers={"Content-Disposition": f'attachment; filename="{name}.pdf"',
                                       "Cache-Control": "no-store"})
