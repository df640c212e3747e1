"""C2 maps as images: server-side PNG rendering and a cached route with opaque ids.

C2 maps are never sent to the browser as heatmap traces or arrays: the server renders them to
PNG (:func:`render_c2_png`, perceptual colormap, origin lower-left like the paper's figures:
t1 to the right, t2 up) and serves them from ``/_maps/<dataset_id>/<token>.png``.

``token`` is an HMAC-SHA256 (keyed with ``config.secret_key``) of the dataset id, the file's
version (mtime and size) and the map index and variant, so ids cannot be enumerated and a URL
stays valid exactly as long as the file it was made for; the response is therefore cacheable
forever (``Cache-Control: private, max-age=31536000, immutable`` plus an ETag). Each process
keeps an LRU cache of encoded PNGs (bounded in bytes).

Variants: ``full`` (256 px, the stored resolution), ``thumb`` (:data:`THUMB_SIZE` px, for
grids) and ``recon`` (the autoencoder's reconstruction of the map from its latent, when the
dataset has latents and a model is available).

Result stacks (:data:`STACKS`: the reconstructions and noise-decoded maps precompute stores
under ``/results/model``) are not stored C2 maps; the same service signs and serves them from
``/_results/<dataset_id>/<token>.png`` (:func:`stack_image_urls`), rendered at
:data:`STACK_TILE_PX` px, with its own key so a map token never resolves as a stack token.

Usage in a page (inside a request, e.g. in ``layout`` or a callback)::

    from dashboard.images import map_image_url
    html.Img(src=map_image_url(ctx.dataset_id, 17, thumb=True))

:func:`init_images` (called once by the explorer) registers both routes on the Flask server.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import threading

import flask
import numpy as np

from ainerd_core.imaging import c2_to_png

THUMB_SIZE = 96
VARIANTS = ("full", "thumb", "recon")
ROUTE_PREFIX = "/_maps"
CACHE_MAX_BYTES = 96 * 1024 * 1024
#: result stacks served as images (one image per row)
STACKS = ("model/recon_input", "model/recon_output", "model/noise_maps")
STACK_ROUTE = "/_results"
STACK_TILE_PX = 128
_EXT_KEY = "ainerd_images"
_STATE: "ImageService | None" = None  # the last one initialised (outside a request)


def render_c2_png(c2, size: int | None = None, cmap: str = "viridis", *, vmin: float | None = None,
                  vmax: float | None = None) -> bytes:
    """Render one C2 map to PNG bytes (origin lower-left); see :func:`ainerd_core.imaging.c2_to_png`."""
    return c2_to_png(c2, size, cmap, vmin=vmin, vmax=vmax)


class PngCache:
    """A thread-safe LRU of encoded PNGs bounded by total bytes."""

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._items: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def _route_url(route: str, dataset_id: str, token: str) -> str:
    from urllib.parse import quote

    return f"{route}/{quote(dataset_id, safe='')}/{token}.png"


class ImageService:
    """Signs image ids, resolves them back and renders/caches PNGs for one server."""

    def __init__(self, secret_key: str, catalog, max_bytes: int = CACHE_MAX_BYTES):
        self._key = hashlib.sha256(("ainerd-map-image:" + secret_key).encode()).digest()
        self._stack_key = hashlib.sha256(("ainerd-result-image:" + secret_key).encode()).digest()
        self.catalog = catalog
        self.cache = PngCache(max_bytes)
        self._lookup: dict[tuple[str, str, str], dict[str, int]] = {}
        self._lock = threading.Lock()

    def token(self, dataset_id: str, version: str, index: int, variant: str = "full") -> str:
        msg = f"{dataset_id}\x00{version}\x00{int(index)}\x00{variant}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def url(self, dataset_id: str, index: int, variant: str = "full") -> str | None:
        entry = self.catalog.get(dataset_id)
        if entry is None:
            return None
        return _route_url(ROUTE_PREFIX, entry.id, self.token(entry.id, entry.version, index, variant))

    def resolve(self, dataset_id: str, token: str):
        """(entry, index, variant) of a token, or None."""
        entry = self.catalog.get(dataset_id)
        if entry is None:
            return None
        for variant in VARIANTS:
            key = (entry.id, entry.version, variant)
            table = self._lookup.get(key)
            if table is None:
                with self._lock:
                    table = self._lookup.get(key)
                    if table is None:
                        # drop tables of replaced versions of this dataset
                        for old in [k for k in self._lookup if k[0] == entry.id and k[1] != entry.version]:
                            del self._lookup[old]
                        table = {self.token(entry.id, entry.version, i, variant): i for i in range(entry.n_maps)}
                        self._lookup[key] = table
            index = table.get(token)
            if index is not None:
                return entry, index, variant
        return None

    def png(self, entry, index: int, variant: str) -> bytes | None:
        """The PNG of a map (cached); None if it cannot be made (no maps, no model)."""
        key = (entry.id, entry.version, int(index), variant)
        data = self.cache.get(key)
        if data is not None:
            return data
        if variant == "recon":
            arr, _ = entry.reconstruction(index)
            if arr is None:
                return None
            data = render_c2_png(arr)
        else:
            if not entry.has_maps:
                return None
            c2 = entry.read_map(index)
            data = render_c2_png(c2, size=THUMB_SIZE if variant == "thumb" else None)
        self.cache.put(key, data)
        return data


    # ---------------------------------------------------------------- result stacks
    def stack_token(self, entry, name: str, index: int) -> str:
        msg = f"{entry.id}\x00{entry.version}\x00{name}\x00{int(index)}".encode()
        return hmac.new(self._stack_key, msg, hashlib.sha256).hexdigest()[:32]

    def stack_url(self, entry, name: str, index: int) -> str:
        return _route_url(STACK_ROUTE, entry.id, self.stack_token(entry, name, index))

    def resolve_stack(self, dataset_id: str, token: str):
        """(entry, stack name, row) of a stack token, or None (stacks are small: a linear scan)."""
        entry = self.catalog.get(dataset_id)
        if entry is None:
            return None
        for name in STACKS:
            stack = entry.result(name)
            if stack is None:
                continue
            for i in range(len(stack)):
                if hmac.compare_digest(self.stack_token(entry, name, i), token):
                    return entry, name, i
        return None

    def stack_png(self, entry, name: str, index: int) -> bytes:
        """The PNG of row ``index`` of result stack ``name`` (cached)."""
        key = ("stack", entry.id, entry.version, name, int(index))
        data = self.cache.get(key)
        if data is None:
            data = render_c2_png(np.asarray(entry.result(name)[index]), size=STACK_TILE_PX)
            self.cache.put(key, data)
        return data


def _service() -> ImageService | None:
    if flask.has_app_context():
        svc = flask.current_app.extensions.get(_EXT_KEY)
        if svc is not None:
            return svc
    return _STATE


def map_image_url(dataset_id: str, index: int, thumb: bool = False, *, variant: str | None = None) -> str | None:
    """URL of map ``index`` of dataset ``dataset_id`` as a PNG (None if no such dataset).

    ``thumb=True`` gives the small grid version; ``variant="recon"`` the autoencoder's
    reconstruction (the route answers 404 when the dataset has no model or latents).
    Call it inside a request (layouts, callbacks) or after :func:`init_images`.
    """
    svc = _service()
    if svc is None:
        raise RuntimeError("dashboard.images.init_images was not called")
    variant = variant or ("thumb" if thumb else "full")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    return svc.url(dataset_id, index, variant)


def stack_image_urls(entry, name: str) -> list[str]:
    """URLs of every row of result stack ``name`` of ``entry`` as PNGs ([] without the stack or
    before :func:`init_images`)."""
    svc = _service()
    stack = entry.result(name)
    if svc is None or stack is None:
        return []
    return [svc.stack_url(entry, name, i) for i in range(len(stack))]


def _png_response(token: str, render, why: str = "") -> flask.Response:
    """A PNG answer cached forever under its token (304 when the browser has it); ``render()``
    -> bytes, or None for a 404 saying ``why``."""
    if token in flask.request.if_none_match:
        resp = flask.Response(status=304)
    else:
        data = render()
        if data is None:
            return flask.Response(why + "\n", status=404, mimetype="text/plain")
        resp = flask.Response(data, mimetype="image/png")
    resp.set_etag(token)
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return resp


def _no_such_image() -> flask.Response:
    return flask.Response("no such image\n", status=404, mimetype="text/plain")


def init_images(server: flask.Flask, config, catalog) -> ImageService:
    """Register ``/_maps/<dataset_id>/<token>.png`` and ``/_results/<dataset_id>/<token>.png`` on
    ``server``; returns the service."""
    global _STATE
    svc = ImageService(config.secret_key, catalog)
    server.extensions[_EXT_KEY] = svc
    _STATE = svc

    def serve_map_image(dataset_id: str, token: str):
        found = svc.resolve(dataset_id, token)
        if found is None:
            return _no_such_image()
        entry, index, variant = found
        why = ("no model or latents for a reconstruction" if variant == "recon"
               else "this dataset holds latents only, no C2 maps")
        return _png_response(token, lambda: svc.png(entry, index, variant), why)

    def serve_result_image(dataset_id: str, token: str):
        found = svc.resolve_stack(dataset_id, token)
        if found is None:
            return _no_such_image()
        return _png_response(token, lambda: svc.stack_png(*found))

    server.add_url_rule(f"{ROUTE_PREFIX}/<dataset_id>/<token>.png", "ainerd_map_image", serve_map_image)
    server.add_url_rule(f"{STACK_ROUTE}/<dataset_id>/<token>.png", "ainerd_result_image", serve_result_image)
    return svc
