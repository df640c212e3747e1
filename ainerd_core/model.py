"""The AI-NERD convolutional autoencoder (Horwath et al., Nat. Commun. 2024), as published.

Architecture (METHOD.md section 3; matches the published checkpoint key for key)::

    encoder   3 x [Conv3x3(pad 1) -> Dropout -> ReLU -> Conv3x3 -> Dropout -> ReLU -> MaxPool(4)]
              channels 1 -> 16 -> 32 -> 64; 256 x 256 -> 64 x 4 x 4
    bottleneck Flatten -> Linear(1024, latent) -> ReLU   (the latent vector, non-negative)
              -> Linear(latent, 1024) -> ReLU -> Unflatten(64, 4, 4)
    decoder1  3 x [Conv3x3 -> Dropout -> ReLU -> Conv3x3 -> Dropout -> ReLU -> Upsample(x4, bilinear)]
              channels 64 -> 64 -> 64 -> 32; then Conv3x3(32 -> 1) -> Sigmoid

State-dict keys are those of the published ``nn.Sequential`` containers (``encoder.0``, ``.3``,
``.7``, ``.10``, ``.14``, ``.17``; ``bottleneck.1``, ``.3``; ``decoder1.0`` ... ``.21``), so the
published checkpoint loads with ``strict=True``.

Two implementations of the same function live here:

* the *plain* path: the ``nn.Sequential`` containers called in order (the reference; used on
  GPUs and whenever ``model.fast`` is False);
* the *fast CPU path* (default on CPU), made of mathematically exact rewrites, each measured in
  ``benchmarks/encode.py`` and ``benchmarks/train_step.py``:
  channels-last (NHWC) activations so oneDNN uses its direct convolution kernels; the
  1-input-channel first convolution as one (B*H*W, 9) x (9, 16) matrix product on the 9 shifted
  copies of the map (oneDNN's kernel is ~10x slower on this shape); the 1-output-channel last
  convolution as a (B*H*W, 32) x (32, 9) product followed by 9 shifted adds; ReLU moved behind
  MaxPool (``relu(maxpool(y)) == maxpool(relu(y))``, 16x fewer elements); micro-batches of
  :data:`CPU_CHUNK` maps (bounded memory; the size is a measured trade-off); in training a fused
  ReLU(Dropout) with a byte mask and a hand-written backward for the last convolution; and in
  inference oneDNN's fused conv+ReLU kernel. A frozen TorchScript graph of the path is
  available (``model.jit = True``) but measured slower, so it is off;
* for bulk encoding (:func:`encode` of ``BULK_MIN_MAPS`` maps or more, e.g. precompute), a
  frozen, ``optimize_for_inference`` TorchScript graph of the *plain* encoder, which oneDNN runs
  in its blocked layout: 1.3-1.8x the eager fast path on an AVX2-only CPU, on par with AVX-512.

Results agree with the plain path to float32 rounding (tested). bfloat16 is available
(``precision="bf16"``) but is never the default: it changes latents by ~0.5 %.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .mapstack import MAP_SIZE, check_maps
from .results import DEMO_WEIGHTS, checkpoint_sha256  # noqa: F401  (re-exported)

FORMAT = "ainerd-autoencoder"
FORMAT_VERSION = 1
DEFAULT_LATENT = 64
DROPOUT = 0.25
CPU_CHUNK = 64  # maps per forward pass on CPU (see benchmarks/encode.py: 8 is ~10 % faster on an idle
# machine, 32-64 are up to 2x faster than 8 when other processes compete for the cores)
# Encoding on CPU (float32 inference): calls of ``encode`` with at least BULK_MIN_MAPS maps - by
# default every call, a single uploaded map included - run a frozen, oneDNN-optimised TorchScript
# graph of the *plain* encoder, BULK_CHUNK maps per pass (issue 12: in one run of
# benchmarks/encode.py this "jit_plain_b8" variant was 3.00x the plain eager encoder, the eager
# fast path 1.95x). Building the graph costs ~3 s on an idle 2-core machine, once per set of
# weights and process: graphs are cached by a digest of the weights (_GRAPH_CACHE), so a model
# loaded again (a dashboard worker, another test) reuses it.
BULK_MIN_MAPS = 1
BULK_CHUNK = 8
GRAPH_CACHE_SIZE = 4
_GRAPH_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
NORMALISATION = {"input": "each C2 map min-max normalised to [0, 1] (dataset.normalise_map)",
                 "map_size": MAP_SIZE, "output": "sigmoid, [0, 1]"}

# analytic FLOPs per map (multiply + add = 2), used by the benchmarks
def _conv_flops(c_in: int, c_out: int, side: int) -> int:
    return 2 * 9 * c_in * c_out * side * side


def encoder_flops(latent: int = DEFAULT_LATENT) -> int:
    return (_conv_flops(1, 16, 256) + _conv_flops(16, 16, 256) + _conv_flops(16, 32, 64)
            + _conv_flops(32, 32, 64) + _conv_flops(32, 64, 16) + _conv_flops(64, 64, 16) + 2 * 1024 * latent)


def decoder_flops(latent: int = DEFAULT_LATENT) -> int:
    return (2 * latent * 1024 + 2 * _conv_flops(64, 64, 4) + 2 * _conv_flops(64, 64, 16)
            + _conv_flops(64, 32, 64) + _conv_flops(32, 32, 64) + _conv_flops(32, 1, 256))


def _stage(c_in: int, c_out: int, p: float) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.Dropout(p), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.Dropout(p), nn.ReLU()]


# --------------------------------------------------------------------------- fast path pieces
def _conv_c1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Conv3x3(pad 1) of a 1-channel (B, 1, H, W) input as one matrix product.

    Returns (B, C, H, W) in channels-last memory layout (a view of an NHWC buffer).
    """
    b, _, h, w = x.shape
    c = weight.shape[0]
    xp = F.pad(x.reshape(b, h, w), (1, 1, 1, 1))
    cols = torch.stack([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], dim=-1)
    y = torch.addmm(bias, cols.reshape(b * h * w, 9), weight.reshape(c, 9).t())
    return y.reshape(b, h, w, c).permute(0, 3, 1, 2)


