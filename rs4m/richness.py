"""Semantic richness: the SelectiveMAE patch score (HOG magnitude), per patch and averaged per tile.

The same definition as ``pretrain.selection.hog_patch_scores`` (numpy here: ``rs4m`` never imports torch):
Sobel gx = correlation with [[-1,0,1],[-2,0,2],[-1,0,1]] and gy with its transpose, per channel, replicate
padding of 1 pixel; magnitude sqrt(gx² + gy²); angle atan2(gy, gx) mod π; bin min(floor(angle / (π/9)), 8);
histogram = sum of magnitudes per (channel, 8×8 cell, bin); a 16 px patch's vector is its 2×2 cells × 3
channels × 9 bins = 108 values and its score is the vector's L2 norm, on pixel values scaled to [0, 1].
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


_GRAD_MAX = 4 * 255  # Sobel of 8-bit values on the 0–255 scale is an integer in [-1020, 1020]
_GRAD_SPAN = 2 * _GRAD_MAX + 1
_BIN_LUT: np.ndarray | None = None


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradients of ``[C, H, W]`` integers with replicate padding (separable, by shifted slices)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    smooth_rows = p[:, :-2, :] + 2 * p[:, 1:-1, :] + p[:, 2:, :]  # [C, H, W+2]: vertical [1, 2, 1]
    gx = smooth_rows[:, :, 2:] - smooth_rows[:, :, :-2]
    smooth_cols = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]  # [C, H+2, W]: horizontal [1, 2, 1]
    gy = smooth_cols[:, 2:, :] - smooth_cols[:, :-2, :]
    return gx, gy


def _bin_lut() -> np.ndarray:
    """Orientation bin of every integer gradient (gx, gy), flat ``[(gx+1020) * 2041 + gy + 1020]``.

    arctan2 costs ~10x more than a table lookup here, and 8-bit gradients take only 2041² values.
    Built once per process (≈ 0.5 s, 4 MB).
    """
    global _BIN_LUT
    if _BIN_LUT is None:
        g = np.arange(-_GRAD_MAX, _GRAD_MAX + 1, dtype=np.float64)
        angle = np.mod(np.arctan2(g[None, :], g[:, None]), math.pi)  # [gx, gy]
        _BIN_LUT = np.minimum(np.floor(angle / (math.pi / BINS)), BINS - 1).astype(np.uint8).ravel()
    return _BIN_LUT


def orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``min(floor((atan2(gy, gx) mod π) / (π/9)), 8)`` of integer gradients in [-1020, 1020] → uint8."""
    index = gx.astype(np.int32)
    index *= _GRAD_SPAN
    index += gy
    index += _GRAD_MAX * _GRAD_SPAN + _GRAD_MAX
    return np.take(_bin_lut(), index)


@functools.lru_cache(maxsize=8)
def _histogram_offsets(c: int, h: int, w: int) -> np.ndarray:
    """Flat histogram offset ``(channel, 8×8 cell) × 9`` of every pixel → int64 ``[C·H·W]`` (cached per shape)."""
    cells_w = w // CELL_PX
    cell = (np.arange(h)[:, None] // CELL_PX) * cells_w + np.arange(w)[None, :] // CELL_PX
    offsets = ((np.arange(c)[:, None, None] * (cell.size // CELL_PX**2) + cell[None]) * BINS).ravel()
    offsets.flags.writeable = False
    return offsets


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
    x = np.ascontiguousarray(rgb[:h, :w, :3].transpose(2, 0, 1), dtype=np.int16)  # 0–255 scale: exact
    gx, gy = _sobel(x)
    mag = gx.astype(np.float32)
    mag *= mag
    mag += np.square(gy, dtype=np.float32)
    np.sqrt(mag, out=mag)
    c = x.shape[0]
    index = _histogram_offsets(c, h, w) + orientation_bins(gx, gy).ravel()
    hist = np.bincount(index, weights=mag.ravel(), minlength=c * (h // CELL_PX) * (w // CELL_PX) * BINS)
    k = patch // CELL_PX
    hist = hist.reshape(c, h // patch, k, w // patch, k, BINS).transpose(1, 3, 0, 2, 4, 5)
    return (np.linalg.norm(hist.reshape((h // patch) * (w // patch), -1), axis=1) / 255.0).astype(np.float32)


def tile_richness(rgb: np.ndarray) -> float:
    """Richness of an RGB uint8 tile ``[H, W, 3]``: the mean patch score at the trainer's input size.

    A tile that is not 224×224 is first resized to it with Pillow's BILINEAR filter (as the trainer's loader
    does), so scores compare across tile sizes. A constant tile scores 0.
    """
    if rgb.shape[0] != SCORE_SIZE_PX or rgb.shape[1] != SCORE_SIZE_PX:
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize(
            (SCORE_SIZE_PX, SCORE_SIZE_PX), Image.Resampling.BILINEAR))
    return float(patch_scores(rgb).mean())
