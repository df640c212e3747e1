"""Fused CPU kernels for training (numba): dropout + ReLU in one pass over memory.

PyTorch's eager ops need six passes over a (B, 16, 256, 256) activation to draw a dropout mask,
apply it with the ReLU and scale (random bytes, two comparisons, an AND, a multiply, a select);
measured on 2 AVX2 cores they took a third of a training step. These kernels do it in one pass
forward (read x, write the output and a 1-byte mask) and one backward.

Random numbers: a counter-based hash, murmur3's 32-bit finalizer of (element index x golden
ratio) XOR a 32-bit key drawn per call, so that the loop vectorises (measured 7 ms instead of 36
ms for a sequential SplitMix64 stream over 8.4 M values on AVX2) and the mask depends on the key
alone, not on the thread count. The finalizer is a bijection of 32-bit words, so over the
index range the top byte is uniform; keep when it is >= ``threshold``: Bernoulli
(1 - threshold / 256) per element. Tensors must have fewer than 2**32 elements.
"""
from __future__ import annotations

import numba
import numpy as np

_GOLDEN32 = np.uint64(0x9E3779B9)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(inline="always")
def _fmix32(h):
    """murmur3's finalizer on the low 32 bits of a uint64 (numba widens uint32 products)."""
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _LOW32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _LOW32
    return h ^ (h >> np.uint64(16))


@numba.njit(parallel=True, cache=True)
def drop_relu_forward(x, out, keep, threshold, scale, key):  # pragma: no cover - compiled
    """out = x * scale where (hash byte >= threshold and x > 0) else 0; keep = that condition.

    x, out: float32 (N,); keep: bool (N,); threshold: int in 1..255; scale: float32; key: uint32.
    """
    thr = np.uint64(threshold)
    k = np.uint64(key) & _LOW32
    for i in numba.prange(x.size):
        h = _fmix32(((np.uint64(i) * _GOLDEN32) & _LOW32) ^ k)
        v = x[i]
        kept = (h >> np.uint64(24)) >= thr and v > 0
        keep[i] = kept
        out[i] = v * scale if kept else np.float32(0)


@numba.njit(parallel=True, cache=True)
def drop_relu_backward(grad, keep, out, scale):  # pragma: no cover - compiled
    """out = grad * scale where keep else 0 (all (N,); grad, out float32, keep bool)."""
    for i in numba.prange(grad.size):
        out[i] = grad[i] * scale if keep[i] else np.float32(0)
