"""C2 maps as PNG images: one renderer for the explorer, exports and the blind evaluation."""
from __future__ import annotations

import io
import threading

import numpy as np

_LUTS: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


def colormap_lut(cmap: str = "viridis") -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colormap (perceptually uniform by default)."""
    lut = _LUTS.get(cmap)
    if lut is None:
        import matplotlib

        lut = np.asarray(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256), bytes=True))[:, :3]
        with _LOCK:
            _LUTS[cmap] = lut = np.ascontiguousarray(lut, dtype=np.uint8)
    return lut


def c2_to_png(c2, size: int | None = None, cmap: str = "viridis", *, vmin: float | None = None,
              vmax: float | None = None, compress_level: int = 3) -> bytes:
    """Render one C2 map to PNG bytes.

    Parameters
    ----------
    c2 : array_like, (H, W)
        The map; row index = t2 (y), column index = t1 (x), as stored.
    size : int, optional
        Output side in pixels (box filter when shrinking, bilinear when enlarging); None keeps H x W.
    cmap : str
        A matplotlib colormap name; ``viridis`` by default.
    vmin, vmax : float, optional
        Colour range. Default: [0, 1] for normalised maps, else the map's finite min and max.
        Non-finite pixels get the colour of vmin.

    Returns
    -------
    bytes
        An RGB PNG (no text or time chunks) with the origin (row 0, column 0) at the lower left.
    """
    from PIL import Image

    a = np.asarray(c2, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"a C2 map must be 2-d, got shape {a.shape}")
    finite = np.isfinite(a)
    if vmin is None or vmax is None:
        lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 1.0)
        if lo >= -1e-6 and hi <= 1 + 1e-6:
            lo, hi = 0.0, 1.0
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = (vmax - vmin) or 1.0
    scaled = np.where(finite, (a - vmin) / span, 0.0)
    idx = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(colormap_lut(cmap)[idx[::-1]]), mode="RGB")  # origin lower-left
    if size is not None and int(size) != img.width:
        size = int(size)
        resample = Image.Resampling.BOX if size < img.width else Image.Resampling.BILINEAR
        img = img.resize((size, size), resample=resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
