"""Semantic richness: the SelectiveMAE patch score (HOG magnitude), per patch and averaged per tile.

The same definition as ``pretrain.selection.hog_patch_scores`` (numpy here: ``rs4m`` never imports torch):
Sobel gx = correlation with [[-1,0,1],[-2,0,2],[-1,0,1]] and gy with its transpose, per channel, replicate
padding of 1 pixel; magnitude sqrt(gx² + gy²); angle atan2(gy, gx) mod π; bin min(floor(angle / (π/9)), 8);
histogram = sum of magnitudes per (channel, 8×8 cell, bin); a 16 px patch's vector is its 2×2 cells × 3
channels × 9 bins = 108 values and its score is the vector's L2 norm, on pixel values scaled to [0, 1].
"""

from __future__ import annotations

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
    """``min(floor((atan2(gy, gx) mod π) / (π/9)), 8)`` of integer gradients in [-1020, 1020]."""
    index = (gx.astype(np.int32) + _GRAD_MAX) * _GRAD_SPAN + (gy + _GRAD_MAX)
    return _bin_lut()[index]


def patch_scores(rgb: np.ndarray, patch: int = PATCH_PX) -> np.ndarray:
    """Score per patch of an RGB uint8 ``[H, W, 3]`` image → float32 ``[N]``, patches row-major.

    H and W are cropped down to multiples of ``patch``; an image smaller than one patch scores ``[0.0]``.
    """
    h, w = (rgb.shape[0] // patch) * patch, (rgb.shape[1] // patch) * patch
    if h == 0 or w == 0:
        return np.zeros(1, np.float32)
    x = np.ascontiguousarray(rgb[:h, :w, :3].transpose(2, 0, 1), dtype=np.int16)  # 0–255 scale: exact
    gx, gy = _sobel(x)
    mag = np.sqrt(np.square(gx, dtype=np.float32) + np.square(gy, dtype=np.float32))
    bins = orientation_bins(gx, gy)
    c = x.shape[0]
    ch, cw = h // CELL_PX, w // CELL_PX
    cell = (np.arange(h)[:, None] // CELL_PX) * cw + np.arange(w)[None, :] // CELL_PX
    index = ((np.arange(c)[:, None, None] * (ch * cw) + cell[None]) * BINS + bins).ravel()
    hist = np.bincount(index, weights=mag.ravel(), minlength=c * ch * cw * BINS)
    k = patch // CELL_PX
    hist = hist.reshape(c, h // patch, k, w // patch, k, BINS).transpose(1, 3, 0, 2, 4, 5)
    return (np.linalg.norm(hist.reshape((h // patch) * (w // patch), -1), axis=1) / 255.0).astype(np.float32)


def tile_richness(rgb: np.ndarray) -> float:
    """Mean patch score of a tile resized to 224×224 (the trainer's input size; box reduction, then bilinear)."""
    if rgb.shape[0] != SCORE_SIZE_PX or rgb.shape[1] != SCORE_SIZE_PX:
        # reducing_gap=1: an integer box reduction first, then bilinear (2-3x faster for large tiles)
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize(
            (SCORE_SIZE_PX, SCORE_SIZE_PX), Image.Resampling.BILINEAR, reducing_gap=1.0))
    return float(patch_scores(rgb).mean())
