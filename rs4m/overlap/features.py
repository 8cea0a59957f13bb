"""Compact local features of a tile: ORB keypoints, spread over the image, with quantised coordinates.

A tile's features are ``K ≤ max_keypoints`` binary descriptors ``uint8 [K, 16]`` (the first 128 of ORB's 256
rBRIEF tests, the most informative ones) and their keypoint positions ``uint8 [K, 2]`` as fractions of the
image's width and height (``q / 255``), plus the image size: 18 bytes a keypoint, so 224 keypoints fit in
4 KB: within that budget, more keypoints (a partial, rescaled overlap keeps only some of them) rather than
longer descriptors. ORB's 31-pixel patch is kept: with smaller patches descriptors of unrelated images lie
much closer together, and the candidate search collides on them. Scale and angle of the keypoints are not
kept: verification estimates the similarity transform from positions alone.

What decides recall on rescaled pairs (benchmarks/RESULTS.md, ``## overlap_rescaled``) is how many
keypoints the coarse pyramid levels of the finer image have: a crop at twice the scale matches the other
image's levels 3.8 steps up, which at ORB's default 31-pixel border are a small central window. So keypoints
are detected to :data:`EDGE_PX` of each level's border, and an image smaller than ``work_px`` is enlarged to
it (at most :data:`MAX_UPSCALE` ×) so that every image, a 256-pixel benchmark image as a 512² tile, is
detected over the same pyramid.

OpenCV is imported on first use, so ``rs4m`` imports without it (it is the ``overlap`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: keypoints kept per tile (18 bytes each: 16 descriptor + 2 position)
MAX_KEYPOINTS = 224
#: descriptor bytes kept of ORB's 32
DESC_BYTES = 16
#: the longer side is brought to this before detection: features of a 512² tile, bounded cost for larger ones
WORK_PX = 512
#: an image smaller than ``work_px`` is enlarged to it before detection, by at most this factor
MAX_UPSCALE = 2.0
#: keypoints are detected up to this many pixels from each pyramid level's border (ORB's default, 31, leaves
#: the coarse levels of a 256–512 px image a small central window; the descriptor's rotated patch reaches
#: ≤ 22 px, so a keypoint nearer the border is described partly on OpenCV's reflected border)
EDGE_PX = 19
#: the detection pyramid: 8 levels a factor 1.2 apart span 3.6×, so scales 0.5–2× between two images stay in it
LEVELS = 8
SCALE_FACTOR = 1.2
#: FAST corners of lower contrast (intensity steps out of 255) are not detection candidates. FAST's cost grows
#: with the corners it finds, and on a tile of real imagery at its own scale the candidates ORB keeps are of
#: contrast ≥ 20 anyway (the same features as at 10 in 169 of 169 real 512² tiles, in 0.8× the time; smooth
#: synthetic scenes change, recall and precision stay within a few reports); an enlarged image is smoother,
#: and there the weaker corners are among the best (benchmarks/RESULTS.md, ``## overlap_extraction_cost``)
FAST_THRESHOLD = 20
#: the FAST threshold of an image enlarged to ``work_px``
ENLARGED_FAST_THRESHOLD = 10
#: detection candidates per kept keypoint: the Harris-best ``CANDIDATES × max_keypoints`` of the FAST corners
#: are detected, then ``max_keypoints`` of them kept, spread over the image (:func:`_spread`)
CANDIDATES = 4
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


def _stretch_u8(grey: np.ndarray) -> np.ndarray:
    """``uint8`` grey stretched so its 1st–99th percentiles span 0–255 (a histogram and a lookup table)."""
    import cv2

    counts = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel().astype(np.int64)  # 3× np.bincount
    cdf = np.cumsum(counts) / max(grey.size, 1)
    lo, hi = float(np.searchsorted(cdf, 0.01)), float(np.searchsorted(cdf, 0.99))
    lut = np.clip((np.arange(256, dtype=np.float32) - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255)
    return cv2.LUT(grey, lut.astype(np.uint8))


def _grey(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W]`` luminance of ``[H, W, 3]`` or ``[H, W]`` pixels of any dtype, stretched so that its
    1st–99th percentiles span 8 bits (contrast and brightness changes then move few keypoints)."""
    img = np.asarray(rgb)
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size:
        import cv2

        return _stretch_u8(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY))  # ~10× the float path
    if img.ndim == 3:
        img = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
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


