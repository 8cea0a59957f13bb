"""Compact local features of a tile: ORB keypoints, spread over the image, with quantised coordinates.

A tile's features are ``K ≤ max_keypoints`` binary descriptors ``uint8 [K, 16]`` (the first 128 of ORB's 256
rBRIEF tests, the most informative ones) and their keypoint positions ``uint8 [K, 2]`` as fractions of the
image's width and height (``q / 255``), plus the image size: 18 bytes a keypoint, so 224 keypoints fit in
4 KB: within that budget, more keypoints (a partial, rescaled overlap keeps only some of them) rather than
longer descriptors. ORB's 31-pixel patch is kept: with smaller patches descriptors of unrelated images lie
much closer together, and the candidate search collides on them. Scale and angle of the keypoints are not
kept: verification estimates the similarity transform from positions alone.

OpenCV is imported on first use, so ``rs4m`` imports without it (it is the ``overlap`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: keypoints kept per tile (18 bytes each: 16 descriptor + 2 position)
MAX_KEYPOINTS = 224
#: descriptor bytes kept of ORB's 32
DESC_BYTES = 16
#: the longer side is reduced to this before detection: features of a 512² tile, bounded cost for larger ones
WORK_PX = 512
_Q = 255


@dataclass(frozen=True)
class Features:
    """Local features of one image: ``desc uint8 [K, 16]``, ``xy_q uint8 [K, 2]`` (x, y as fractions of
    ``width``, ``height`` times 255) and the image size in pixels."""

    desc: np.ndarray
    xy_q: np.ndarray
    width: int
    height: int

    def xy(self) -> np.ndarray:
        """Keypoint positions in the image's pixels, ``float32 [K, 2]`` (x, y)."""
        scale = np.array([self.width, self.height], np.float32) / _Q
        return self.xy_q.astype(np.float32) * scale

    @property
    def nbytes(self) -> int:
        return int(self.desc.nbytes + self.xy_q.nbytes)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W]`` luminance of ``[H, W, 3]`` or ``[H, W]`` pixels of any dtype (stretched to 8 bits)."""
    img = np.asarray(rgb)
    if img.ndim == 3:
        img = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if img.dtype != np.uint8:
        lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
        img = np.clip((img.astype(np.float32) - lo) * (255.0 / max(float(hi - lo), 1e-6)), 0, 255)
    return np.ascontiguousarray(img.astype(np.uint8))


def _spread(points: np.ndarray, response: np.ndarray, octave: np.ndarray, size: tuple[int, int], k: int,
            cells: int = 4) -> np.ndarray:
    """Indices of ``k`` keypoints taken round-robin from the cells of a ``cells × cells`` grid times pairs of
    pyramid octaves, strongest first in each cell: every part of the image keeps keypoints (a partial overlap
    needs features where it lies) and so does every scale (a rescaled copy matches the coarser levels)."""
    w, h = size
    cell = (np.minimum(points[:, 1] * cells // max(h, 1), cells - 1) * cells
            + np.minimum(points[:, 0] * cells // max(w, 1), cells - 1)).astype(np.int64) * 8 + octave // 2
    order = np.lexsort((-response, cell))
    cell_sorted = cell[order]
    first = np.searchsorted(cell_sorted, cell_sorted, side="left")
    rank = np.arange(len(order)) - first  # rank of each keypoint within its cell
    return order[np.lexsort((-response[order], rank))][:k]


def extract(rgb: np.ndarray, max_keypoints: int = MAX_KEYPOINTS, work_px: int = WORK_PX) -> Features:
    """ORB features of one image ``[H, W, 3]`` (or ``[H, W]``), any dtype; see :class:`Features`.

    The image is reduced so its longer side is at most ``work_px``; 4 × ``max_keypoints`` candidates are
    detected over an 8-level pyramid (factor 1.2, so scales 0.5–2× between two images stay within it) and
    ``max_keypoints`` kept, spread over the image.
    """
    import cv2

    grey = _grey(rgb)
    h, w = grey.shape
    factor = min(1.0, work_px / max(h, w, 1))
    if factor < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    orb = cv2.ORB.create(nfeatures=4 * max_keypoints, scaleFactor=1.2, nlevels=8, edgeThreshold=31, patchSize=31,
                         fastThreshold=10)
    keypoints, desc = orb.detectAndCompute(grey, None)
    if desc is None or not keypoints:
        return Features(np.zeros((0, DESC_BYTES), np.uint8), np.zeros((0, 2), np.uint8), int(w), int(h))
    pts = np.array([kp.pt for kp in keypoints], np.float32) / factor
    keep = _spread(pts, np.array([kp.response for kp in keypoints], np.float32),
                   np.array([kp.octave for kp in keypoints], np.int64), (w, h), max_keypoints)
    frac = pts[keep] / np.array([w, h], np.float32)
    xy_q = np.clip(np.rint(frac * _Q), 0, _Q).astype(np.uint8)
    return Features(np.ascontiguousarray(desc[keep, :DESC_BYTES]), xy_q, int(w), int(h))


def extract_both(rgb: np.ndarray, max_keypoints: int = MAX_KEYPOINTS,
                 work_px: int = WORK_PX) -> tuple[Features, Features]:
    """Features of the image and of its left-right mirror: with both on one side of a comparison, ORB's
    rotation invariance covers all 8 flips and rotations."""
    img = np.asarray(rgb)
    return extract(img, max_keypoints, work_px), extract(np.ascontiguousarray(img[:, ::-1]), max_keypoints, work_px)
