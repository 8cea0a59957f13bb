"""Pillow's 8-bit LANCZOS resize, reproduced bit for bit as small matrix products, for hash thumbnails.

pHash and dHash are defined on Pillow's ``L`` image resized with LANCZOS to 32×32, 9×8 and 8×9. Pillow
resamples in two separable passes on 8-bit data: for each output pixel a window of input pixels is weighted by
integer coefficients (the filter's weights normalised to sum 1 and scaled by 2²², rounded half away from
zero), the sum plus 2²¹ is shifted right by 22 bits and clipped to 0–255, and the second pass runs on that
rounded first-pass image. Here each pass is a product with the ``float64`` coefficient matrix, banded (each
block of 8 output pixels multiplies only the input pixels its weights touch): every term is an integer below
2³¹ and every sum below 2⁴¹, so ``float64`` is exact in any order and the rounding is Pillow's.

Why: Pillow's loops are scalar C, about 0.8 ms per thumbnail of a 512² tile; the products make the three
thumbnails of a 512² tile in ~0.6 ms together.

Two facts of the installed Pillow are not part of any documented contract, so they are checked, not assumed:
which pass comes first (Pillow 13 runs the vertical pass first for some shapes) and the coefficients
themselves. :func:`pass_orders` resizes probe images of each new shape with Pillow and with both orders here,
and a shape that neither reproduces is left to Pillow (``None``).

BLAS note: OpenBLAS hands a product to its thread pool above about 2¹⁸ multiply-adds, and on a machine whose
cores are all busy those threads spin and slow the per-tile work that follows several-fold; every product
here is cut into row blocks below that size, so the pool is never woken.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
LANCZOS_SUPPORT = 3.0
#: products of at most this many multiply-adds run on the calling thread in OpenBLAS (its documented
#: SMP threshold: 65536 × GEMM_MULTITHREAD_THRESHOLD 4)
ONE_THREAD_MNK = 1 << 18
#: output pixels per block of a banded product (see :func:`_resample_pass`)
BAND_PX = 8
#: shapes whose pass order is probed and kept (a tiling run has a handful; random crops may have many)
_ORDER_CACHE = 256


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


@functools.lru_cache(maxsize=64)
def lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's integer LANCZOS coefficients resizing ``in_size`` pixels to ``out_size``, as a dense
    ``float64 [in_size, out_size]`` matrix (column ``j``: the weights of output pixel ``j``).

    The arithmetic is Pillow's, in the same order and in double precision (``math.sin`` is the C library's
    ``sin``, as Pillow's), so the rounded integers agree.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    weights = np.zeros((in_size, out_size), np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - lo
        w = [_lanczos((x + lo - center + 0.5) / filterscale) for x in range(count)]
        total = 0.0
        for v in w:  # summed in order, as Pillow does
            total += v
        for x, v in enumerate(w):
            v = v / total if total != 0.0 else v
            weights[lo + x, out] = math.trunc(v * (1 << PRECISION_BITS) + (-0.5 if v < 0 else 0.5))
    weights.flags.writeable = False
    return weights


def _fixed_point_round(acc: np.ndarray) -> np.ndarray:
    """Pillow's ``clip8((sum + 2**21) >> 22)`` of exact integer sums held in float64 (in place)."""
    acc += float(1 << (PRECISION_BITS - 1))
    acc *= 1.0 / (1 << PRECISION_BITS)
    np.floor(acc, out=acc)
    return np.clip(acc, 0.0, 255.0, out=acc)


@functools.lru_cache(maxsize=64)
def _bands(in_size: int, out_size: int) -> tuple[tuple[int, int, int, int], ...]:
    """The blocks of :data:`BAND_PX` output pixels of :func:`lanczos_weights` and the input pixels their nonzero
    weights span: ``(out_lo, out_hi, in_lo, in_hi)`` per block."""
    touched = lanczos_weights(in_size, out_size) != 0
    bands = []
    for lo in range(0, out_size, BAND_PX):
        hi = min(out_size, lo + BAND_PX)
        rows = np.flatnonzero(touched[:, lo:hi].any(axis=1))
        first, end = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 1)
        bands.append((lo, hi, first, end))
    return tuple(bands)


