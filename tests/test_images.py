"""C2 maps as PNG: rendering (colormap, origin lower-left, size) and the cached route with opaque ids."""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from dashboard.images import THUMB_SIZE, PngCache, render_c2_png


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_render_is_viridis_with_the_origin_at_the_lower_left():
    import matplotlib

    c2 = np.zeros((256, 256), np.float32)
    c2[0, 0] = 1.0          # t1 = t2 = 0
    c2[255, 0] = 0.5        # t2 = last, t1 = 0
    img = _decode(render_c2_png(c2))
    assert img.shape == (256, 256, 3)
    lut = (np.asarray(matplotlib.colormaps["viridis"]([0.0, 0.5, 1.0]))[:, :3] * 255).round()
    np.testing.assert_allclose(img[255, 0], lut[2], atol=2)   # bottom-left pixel = c2[0, 0]
    np.testing.assert_allclose(img[0, 0], lut[1], atol=2)     # top-left = c2[255, 0]
    np.testing.assert_allclose(img[128, 128], lut[0], atol=2)


def test_render_size_and_colormap_and_range():
    c2 = np.linspace(0, 1, 256 * 256, dtype=np.float32).reshape(256, 256)
    thumb = _decode(render_c2_png(c2, size=THUMB_SIZE))
    assert thumb.shape == (THUMB_SIZE, THUMB_SIZE, 3)
    gray = _decode(render_c2_png(c2, cmap="gray"))
    assert np.all(gray[..., 0] == gray[..., 1])
    raw = _decode(render_c2_png(c2 * 7 + 1))  # not normalised: scaled to its own min..max
    np.testing.assert_allclose(raw, _decode(render_c2_png(c2)), atol=1)
    with pytest.raises(ValueError):
        render_c2_png(np.zeros(5))


def test_png_cache_is_bounded_lru():
    cache = PngCache(max_bytes=250)
    for i in range(5):
        cache.put(i, b"x" * 100)
    assert len(cache) == 2 and cache.nbytes <= 250
    assert cache.get(0) is None and cache.get(4) == b"x" * 100


@pytest.fixture
def client(explorer_data, tmp_path):
    from dashboard.app import create_app
    from dashboard.config import Config

    config = Config(data_dir=explorer_data, instance_dir=tmp_path / "instance", secret_key="s" * 40).validated()
    server = create_app(config)
    return server, server.test_client()


def _url(server, dataset, index, **kw):
    from dashboard.images import map_image_url

    with server.test_request_context("/"):
        return map_image_url(dataset, index, **kw)


def test_route_serves_cached_pngs_with_opaque_ids(client):
    server, c = client
    url = _url(server, "demo", 7)
    assert re.fullmatch(r"/_maps/demo/[0-9a-f]{32}\.png", url)
    neighbour = _url(server, "demo", 8)
    assert url != neighbour
    r = c.get(url)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert "max-age" in r.headers["Cache-Control"] and "immutable" in r.headers["Cache-Control"]
    etag = r.headers["ETag"]
    assert _decode(r.data).shape == (256, 256, 3)
    again = c.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    thumb = c.get(_url(server, "demo", 7, thumb=True))
    assert _decode(thumb.data).shape == (THUMB_SIZE, THUMB_SIZE, 3)
    svc = server.extensions["ainerd_images"]
    before = svc.cache.hits
    c.get(url)
    assert svc.cache.hits == before + 1


def test_route_pixels_are_the_stored_map(client, explorer_data):
    from ainerd_core.dataset import open_dataset

    server, c = client
    with open_dataset(explorer_data / "demo.h5") as ds:
        expected = _decode(render_c2_png(ds.read_map(11)))
    np.testing.assert_array_equal(_decode(c.get(_url(server, "demo", 11)).data), expected)


def test_route_refuses_guesses_and_latents_only(client):
    server, c = client
    assert c.get("/_maps/demo/" + "0" * 32 + ".png").status_code == 404
    assert c.get("/_maps/demo/7.png").status_code == 404
    assert c.get("/_maps/nope/" + "0" * 32 + ".png").status_code == 404
    assert c.get("/_maps/..%2Fdemo/" + "0" * 32 + ".png").mimetype != "image/png"  # no route: Dash's index
    r = c.get(_url(server, "e031", 3))
    assert r.status_code == 404 and b"latents only" in r.data


def test_ids_depend_on_the_secret_and_the_file_version(explorer_data, tmp_path):
    from dashboard.catalog import Catalog
    from dashboard.images import ImageService

    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(explorer_data / "demo.h5", folder / "demo.h5")
    cat = Catalog(folder, rescan_s=0)
    a, b = ImageService("one", cat), ImageService("two", cat)
    assert a.url("demo", 3) != b.url("demo", 3)
    old = a.url("demo", 3)
    assert a.resolve("demo", old.rsplit("/", 1)[1][:-4])[1:] == (3, "full")
    import os
    st = os.stat(folder / "demo.h5")
    os.utime(folder / "demo.h5", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert a.url("demo", 3) != old  # the file changed: old URLs stop resolving
    assert a.resolve("demo", old.rsplit("/", 1)[1][:-4]) is None


def test_reconstruction_variant(client):
    server, c = client
    r = c.get(_url(server, "demo", 5, variant="recon"))
    assert r.status_code == 200 and _decode(r.data).shape == (256, 256, 3)