def _shift_taps(g: torch.Tensor, flip: bool) -> torch.Tensor:
    """(B, H, W) -> (B, H, W, 9): the 9 neighbours of every pixel (zero outside the map).

    Tap k = 3 i + j holds g[h + i - 1, w + j - 1]; with ``flip`` it holds g[h - i + 1, w - j + 1].
    """
    b, h, w = g.shape
    gp = F.pad(g, (1, 1, 1, 1))
    if flip:
        return torch.stack([gp[:, 2 - i:2 - i + h, 2 - j:2 - j + w] for i in range(3) for j in range(3)], dim=-1)
    return torch.stack([gp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], dim=-1)


class _ConvTo1(torch.autograd.Function):
    """Conv3x3(pad 1) with one output channel, channels-last input, exact rewrite.

    Forward: y = x_nhwc (B*H*W, C) @ W (C, 9), out = sum_k shift_k(y_k) + bias.
    Backward: g9 = the 9 (flipped) shifts of grad_out, grad_x = g9 @ W^T, grad_W = x^T @ g9:
    two matrix products and one gather (autograd's own backward of 9 slices costs 9 full-size
    zero fills).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        b, c, h, w = x.shape
        nhwc = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        wm = weight.reshape(c, 9)
        y = torch.mm(nhwc, wm).reshape(b, h, w, 9)
        yp = F.pad(y, (0, 0, 1, 1, 1, 1))
        out = yp[:, 0:h, 0:w, 0] + bias
        for k in range(1, 9):
            i, j = divmod(k, 3)
            out = out + yp[:, i:i + h, j:j + w, k]
        ctx.save_for_backward(nhwc, wm)
        ctx.shape = (b, c, h, w)
        return out.unsqueeze(1)

    @staticmethod
    def backward(ctx, grad_out):
        nhwc, wm = ctx.saved_tensors
        b, c, h, w = ctx.shape
        g9 = _shift_taps(grad_out.reshape(b, h, w), flip=True).reshape(b * h * w, 9)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(g9, wm.t()).reshape(b, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(nhwc.t(), g9).reshape(1, c, 3, 3)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum().reshape(1)
        return grad_x, grad_w, grad_b


# The matrix-product rewrite of the last convolution pays off where oneDNN runs AVX-512; on an
# AVX2-only CPU (2-core AMD EPYC Zen 3, one run each) oneDNN's own channels-last convolution was
# faster: training steps 12.1 vs 10.5 maps/s, decoding 79-91 vs 45-60 maps/s. None: decided by
# torch's CPU capability; True / False force it (tests).
LAST_CONV_REWRITE: bool | None = None


def _last_conv_rewrite() -> bool:
    if LAST_CONV_REWRITE is None:
        return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")
    return bool(LAST_CONV_REWRITE)


def _conv_to1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Conv3x3(pad 1) with one output channel of a channels-last (B, C, H, W) input.

    y_k = x . w_k for the 9 taps k = (i, j) (one (B*H*W, C) x (C, 9) product), then
    out[h, w] = sum_k y_k[h + i - 1, w + j - 1] (zero outside): exact up to float rounding.
    Without AVX-512 (see ``LAST_CONV_REWRITE``) oneDNN's convolution runs instead.
    """
    if not _last_conv_rewrite():
        return F.conv2d(x, weight, bias, padding=1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _ConvTo1.apply(x, weight, bias)
    return _conv_to1_nograd(x, weight, bias)


def _conv_to1_nograd(x, weight, bias):
    b, c, h, w = x.shape
    y = torch.mm(x.permute(0, 2, 3, 1).reshape(b * h * w, c), weight.reshape(c, 9)).reshape(b, h, w, 9)
    yp = F.pad(y, (0, 0, 1, 1, 1, 1))
    out = yp[:, 0:h, 0:w, 0] + bias
    for k in range(1, 9):
        i, j = divmod(k, 3)
        out = out + yp[:, i:i + h, j:j + w, k]
    return out.unsqueeze(1)


class _DropReLU(torch.autograd.Function):
    """ReLU(Dropout(x)) for p = n/256 in one pass, saving a 1-byte mask for backward.

    The keep mask is drawn as random bytes >= n (4 bytes per 32-bit random word): exactly
    Bernoulli(1 - p) per element, ~2x faster than ``F.dropout`` + ``F.relu`` on CPU.
    """

    @staticmethod
    def forward(ctx, x, threshold: int, scale: float):
        n = x.numel()
        words = torch.randint(-2 ** 31, 2 ** 31, ((n + 3) // 4,), dtype=torch.int32, device=x.device)
        rnd = words.view(torch.uint8)[:n]
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            b, c, h, w = x.shape
            rnd = rnd.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            rnd = rnd.view(x.shape)
        keep = (rnd >= threshold) & (x > 0)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


def _is_dense(t: torch.Tensor) -> bool:
    """Whether the tensor's memory is contiguous or channels-last (what the kernels can walk)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _flat_storage(t: torch.Tensor) -> np.ndarray:
    """The (N,) numpy view of a dense (:func:`_is_dense`) CPU tensor's memory, in memory order."""
    if t.is_contiguous():
        return t.detach().reshape(-1).numpy()
    return t.detach().permute(0, 2, 3, 1).reshape(-1).numpy()


class _DropReLUKernel(torch.autograd.Function):
    """:class:`_DropReLU` as one fused numba pass each way (``ainerd_core._cpu_kernels``); the
    mask comes from a 32-bit key drawn from torch's generator, so ``torch.manual_seed`` still
    fixes it, whatever the thread count."""

    @staticmethod
    def forward(ctx, x, threshold: int, scale: float):
        from . import _cpu_kernels as K

        out = torch.empty_like(x)
        keep = torch.empty_like(x, dtype=torch.bool)
        key = int(torch.randint(0, 2 ** 32, (1,)).item())
        K.drop_relu_forward(_flat_storage(x), _flat_storage(out), _flat_storage(keep), int(threshold),
                            np.float32(scale), np.uint64(key))
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        from . import _cpu_kernels as K

        (keep,) = ctx.saved_tensors
        if grad.dtype != torch.float32 or grad.stride() != keep.stride():  # the mask's layout
            fmt = torch.contiguous_format if keep.is_contiguous() else torch.channels_last
            grad = grad.to(torch.float32).contiguous(memory_format=fmt)
            if grad.stride() != keep.stride():
                return torch.where(keep, grad * ctx.scale, 0.0), None, None
        out = torch.empty_like(grad)
        K.drop_relu_backward(_flat_storage(grad), _flat_storage(keep), _flat_storage(out), np.float32(ctx.scale))
        return out, None, None


# None = use the numba kernel when it imports and compiles (set False to force the torch ops)
DROP_RELU_KERNEL: bool | None = None


def _kernel_ok() -> bool:
    return bool(DROP_RELU_KERNEL) if DROP_RELU_KERNEL is not None else _kernel_compiles()


@functools.cache
def _kernel_compiles() -> bool:
    """Compiles (or loads from numba's cache) the fused kernels once per process."""
    try:
        from . import _cpu_kernels as K

        x = np.ones(16, np.float32)
        K.drop_relu_forward(x, np.empty_like(x), np.empty(16, np.bool_), 64, np.float32(1), np.uint64(1))
        K.drop_relu_backward(x, np.ones(16, np.bool_), np.empty_like(x), np.float32(1))
        return True
    except Exception as exc:  # noqa: BLE001 - no numba, no compiler cache: the torch ops work
        warnings.warn(f"fused dropout kernel unavailable ({type(exc).__name__}: {exc}); using torch ops")
        return False


def _drop_relu(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """relu(dropout(x, p)) (training) or relu(x) (inference)."""
    if not training or p == 0:
        return F.relu(x) if training or torch.is_grad_enabled() else x.relu_()
    n = p * 256
    if n == int(n) and 0 < n < 256:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() < 2 ** 32
                and _is_dense(x) and _kernel_ok()):
            return _DropReLUKernel.apply(x, int(n), 1.0 / (1.0 - p))
        return _DropReLU.apply(x, int(n), 1.0 / (1.0 - p))
    return F.relu(F.dropout(x, p, True))


_FUSED = {"ok": hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")}


def _conv_relu(x: torch.Tensor, conv: nn.Conv2d, p: float, training: bool, fuse: bool) -> torch.Tensor:
    """relu(dropout(conv(x))); in inference on CPU optionally oneDNN's fused conv+ReLU kernel."""
    if fuse and not training and _FUSED["ok"] and not torch.is_grad_enabled() and x.device.type == "cpu":
        try:
            return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1,
                                                           "relu", [], "")
        except Exception:  # pragma: no cover - op missing or refused in this build: never try again
            _FUSED["ok"] = False
    return _drop_relu(F.conv2d(x, conv.weight, conv.bias, padding=1), p, training)


def _fast_encode(model: "Autoencoder", x: torch.Tensor, pre_activation: bool = False) -> torch.Tensor:
    """Latents of (B, 1, 256, 256) maps; ``pre_activation`` returns them before the bottleneck
    ReLU (the self-supervised loss of :mod:`ainerd_core.ssl` acts there: no dead gradients)."""
    e = model.encoder
    p, training, fuse = model.dropout, model.training, model.fuse
    x = _drop_relu(_conv_c1(x, e[0].weight, e[0].bias), p, training)
    for ca, cb in ((None, 3), (7, 10), (14, 17)):
        if ca is not None:
            x = _conv_relu(x, e[ca], p, training, fuse)
        x = F.conv2d(x, e[cb].weight, e[cb].bias, padding=1)
        if training:
            x = F.max_pool2d(_drop_relu(x, p, training), 4)
        else:  # relu(maxpool(y)) == maxpool(relu(y)): ReLU on 16x fewer elements
            x = F.max_pool2d(x, 4).relu_()
    x = x.contiguous().flatten(1)       # NCHW order, as nn.Flatten sees it
    lin = model.bottleneck[1]
    h = F.linear(x, lin.weight, lin.bias)
    return h if pre_activation else F.relu(h)


def _fast_decode(model: "Autoencoder", z: torch.Tensor) -> torch.Tensor:
    d = model.decoder1
    p, training, fuse = model.dropout, model.training, model.fuse
    lin = model.bottleneck[3]
    x = F.relu(F.linear(z, lin.weight, lin.bias)).reshape(-1, 64, 4, 4)
    x = x.contiguous(memory_format=torch.channels_last)
    for ca, cb in ((0, 3), (7, 10), (14, 17)):
        for ci in (ca, cb):
            x = _conv_relu(x, d[ci], p, training, fuse)
        x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    return torch.sigmoid(_conv_to1(x, d[21].weight, d[21].bias))


class _FastEncoderGraph(nn.Module):
    """Wrapper traced by TorchScript: the fast encoder path with the model's current weights."""

    def __init__(self, model: "Autoencoder"):
        super().__init__()
        self.m = model

    def forward(self, x):
        return _fast_encode(self.m, x)


class _FastDecoderGraph(_FastEncoderGraph):
    def forward(self, z):
        return _fast_decode(self.m, z)


class _PlainEncoderGraph(_FastEncoderGraph):
    """The published encoder as written (``nn.Sequential`` calls, NCHW): TorchScript's freeze and
    ``optimize_for_inference`` turn it into prepacked oneDNN convolutions in blocked layout."""

    def forward(self, x):
        return self.m.bottleneck[:3](self.m.encoder(x))


# --------------------------------------------------------------------------- the network
class Autoencoder(nn.Module):
    """The published AI-NERD autoencoder with a configurable latent size.

    ``encode(x)`` maps (B, 256, 256) or (B, 1, 256, 256) float maps in [0, 1] to (B, latent)
    non-negative latents; ``decode(z)`` maps latents back to (B, 1, 256, 256) in [0, 1].

    Attributes
    ----------
    fast : bool
        Use the fast CPU path (default True); False forces the plain ``nn.Sequential`` path.
    fuse : bool
        In CPU inference, use oneDNN's fused conv+ReLU kernel where a ReLU follows (default True).
    jit : bool
        In CPU inference, run a frozen TorchScript graph of the fast path (default False:
        measured 2x slower than eager for this path, see ``benchmarks/encode.py``).
    precision : str
        ``"fp32"`` (default) or ``"bf16"`` (CPU inference only, oneDNN bfloat16; changes results).
    """

    def __init__(self, latent_size: int = DEFAULT_LATENT, dropout: float = DROPOUT):
        super().__init__()
        if int(latent_size) < 1:
            raise ValueError(f"latent size must be >= 1, got {latent_size}")
        self.latent_size = int(latent_size)
        self.dropout = float(dropout)
        pool = lambda: nn.MaxPool2d(4)  # noqa: E731
        up = lambda: nn.Upsample(scale_factor=4, mode="bilinear")  # noqa: E731
        self.encoder = nn.Sequential(*_stage(1, 16, dropout), pool(), *_stage(16, 32, dropout), pool(),
                                     *_stage(32, 64, dropout), pool())
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(1024, self.latent_size), nn.ReLU(),
                                        nn.Linear(self.latent_size, 1024), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)))
        self.decoder1 = nn.Sequential(*_stage(64, 64, dropout), up(), *_stage(64, 64, dropout), up(),
                                      *_stage(64, 32, dropout), up(), nn.Conv2d(32, 1, 3, padding=1), nn.Sigmoid())
        self.fast = True
        self.fuse = True
        self.jit = False
        self.precision = "fp32"
        self._graphs: dict = {}

    # -- helpers ---------------------------------------------------------------
    @staticmethod
    def _as_input(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2:] != (MAP_SIZE, MAP_SIZE):
            raise ValueError(f"expected maps of shape (B, {MAP_SIZE}, {MAP_SIZE}) or (B, 1, {MAP_SIZE}, "
                             f"{MAP_SIZE}), got {tuple(x.shape)}")
        return x

    def _use_fast(self, x: torch.Tensor) -> bool:
        return self.fast and x.device.type == "cpu" and x.dtype == torch.float32

    def _inference(self) -> bool:
        return not self.training and not torch.is_grad_enabled()

    def _weights_key(self):
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def _weights_digest(self) -> str:
        h = hashlib.sha1()
        for name, t in self.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _graph(self, kind: str, example: torch.Tensor):
        """Frozen TorchScript graph of the fast path for the current weights (None if unavailable);
        shared through ``_GRAPH_CACHE`` by every model object with the same weights."""
        key = (kind, self.precision, self._weights_key())
        cached = self._graphs.get(kind)
        if cached is not None and cached[0] == key:
            return cached[1]
        shared_key = (kind, self.precision, self._weights_digest())
        if shared_key in _GRAPH_CACHE:
            _GRAPH_CACHE.move_to_end(shared_key)
            self._graphs[kind] = (key, _GRAPH_CACHE[shared_key])
            return _GRAPH_CACHE[shared_key]
        graph = None
        try:
            wrapper = {"encode": _FastEncoderGraph, "decode": _FastDecoderGraph,
                       "encode_plain": _PlainEncoderGraph}[kind](self).eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    traced = torch.jit.trace(wrapper, example, check_trace=False)
                    graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                    graph(example)
        except Exception:  # pragma: no cover - TorchScript unavailable or failed: eager fast path
            graph = None
        self._graphs[kind] = (key, graph)
        _GRAPH_CACHE[shared_key] = graph
        while len(_GRAPH_CACHE) > GRAPH_CACHE_SIZE:
            _GRAPH_CACHE.popitem(last=False)
        return graph

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _run_fast(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        fn = _fast_encode if kind == "encode" else _fast_decode
        if not self._inference():
            return fn(self, x)
        outs = []
        graph = None
        for start in range(0, x.shape[0], CPU_CHUNK):
            part = x[start:start + CPU_CHUNK]
            use_jit = self.jit and self.precision == "fp32"
            if use_jit and graph is None:
                graph = self._graph(kind, part)
            with self._autocast():
                y = graph(part) if (use_jit and graph is not None) else fn(self, part)
            outs.append(y.float())
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _run_bulk(self, x: torch.Tensor) -> torch.Tensor | None:
        """Encode through the frozen plain-encoder graph, BULK_CHUNK maps a pass (None: no graph)."""
        graph = self._graph("encode_plain", x[:BULK_CHUNK])
        if graph is None:
            return None
        return torch.cat([graph(x[s:s + BULK_CHUNK]) for s in range(0, x.shape[0], BULK_CHUNK)])

    # -- public ------------------------------------------------------------------
    def encode(self, x: torch.Tensor, bulk: bool = False) -> torch.Tensor:
        """Latents of maps. ``bulk=True`` (set by :func:`encode` for large jobs) uses, in CPU
        float32 inference, the frozen graph of the plain encoder (see ``BULK_MIN_MAPS``)."""
        x = self._as_input(x)
        if self._use_fast(x):
            if bulk and self.precision == "fp32" and self._inference():
                y = self._run_bulk(x.contiguous())
                if y is not None:
                    return y
            return self._run_fast("encode", x.contiguous())
        return self.bottleneck[:3](self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"expected latents of shape (B, {self.latent_size}), got {tuple(z.shape)}")
        if self._use_fast(z):
            return self._run_fast("decode", z.contiguous())
        return self.decoder1(self.bottleneck[3:](z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

def make_checkpoint(model: Autoencoder, *, config: dict | None = None, learning_curve: dict | None = None,
                    **extra) -> dict:
    """The project's checkpoint dict (what :func:`save_checkpoint` writes)."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": sd,
            "latent_size": model.latent_size, "dropout": model.dropout,
            "config": dict(config or {}), "normalisation": dict(NORMALISATION),
            "learning_curve": dict(learning_curve or {}), "torch_version": str(torch.__version__)}
    ckpt.update(extra)
    return ckpt


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` through :func:`ainerd_core.atomic.atomic_write` (never half a checkpoint)."""
    from .atomic import atomic_write

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_checkpoint(model: Autoencoder, path, **kwargs) -> Path:
    return atomic_torch_save(make_checkpoint(model, **kwargs), path)


def read_checkpoint(path) -> dict:
    """Read a checkpoint file into the project's dict form (a plain state_dict is wrapped).

    Raises :class:`InputError` for a missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such checkpoint file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(path, f"checkpoint format_version {obj['format_version']} is newer than this "
                                   f"software ({FORMAT_VERSION})")
        if not isinstance(obj.get("state_dict"), dict):
            raise InputError(path, "checkpoint has no state_dict")
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if "bottleneck.1.weight" not in obj:
            raise InputError(path, "not an AI-NERD autoencoder state_dict (no bottleneck.1.weight)")
        return {"format": FORMAT, "format_version": 0, "state_dict": obj,
                "latent_size": int(obj["bottleneck.1.weight"].shape[0]), "config": {},
                "normalisation": dict(NORMALISATION), "learning_curve": {}, "published": True}
    raise InputError(path, "not an AI-NERD autoencoder checkpoint (expected a state_dict or a project checkpoint)")


def model_from_checkpoint(ckpt: dict, path=None) -> Autoencoder:
    sd = ckpt["state_dict"]
    latent = int(ckpt.get("latent_size") or sd["bottleneck.1.weight"].shape[0])
    model = Autoencoder(latent, dropout=float(ckpt.get("dropout", DROPOUT)))
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise InputError(path, f"weights do not fit the published architecture: {str(exc).splitlines()[0]}") from None
    return model


def load_model(path=None, device=None) -> Autoencoder:
    """Load a checkpoint into the published architecture, in eval mode.

    Parameters
    ----------
    path : path-like, optional
        A project checkpoint (``train``'s output), or the published plain state_dict
        (``published_checkpoint_state_dict.pth``, loaded with ``strict=True``). None: the shipped
        demo weights ``data/demo_weights.pt``.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    """
    path = DEMO_WEIGHTS if path is None else Path(path)
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    model.checkpoint_info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "scheduler")}
    model.checkpoint_path = str(path)
    return model


# --------------------------------------------------------------------------- batch API
def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _iter_batches(maps, batch_size: int):
    from .dataset import Dataset

    if isinstance(maps, Dataset):
        if not maps.has_maps:
            raise InputError(maps.path, "this dataset holds latents only, no C2 maps to encode")
        return maps.n_maps, maps.iter_maps(batch_size)
    # the encoder's input: 256 x 256 (values as given; datasets hold normalised maps)
    arr = check_maps(maps, None, what="maps", size=MAP_SIZE, normalised=False, finite=False, dtype=None)
    return arr.shape[0], ((s, arr[s:s + batch_size]) for s in range(0, arr.shape[0], batch_size))


def encode(model: Autoencoder, maps, batch_size: int = 64, progress: bool = False,
           bulk: bool | None = None) -> np.ndarray:
    """Latent vectors (N, latent) float32 of maps: an array (N, 256, 256) or a Dataset.

    A Dataset is streamed ``batch_size`` maps at a time (13,000 maps never sit in memory).
    Deterministic: the model runs in eval mode (dropout off) under ``torch.inference_mode``.
    From ``BULK_MIN_MAPS`` maps on (by default always), CPU float32 encoding runs a frozen
    TorchScript graph of the plain encoder (built once per set of weights and process, ~3 s);
    its latents agree with the plain network to float32 rounding (~1e-6). ``bulk=False`` forces
    the eager fast path (no build cost), ``True`` the graph; None decides by the number of maps.
    """
    if batch_size < 1:
        raise InputError(None, f"batch size must be >= 1, got {batch_size}")
    n, batches = _iter_batches(maps, batch_size)
    use_bulk = n >= BULK_MIN_MAPS if bulk is None else bool(bulk)
    device = _device_of(model)
    out = np.empty((n, model.latent_size), np.float32)
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="map", desc="encode")
    try:
        with torch.inference_mode():
            for start, batch in batches:
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                if not torch.isfinite(x).all():
                    raise InputError(getattr(maps, "path", None), f"maps {start}..{start + len(batch) - 1} contain NaN or inf")
                out[start:start + len(batch)] = model.encode(x, bulk=use_bulk).float().cpu().numpy()
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return out


def decode(model: Autoencoder, latents, batch_size: int = 64) -> np.ndarray:
    """Maps (N, 256, 256) float32 in [0, 1] decoded from latents (N, latent)."""
    z = np.asarray(latents, dtype=np.float32)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != model.latent_size:
        raise InputError(None, f"latents must have shape (N, {model.latent_size}), got {z.shape}")
    device = _device_of(model)
    out = np.empty((z.shape[0], MAP_SIZE, MAP_SIZE), np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, z.shape[0], batch_size):
                zz = torch.from_numpy(np.ascontiguousarray(z[s:s + batch_size])).to(device)
                out[s:s + len(zz)] = model.decode(zz).float().cpu().numpy()[:, 0]
    finally:
        model.train(was_training)
    return out


def reconstruct(model: Autoencoder, maps, batch_size: int = 64) -> np.ndarray:
    """decode(encode(maps)), (N, 256, 256) float32."""
    return decode(model, encode(model, maps, batch_size), batch_size)


# --------------------------------------------------------------------------- CLI: encode
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (.h5) with C2 maps")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped demo weights)")
    parser.add_argument("--batch-size", type=int, default=64, help="maps read per batch (default 64)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", default=None, help="also save the latents as .npy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import time

    from .dataset import open_dataset

    model = load_model(args.model, device=args.device)
    with open_dataset(args.dataset) as ds:
        t0 = time.perf_counter()
        lat = encode(model, ds, batch_size=args.batch_size, progress=not args.no_progress)
        dt = time.perf_counter() - t0
    if args.out:
        out = Path(args.out)
        if not out.parent.exists():
            raise InputError(out, "the output folder does not exist")
        np.save(out, lat)
    active = (lat > 0).mean(axis=0)
    print(f"{args.dataset}: encoded {lat.shape[0]} maps -> {lat.shape[1]}-d latents in {dt:.1f} s "
          f"({lat.shape[0] / max(dt, 1e-9):.1f} maps/s, {_device_of(model).type})")
    print(f"  model: {model.checkpoint_path}")
    print(f"  latent mean {lat.mean():.4f}, std {lat.std():.4f}, max {lat.max():.4f}; "
          f"{int((active > 0).sum())} of {lat.shape[1]} dimensions ever active, "
          f"{(lat == 0).mean() * 100:.1f} % zeros")
    if args.out:
        print(f"  latents written to {args.out}")
    return 0
