"""Server side of the figure export (dashboard.figure_export): SVG -> PDF, bad input -> 400."""
from __future__ import annotations

import re

import pytest

from dashboard.figure_export import ExportError, stamp_text, svg_to_pdf

SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
       b'<rect width="80" height="40" fill="#0072B2"/><text x="5" y="80">shear stress (Pa)</text></svg>')


def test_svg_becomes_a_one_page_pdf():
    pdf = svg_to_pdf(SVG)
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1


@pytest.mark.parametrize("bad", [b"", b"hello", b"<html><body/></html>", b"<svg><unclosed"])
def test_bad_svg_is_a_user_error(bad):
    with pytest.raises(ExportError):
        svg_to_pdf(bad)


def test_no_file_or_network_is_read_from_a_posted_svg(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not really a png")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" '
           f'height="10"><image xlink:href="file://{secret}" width="10" height="10"/>'
           f'<image xlink:href="http://127.0.0.1:9/x.png" width="10" height="10"/></svg>').encode()
    assert svg_to_pdf(svg).startswith(b"%PDF")  # the references are ignored, nothing fetched


def test_route_answers_pdf_or_400(tmp_path):
    from dashboard.app import create_app
    from dashboard.config import Config

    server = create_app(Config(data_dir=tmp_path, instance_dir=tmp_path / "i", secret_key="k" * 40).validated())
    c = server.test_client()
    r = c.post("/_export/pdf?name=../../x y", data=SVG)
    assert r.status_code == 200 and r.data.startswith(b"%PDF")
    assert r.headers["Content-Disposition"] == 'attachment; filename=".._.._x_y.pdf"'
    r = c.post("/_export/pdf", data=b"<html/>")
    assert r.status_code == 400 and b"not an SVG" in r.data


def test_stamp_names_dataset_model_and_version():
    class Entry:
        id, attrs, result_attrs = "demo", {"title": "Demo run"}, {"model_sha256": "ab" * 32}
    text = stamp_text(Entry())
    assert text.startswith("Demo run (demo)") and "model sha256 abababababab" in text and "AI-NERD" in text
    Entry.result_attrs = {}
    assert "model unknown" in stamp_text(Entry())


def test_route_is_behind_the_login_gate(tmp_path):
    from dashboard.app import create_app
    from dashboard.config import Config

    (tmp_path / "data").mkdir()
    server = create_app(Config(data_dir=tmp_path / "data", instance_dir=tmp_path / "i", secret_key="k" * 40,
                               viewer_password="a viewer password of some length", testing=False).validated())
    r = server.test_client().post("/_export/pdf", data=SVG, headers={"Accept": "application/json"})
    assert r.status_code in (302, 401, 403) and not r.data.startswith(b"%PDF")
