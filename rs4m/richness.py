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


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradients of ``[C, H, W]`` float32 with replicate padding (separable, by shifted slices)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    smooth_rows = p[:, :-2, :] + 2.0 * p[:, 1:-1, :] + p[:, 2:, :]  # [C, H, W+2]: vertical [1, 2, 1]
    gx = smooth_rows[:, :, 2:] - smooth_rows[:, :, :-2]
    smooth_cols = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]  # [C, H+2, W]: horizontal [1, 2, 1]
    gy = smooth_cols[:, 2:, :] - smooth_cols[:, :-2, :]
    return gx, gy


_BOUNDARIES = [(math.cos(k * math.pi / BINS), math.sin(k * math.pi / BINS)) for k in range(1, BINS)]


def orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``min(floor((atan2(gy, gx) mod π) / (π/9)), 8)`` without arctan2 (which costs ~10× more here).

    Vectors are turned into the upper half plane (angle mod π); the bin is the number of bin boundaries
    θ_k = kπ/9 the vector's angle has passed, tested with the sign of the cross product.
    """
    flip = (gy < 0) | ((gy == 0) & (gx < 0))
    ux, uy = np.where(flip, -gx, gx), np.where(flip, -gy, gy)
    bins = np.zeros(gx.shape, np.int64)
    for cos_k, sin_k in _BOUNDARIES:
        bins += (uy * cos_k - ux * sin_k) >= 0
    return bins


def patch_scores(rgb: np.ndarray, patch: int = PATCH_PX) -> np.ndarray:
    """Score per patch of an RGB uint8 ``[H, W, 3]`` image → float32 ``[N]``, patches row-major.

    H and W are cropped down to multiples of ``patch``; an image smaller than one patch scores ``[0.0]``.
    """
    h, w = (rgb.shape[0] // patch) * patch, (rgb.shape[1] // patch) * patch
    if h == 0 or w == 0:
        return np.zeros(1, np.float32)
    x = np.ascontiguousarray(rgb[:h, :w, :3].transpose(2, 0, 1), dtype=np.float32)  # 0–255 scale: exact
    gx, gy = _sobel(x)
    mag = np.sqrt(gx * gx + gy * gy)
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
    """Mean patch score of a tile resized (bilinear) to 224×224, the trainer's input size."""
    if rgb.shape[0] != SCORE_SIZE_PX or rgb.shape[1] != SCORE_SIZE_PX:
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize(
            (SCORE_SIZE_PX, SCORE_SIZE_PX), Image.Resampling.BILINEAR))
    return float(patch_scores(rgb).mean())