def _work_grey(rgb: np.ndarray, work_px: int,
               max_upscale: float = MAX_UPSCALE) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Grey pixels with the longer side brought to ``work_px`` (reduced, or enlarged by at most
    ``max_upscale``), the resize factor and the original (w, h)."""
    import cv2

    grey = _grey(rgb)
    h, w = grey.shape
    factor = min(max(1.0, max_upscale), work_px / max(h, w, 1))
    if factor != 1.0:
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR)
    return grey, factor, (int(w), int(h))


def _detect(grey: np.ndarray, factor: float, size: tuple[int, int], max_keypoints: int, levels: int = LEVELS,
            scale_factor: float = SCALE_FACTOR, edge_px: int = EDGE_PX, fast_threshold: int | None = None,
            candidates: int = CANDIDATES):
    """The ORB detector, ``≤ max_keypoints`` of its keypoints (of ``candidates × max_keypoints`` detected),
    spread over the image (:func:`_spread`), and their descriptors ``uint8 [K, 32]`` (or None). FAST corners of
    contrast ≥ ``fast_threshold`` are candidates (by default :data:`FAST_THRESHOLD`, or
    :data:`ENLARGED_FAST_THRESHOLD` for an enlarged image, ``factor > 1``).

    Detection and description share one pass over one pyramid (describing the kept keypoints afterwards
    builds and blurs it again, which costs more than describing every candidate now). The keypoints come in
    the order ORB's description returns them, by pyramid level, so that both ways give the same features."""
    import cv2

    if fast_threshold is None:
        fast_threshold = ENLARGED_FAST_THRESHOLD if factor > 1.0 else FAST_THRESHOLD
    orb = cv2.ORB.create(nfeatures=candidates * max_keypoints, scaleFactor=scale_factor, nlevels=levels,
                         edgeThreshold=edge_px, patchSize=31, fastThreshold=fast_threshold)
    keypoints, desc = orb.detectAndCompute(grey, None)
    if not keypoints or desc is None:
        return orb, [], None
    pts = np.asarray(cv2.KeyPoint.convert(keypoints), np.float32) / factor
    octave = np.array([kp.octave for kp in keypoints], np.int64)
    keep = _spread(pts, np.array([kp.response for kp in keypoints], np.float32), octave, size, max_keypoints)
    keep = keep[np.argsort(octave[keep], kind="stable")]
    return orb, [keypoints[k] for k in keep.tolist()], desc[keep]


def _features(described, desc: np.ndarray | None, factor: float, size: tuple[int, int]) -> Features:
    """Features of described keypoints (positions in the working pixels) and their ORB descriptors."""
    import cv2

    w, h = size
    if desc is None or not described:
        return Features(np.zeros((0, DESC_BYTES), np.uint8), np.zeros((0, 2), np.uint8), w, h)
    frac = np.asarray(cv2.KeyPoint.convert(described), np.float32) / factor / np.array([w, h], np.float32)
    xy_q = np.clip(np.rint(frac * _Q), 0, _Q).astype(np.uint8)
    return Features(np.ascontiguousarray(desc[:, :DESC_BYTES]), xy_q, w, h)


def _describe(orb, grey: np.ndarray, keypoints: list, factor: float, size: tuple[int, int]) -> Features:
    """Features of ``keypoints`` described on ``grey``; OpenCV drops keypoints it cannot describe, so
    positions come from what it returns."""
    described, desc = orb.compute(grey, keypoints) if keypoints else ((), None)
    return _features(described, desc, factor, size)


def extract(rgb: np.ndarray, max_keypoints: int = MAX_KEYPOINTS, work_px: int = WORK_PX, levels: int = LEVELS,
            scale_factor: float = SCALE_FACTOR, edge_px: int = EDGE_PX, max_upscale: float = MAX_UPSCALE,
            fast_threshold: int | None = None, candidates: int = CANDIDATES) -> Features:
    """ORB features of one image ``[H, W, 3]`` (or ``[H, W]``), any dtype; see :class:`Features`.

    The image is resized so its longer side is ``work_px`` (enlarged by at most ``max_upscale``);
    ``candidates`` × ``max_keypoints`` FAST corners of contrast ≥ ``fast_threshold`` (by default 20, 10 in an
    enlarged image) are detected, the best by the Harris score, over a ``levels``-level pyramid (8 a factor
    1.2 apart by default, so scales 0.5–2× between two images stay within it) up to ``edge_px`` from each
    level's border, and ``max_keypoints`` kept, spread over the image, and described.
    """
    grey, factor, size = _work_grey(rgb, work_px, max_upscale)
    _, keypoints, desc = _detect(grey, factor, size, max_keypoints, levels, scale_factor, edge_px, fast_threshold,
                                 candidates)
    return _features(keypoints, desc, factor, size)


def extract_both(rgb: np.ndarray, max_keypoints: int = MAX_KEYPOINTS, work_px: int = WORK_PX, levels: int = LEVELS,
                 scale_factor: float = SCALE_FACTOR, edge_px: int = EDGE_PX, max_upscale: float = MAX_UPSCALE,
                 fast_threshold: int | None = None, candidates: int = CANDIDATES) -> tuple[Features, Features]:
    """Features of the image and of its left-right mirror: with both on one side of a comparison, ORB's
    rotation invariance covers all 8 flips and rotations.

    The keypoints are detected once: the mirror's are the same keypoints mirrored (``x ↦ w − 1 − x``, angle
    ``θ ↦ 180° − θ``; FAST, the Harris score and the intensity centroid are mirror-symmetric), described on
    the mirrored pixels, which costs a description, not a second detection.
    """
    import cv2

    grey, factor, size = _work_grey(rgb, work_px, max_upscale)
    orb, keypoints, desc = _detect(grey, factor, size, max_keypoints, levels, scale_factor, edge_px,
                                   fast_threshold, candidates)
    feats = _features(keypoints, desc, factor, size)
    return feats, _describe(orb, cv2.flip(grey, 1), mirrored_keypoints(keypoints, grey.shape[1]), factor, size)


def mirrored_keypoints(keypoints: list, width: int) -> list:
    """OpenCV keypoints of an image ``width`` pixels wide, as they lie in its left-right mirror image
    (``x ↦ width − 1 − x``, angle ``θ ↦ 180° − θ``)."""
    import cv2

    last = width - 1
    return [cv2.KeyPoint(last - kp.pt[0], kp.pt[1], kp.size, (180.0 - kp.angle) % 360.0, kp.response, kp.octave,
                         kp.class_id) for kp in keypoints]
