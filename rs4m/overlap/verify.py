"""Geometric verification of one candidate pair: descriptor matching, a RANSAC similarity transform, and the
overlap it implies (polygon, fraction of the smaller image, scale, rotation).

Conventions: the transform maps pixel positions of image ``b`` onto image ``a`` (``p_a = M @ [p_b, 1]``,
``M float64 [2, 3]``, a rotation, a uniform scale and a shift). Areas are measured in ``a``'s pixels, so
"the smaller image" is the one that covers less ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from rs4m.hamming import popcount
from rs4m.overlap.features import Features

#: a descriptor pair further apart than this (of 128 bits) is never a match
MAX_DISTANCE_BITS = 40
#: Lowe-style ratio between the best and the second-best distance
RATIO = 0.9
#: RANSAC reprojection threshold as a fraction of image ``a``'s longer side (6 px at 512 px; positions are
#: stored to 1/255 of the image)
RANSAC_FRAC = 0.012
#: a transform scaling by more than this (or less than its inverse) is no match: overlaps are searched at
#: 0.5–2× relative scale, and chance alignments of unrelated keypoints often have extreme scales
MAX_SCALE = 2.5


@dataclass(frozen=True)
class Match:
    """A verified overlap: ``inliers`` consistent correspondences, the transform ``b → a``, the overlap polygon in
    ``a``'s pixels, its area as a fraction of the smaller image (and of ``a``'s, of ``b``'s), the scale of ``b``
    relative to ``a`` (``b`` pixel = ``scale`` ``a`` pixels), the rotation in degrees (counter-clockwise in image
    axes), whether ``b`` is mirrored and how much of the overlap the inliers span (``spread``)."""

    inliers: int
    transform: np.ndarray
    polygon: shapely.Polygon
    overlap_frac: float
    frac_a: float
    frac_b: float
    scale: float
    rotation_deg: float
    mirrored: bool
    #: area of the inliers' convex hull (in ``a``) over the overlap polygon's
    spread: float = 0.0


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between binary descriptors ``uint8 [Ka, B]`` and ``[Kb, B]`` (``B`` a multiple of 8)
    → ``uint16 [Ka, Kb]``."""
    a64 = np.ascontiguousarray(a).view(np.uint64)
    b64 = np.ascontiguousarray(b).view(np.uint64)
    d = np.zeros((len(a64), len(b64)), np.uint16)
    for k in range(a64.shape[1]):  # one word at a time: a reduction over a short last axis is ~10× slower
        d += popcount(a64[:, k, None] ^ b64[None, :, k])
    return d


def correspondences(a: np.ndarray, b: np.ndarray, max_distance: int = MAX_DISTANCE_BITS,
                    ratio: float = RATIO) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test → ``int64 [M, 2]`` (row in ``a``, row in ``b``)."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    d = hamming(a, b)
    rows = np.arange(len(a))
    best_b = d.argmin(axis=1)
    mutual = d.argmin(axis=0)[best_b] == rows
    best = d[rows, best_b].astype(np.float32)
    d[rows, best_b] = np.iinfo(np.uint16).max  # what is left is the second-best distance
    second = d.min(axis=1).astype(np.float32)
    keep = mutual & (best <= max_distance) & (best <= ratio * second)
    return np.stack([rows[keep], best_b[keep]], 1)


def _similarity(pts_b: np.ndarray, pts_a: np.ndarray, ransac_px: float) -> tuple[np.ndarray | None, np.ndarray]:
    """The RANSAC similarity ``b → a`` and its inlier mask ``bool [M]`` (None and no inliers when none)."""
    import cv2

    none = np.zeros(len(pts_a), bool)
    if len(pts_a) < 3:
        return None, none
    m, inl = cv2.estimateAffinePartial2D(pts_b.reshape(-1, 1, 2), pts_a.reshape(-1, 1, 2), method=cv2.RANSAC,
                                         ransacReprojThreshold=ransac_px, maxIters=300, confidence=0.99,
                                         refineIters=10)
    if m is None:
        return None, none
    return m, inl.reshape(-1).astype(bool)


