"""Semantic richness: the SelectiveMAE patch score (HOG magnitude), per patch and averaged per tile.

The same definition as ``pretrain.selection.hog_patch_scores`` (numpy here: ``rs4m`` never imports torch):
Sobel gx = correlation with [[-1,0,1],[-2,0,2],[-1,0,1]] and gy with its transpose, per channel, replicate
padding of 1 pixel; magnitude sqrt(gx² + gy²); angle atan2(gy, gx) mod π; bin min(floor(angle / (π/9)), 8);
histogram = sum of magnitudes per (channel, 8×8 cell, bin); a 16 px patch's vector is its 2×2 cells × 3
channels × 9 bins = 108 values and its score is the vector's L2 norm, on pixel values scaled to [0, 1].

Computed exactly, in a strip of cell rows at a time: gradients as int16 (exact integers on the 0–255 scale),
bins by comparing |gy| / |gx| with the boundaries' tangents (equal to atan2's bins for every 8-bit gradient),
magnitudes in float32 and their sums per cell in float64, where every sum is exact whatever the order.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

CELL_PX = 8
BINS = 9
PATCH_PX = 16
#: tiles are scored at the trainer's input size so scores compare across tile sizes
SCORE_SIZE_PX = 224


#: tan of the bin boundaries 20°, 40°, 60° and 80° (float32). Sobel of 8-bit values on the 0–255 scale is an
#: integer in [-1020, 1020], and for all 2041² such gradients the float32 ratio |gy| / |gx| is on the same side
#: of each as the exact one (tests/test_richness_exact.py compares every bin with atan2's)
_TAN_BOUNDS = tuple(np.float32(math.tan(k * math.pi / BINS)) for k in range(1, 5))
#: values (pixels × channels) scored at a time: a strip's temporaries stay small enough to come from the heap
#: and stay in cache; whole-image ones (≈ 1 MB each at 224²) cost page faults and cache misses on every call
STRIP_VALUES = 24 * 1024


def _padded(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` uint8 → int16 ``[H + 4, W + 2, C]`` flattened: the image at rows 2…H+1, columns 1…W,
    one replicated pixel around it, and rows 0 and H + 3 of zeros (read only for scratch values)."""
    h, w, c = rgb.shape
    # np.empty, not np.zeros: a zeroed buffer of this size is fresh pages from the OS, page faults on every call
    p = np.empty((h + 4, w + 2, c), np.int16)
    p[0] = p[h + 3] = 0
    p[2 : h + 2, 1 : w + 1] = rgb
    p[1, 1 : w + 1] = rgb[0]
    p[h + 2, 1 : w + 1] = rgb[-1]
    p[1 : h + 3, 0] = p[1 : h + 3, 1]
    p[1 : h + 3, w + 1] = p[1 : h + 3, w]
    return p.ravel()