def _banded_sums(img: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """The exact sums of ``img [M, W]`` (uint8 or float64) times the weights resizing W pixels to each of
    ``sizes`` → float64 ``[M, size]`` each, not yet rounded.

    Banded: each block of :data:`BAND_PX` output pixels multiplies only the input pixels its weights touch (a
    32 px thumbnail of a 512 px tile: 208 of the 512 columns), which leaves out only zero terms. Rows go a block
    at a time, converted to float64 once for every size, few enough that each product stays below
    :data:`ONE_THREAD_MNK` (and in cache).
    """
    m, w = img.shape
    plans = [(lanczos_weights(w, size), _bands(w, size)) for size in sizes]
    sums = [np.empty((m, size), np.float64) for size in sizes]
    rows = max(1, ONE_THREAD_MNK // (BAND_PX * w))
    for lo in range(0, m, rows):
        block = np.asarray(img[lo : lo + rows], np.float64)
        for (weights, bands), out in zip(plans, sums, strict=True):
            for out_lo, out_hi, in_lo, in_hi in bands:
                out[lo : lo + rows, out_lo:out_hi] = block[:, in_lo:in_hi] @ weights[in_lo:in_hi, out_lo:out_hi]
    return sums


def _resample_pass(img: np.ndarray, size: int, vertical: bool) -> np.ndarray:
    """One pass of ``[H, W]`` to ``size`` rows (``vertical``) or columns, rounded as Pillow rounds → float64."""
    if vertical:
        return _resample_pass(img.T, size, False).T
    return _fixed_point_round(_banded_sums(img, [size])[0])


def _first_pass(grey: np.ndarray, sizes: Sequence[tuple[int, int]], vertical: bool) -> list[np.ndarray]:
    """One image ``[H, W]`` through the first pass for every ``(w, h)``: one pass over its rows (columns with
    ``vertical``) for every size, each size computed once."""
    keep = grey.shape[0] if vertical else grey.shape[1]
    targets = [h if vertical else w for w, h in sizes]
    todo = sorted({t for t in targets if t != keep})
    img = grey.T if vertical else grey
    done = {t: _fixed_point_round(acc) for t, acc in zip(todo, _banded_sums(img, todo), strict=True)}
    # Pillow skips a pass that keeps the size
    return [grey if t == keep else (done[t].T if vertical else done[t]) for t in targets]


def _second_pass(first: np.ndarray, size: tuple[int, int], vertical_first: bool) -> np.ndarray:
    w, h = size
    if vertical_first:  # the horizontal pass remains
        return first if w == first.shape[1] else _resample_pass(first, w, False)
    return first if h == first.shape[0] else _resample_pass(first, h, True)


def resize_all(grey: np.ndarray, sizes: Sequence[tuple[int, int]], orders: Sequence[bool]) -> list[np.ndarray]:
    """One grey image ``uint8 [H, W]`` resized to each ``(w, h)`` of ``sizes``; ``orders[i]`` is True where
    that size's vertical pass comes first. Returns ``uint8 [h, w]`` arrays."""
    out: list[np.ndarray | None] = [None] * len(sizes)
    for vertical in (False, True):
        idx = [i for i, o in enumerate(orders) if o == vertical]
        if not idx:
            continue
        firsts = _first_pass(grey, [sizes[i] for i in idx], vertical)
        for i, first in zip(idx, firsts, strict=True):
            out[i] = _second_pass(first, sizes[i], vertical).astype(np.uint8, order="C")
    return [o for o in out if o is not None]


def _probes(h: int, w: int) -> list[np.ndarray]:
    """Noise and a 0/255 checkerboard of noise (for the clipping at both ends), fixed per shape."""
    rng = np.random.default_rng(h * 100_003 + w)
    noise = rng.integers(0, 256, (h, w), dtype=np.uint8)
    extremes = np.where(rng.random((h, w)) < 0.5, 0, 255).astype(np.uint8)
    return [noise, extremes]


_orders: dict[tuple, tuple[bool, ...] | None] = {}


def pass_orders(shape: tuple[int, int], sizes: tuple[tuple[int, int], ...]) -> tuple[bool, ...] | None:
    """For an input ``(H, W)``, per size whether Pillow's vertical pass comes first (probed once per shape:
    the probe images resized with Pillow and with each order here), or None where neither order reproduces
    Pillow."""
    key = (shape, sizes)
    if key not in _orders:
        if len(_orders) >= _ORDER_CACHE:
            _orders.clear()
        _orders[key] = _probe_orders(shape, sizes)
    return _orders[key]


def is_probed(shape: tuple[int, int], sizes: tuple[tuple[int, int], ...]) -> bool:
    """Whether :func:`pass_orders` knows this shape already (so asking costs nothing)."""
    return (shape, sizes) in _orders


def _probe_orders(shape: tuple[int, int], sizes: tuple[tuple[int, int], ...]) -> tuple[bool, ...] | None:
    probes = _probes(*shape)
    refs = [[np.asarray(Image.fromarray(p).resize(s, Image.Resampling.LANCZOS)) for s in sizes] for p in probes]
    orders = []
    for i, size in enumerate(sizes):
        ok = [all(np.array_equal(resize_all(p, [size], [vertical])[0], ref[i])
                  for p, ref in zip(probes, refs, strict=True)) for vertical in (False, True)]
        if not any(ok):
            return None
        orders.append(not ok[0])  # horizontal first wherever both agree
    return tuple(orders)