def _spread(points: np.ndarray, polygon: shapely.Polygon) -> float:
    """Area of the inliers' convex hull over the overlap's: chance alignments bunch up on a line or a spot."""
    if polygon.is_empty or polygon.area <= 0 or len(points) < 3:
        return 0.0
    return float(min(1.0, shapely.MultiPoint(points).convex_hull.area / polygon.area))


def _rect(width: float, height: float) -> np.ndarray:
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)


def overlap(transform: np.ndarray, size_a: tuple[int, int],
            size_b: tuple[int, int]) -> tuple[shapely.Polygon, float, float]:
    """Polygon (in ``a``'s pixels) of the ground both images show, and its area over ``a``'s and ``b``'s."""
    corners_b = _rect(*size_b) @ transform[:, :2].T + transform[:, 2]
    poly_a, poly_b = shapely.Polygon(_rect(*size_a)), shapely.Polygon(corners_b)
    if not poly_b.is_valid or poly_b.area <= 0:
        return shapely.Polygon(), 0.0, 0.0
    inter = poly_a.intersection(poly_b)
    return inter, float(inter.area / poly_a.area), float(inter.area / poly_b.area)


def _compose(m: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The 2 × 3 transform ``m ∘ f`` (apply ``f`` first)."""
    return np.concatenate([m[:, :2] @ f[:, :2], (m[:, :2] @ f[:, 2] + m[:, 2])[:, None]], 1)


def verify(a: Features, b: Features, b_mirror: Features | None = None, min_inliers: int = 8,
           ransac_frac: float = RANSAC_FRAC, max_scale: float = MAX_SCALE) -> Match | None:
    """The overlap between ``a`` and ``b`` if a similarity transform with ≥ ``min_inliers`` inliers explains
    their matched keypoints at a scale within ``1 / max_scale … max_scale``, else None. ``b_mirror``: features
    of ``b`` mirrored left-right, tried too so that the 8 flips and rotations are all covered; the one with more
    inliers wins. Rotation and scale are those of ``b`` (mirrored first, if so) onto ``a``."""
    best: Match | None = None
    for feats, mirrored in ((b, False), (b_mirror, True)):
        if feats is None:
            continue
        pairs = correspondences(a.desc, feats.desc)
        if len(pairs) < max(3, min_inliers):
            continue
        pts_a = a.xy()[pairs[:, 0]].astype(np.float64)
        m, mask = _similarity(feats.xy()[pairs[:, 1]].astype(np.float64), pts_a, ransac_frac * max(a.width, a.height))
        inliers = int(mask.sum())
        if m is None or inliers < min_inliers or (best is not None and inliers <= best.inliers):
            continue
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        if not 1.0 / max_scale <= scale <= max_scale:
            continue
        rotation = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
        if mirrored:  # b's own frame → its mirror (x ↦ width − x) → a
            m = _compose(m, np.array([[-1.0, 0.0, b.width], [0.0, 1.0, 0.0]]))
        poly, frac_a, frac_b = overlap(m, (a.width, a.height), (b.width, b.height))
        best = Match(inliers, m, poly, max(frac_a, frac_b), frac_a, frac_b, scale, rotation, mirrored,
                     _spread(pts_a[mask], poly))
    return best


def outlines(match: Match) -> tuple[np.ndarray, np.ndarray]:
    """The shared ground's outline in ``a``'s pixels and in ``b``'s, ``float64 [V, 2]`` each (closed: the
    first vertex repeats last; empty when the images share no area)."""
    if match.polygon.is_empty or match.polygon.geom_type != "Polygon":
        return np.zeros((0, 2)), np.zeros((0, 2))
    in_a = np.asarray(match.polygon.exterior.coords, np.float64)
    inverse = np.linalg.inv(np.vstack([match.transform, [0.0, 0.0, 1.0]]))[:2]
    return in_a, in_a @ inverse[:, :2].T + inverse[:, 2]