def _sobel(flat: np.ndarray, top: int, rows: int, w: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradients (replicate padding) of image rows ``top … top + rows - 1`` of :func:`_padded`'s ``flat``
    → int16 ``gx, gy`` ``[rows·(W+2)·C]``.

    The result is laid out on the padded grid (``[rows, W + 2, C]`` flattened): columns 0 and W + 1 are scratch
    values, still in [-1020, 1020]. That way every shift of the separable filter is one contiguous slice.
    """
    row = (w + 2) * c
    first, size = (2 + top) * row, rows * row
    lo, hi = first - c, first + size + c
    smooth_rows = flat[lo - row : hi - row] + flat[lo + row : hi + row]  # vertical [1, 2, 1]
    smooth_rows += flat[lo:hi]
    smooth_rows += flat[lo:hi]
    gx = smooth_rows[2 * c :] - smooth_rows[: -2 * c]
    lo, hi = first - row, first + size + row
    smooth_cols = flat[lo - c : hi - c] + flat[lo + c : hi + c]  # horizontal [1, 2, 1]
    smooth_cols += flat[lo:hi]
    smooth_cols += flat[lo:hi]
    gy = smooth_cols[2 * row :] - smooth_cols[: -2 * row]
    return gx, gy


def _bins_of(gx: np.ndarray, gy: np.ndarray, abs_x: np.ndarray, abs_y: np.ndarray) -> np.ndarray:
    """Orientation bins (uint8) of integer gradients given also as float32 ``|gx|``, ``|gy|``.

    In the first quadrant the bin is the number of boundaries tan(20°·k), k = 1…4, that |gy| / |gx| reaches;
    where gx and gy have opposite signs (and gy ≠ 0) the angle mod π is 180° minus that one, bin 8 − the count.
    ``gx = 0`` gives an infinite ratio (bin 4); ``gx = gy = 0`` gives NaN, no boundary reached: bin 0, as atan2.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.divide(abs_y, abs_x)
    bins = (ratio >= _TAN_BOUNDS[0]).view(np.uint8)
    for bound in _TAN_BOUNDS[1:]:
        bins += (ratio >= bound).view(np.uint8)
    mirrored = np.bitwise_xor(gx, gy) < 0
    mirrored &= gy != 0
    flip = 8 - 2 * bins  # ≥ 0 as bins ≤ 4
    flip *= mirrored.view(np.uint8)
    bins += flip
    return bins


def orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``min(floor((atan2(gy, gx) mod π) / (π/9)), 8)`` of integer gradients in [-1020, 1020] → uint8."""
    gx, gy = np.asarray(gx, np.int16), np.asarray(gy, np.int16)
    return _bins_of(gx, gy, np.abs(gx).astype(np.float32), np.abs(gy).astype(np.float32))


def _strip_rows(w: int, c: int) -> int:
    """Image rows per strip: whole rows of 8×8 cells, about :data:`STRIP_VALUES` values."""
    return max(1, STRIP_VALUES // ((w + 2) * c * CELL_PX)) * CELL_PX


@functools.lru_cache(maxsize=8)
def _strip_offsets(rows: int, w: int, c: int) -> np.ndarray:
    """Offset into a strip's histogram ``[rows / 8, C, W / 8, 9]`` of every value of :func:`_sobel`'s
    ``[rows, W + 2, C]`` layout (scratch columns: the 9 spare slots past it) → int16, or int32 for wide images."""
    cells_w = w // CELL_PX
    size = (rows // CELL_PX) * c * cells_w * BINS
    dtype = np.int16 if size + BINS <= np.iinfo(np.int16).max else np.int32
    offsets = np.full((rows, w + 2, c), size, dtype)
    cell_row = (np.arange(rows) // CELL_PX)[:, None, None]
    cell_col = (np.arange(w) // CELL_PX)[None, :, None]
    offsets[:, 1 : w + 1] = ((cell_row * c + np.arange(c)[None, None, :]) * cells_w + cell_col) * BINS
    flat = offsets.ravel()
    flat.flags.writeable = False
    return flat


def _cell_histograms(rgb: np.ndarray) -> np.ndarray:
    """Magnitude sums per (8×8 cell, channel, bin) of ``uint8 [H, W, C]`` (H, W multiples of 8) → float64
    ``[H / 8, C, W / 8, 9]``, computed a strip of cell rows at a time."""
    h, w, c = rgb.shape
    flat = _padded(rgb)
    rows = _strip_rows(w, c)
    offsets = _strip_offsets(rows, w, c)
    hist = np.empty((h // CELL_PX, c, w // CELL_PX, BINS), np.float64)
    flat_hist, per_cell_row = hist.reshape(-1), c * (w // CELL_PX) * BINS
    for top in range(0, h, rows):
        n = min(rows, h - top)
        gx, gy = _sobel(flat, top, n, w, c)  # 0–255 scale: exact integers
        abs_x, abs_y = np.abs(gx).astype(np.float32), np.abs(gy).astype(np.float32)
        index = offsets[: gx.size] + _bins_of(gx, gy, abs_x, abs_y)
        mag = np.square(abs_x, out=abs_x)  # squares and their sum are exact in float32 (below 2²⁴)
        mag += np.square(abs_y, out=abs_y)
        np.sqrt(mag, out=mag)
        # Every magnitude is 0 or a float32 ≥ 1, a multiple of 2⁻²³, and a cell's sum stays below 2¹⁷: the
        # float64 sums are exact, so they do not depend on the order in which pixels are added.
        size = n // CELL_PX * per_cell_row
        part = np.bincount(index, weights=mag, minlength=size + BINS)
        flat_hist[top // CELL_PX * per_cell_row :][:size] = part[:size]
    return hist


def patch_scores(rgb: np.ndarray, patch: int = PATCH_PX) -> np.ndarray:
    """Score per patch of an RGB uint8 ``[H, W, 3]`` image → float32 ``[N]``, patches row-major.

    H and W are cropped down to multiples of ``patch`` (a multiple of 8: whole 8×8 cells); an image smaller
    than one patch scores ``[0.0]``.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if patch < CELL_PX or patch % CELL_PX:
        raise ValueError(f"patch must be a multiple of {CELL_PX} pixels, not {patch}")
    h, w = (rgb.shape[0] // patch) * patch, (rgb.shape[1] // patch) * patch
    if h == 0 or w == 0:
        return np.zeros(1, np.float32)
    hist = _cell_histograms(rgb[:h, :w, :3])
    k = patch // CELL_PX
    vectors = hist.reshape(h // patch, k, 3, w // patch, k, BINS).transpose(0, 3, 2, 1, 4, 5)  # channel, cells, bins
    return (np.linalg.norm(vectors.reshape((h // patch) * (w // patch), -1), axis=1) / 255.0).astype(np.float32)


def tile_richness(rgb: np.ndarray, image: Image.Image | None = None) -> float:
    """Richness of an RGB uint8 tile ``[H, W, 3]``: the mean patch score at the trainer's input size.

    A tile that is not 224×224 is first resized to it with Pillow's BILINEAR filter (as the trainer's loader
    does), so scores compare across tile sizes. A constant tile scores 0. ``image``: the tile as a Pillow RGB
    image (``Image.fromarray(rgb)``) where the caller has one, to spare a copy.
    """
    if rgb.shape[0] != SCORE_SIZE_PX or rgb.shape[1] != SCORE_SIZE_PX:
        if image is None:
            image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
        rgb = np.asarray(image.resize((SCORE_SIZE_PX, SCORE_SIZE_PX), Image.Resampling.BILINEAR))
    return float(patch_scores(rgb).mean())
