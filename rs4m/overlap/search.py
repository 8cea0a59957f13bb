"""Overlap search over a corpus: candidate pairs from the hashed descriptors of every image (both orientations),
then geometric verification of the candidates only.

Two searches:

* :func:`find_overlaps`, tile–tile: every pair of images of *different* groups (scenes) sharing at least
  ``min_frac`` of the smaller image's ground; tiles of one scene are never paired (crops of one scene overlap
  by design, and adjacent tiles of one scene are the hardest negatives).
* :func:`find_leaks`, benchmark image–tile: every (tile, image) pair where the tile shows at least
  ``min_share`` of the image's area.

Cost: the candidate search holds, one table at a time, the keys of every indexed keypoint (4 bytes each) and
their owners (4 bytes each) while it sorts them (:mod:`rs4m.overlap.candidates`); :func:`find_overlaps` holds
the descriptors besides, :func:`find_overlaps_in_parts` (the build's) reads each table's bytes from a temp file
instead and the features of the candidates' tiles alone for verification. Verification costs about a
millisecond per candidate, in Python. With a cluster engine (Ray) both steps run on its workers: the candidate
search a slice of a table's key range a unit (:func:`rs4m.overlap.candidates.candidate_pairs_by_table`), the
verification with the candidates cut into units of :data:`VERIFY_UNIT_PAIRS` pairs that carry the features
they need; the pairs found are the same, in the same order, as a search in one process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rs4m.errors import OutputError
from rs4m.overlap.candidates import (
    BITS,
    KEY_CHUNK,
    TABLES,
    byte_columns,
    candidate_pairs_by_table,
    owner_dtype,
    table_keys,
)
from rs4m.overlap.features import DESC_BYTES, Features
from rs4m.overlap.store import FeatureSet, StoredFeatures, read_feature_rows, write_planes
from rs4m.overlap.verify import Match, verify

#: inliers a similarity transform needs, and the least share of the overlap their convex hull must span (chance
#: alignments bunch up), chosen together on benchmarks/overlap_quality.py: the best recall at precision ≥ 0.99
MIN_INLIERS = 5
MIN_SPREAD = 0.02
#: candidate pairs a worker verifies per unit when the verification runs on a cluster engine
VERIFY_UNIT_PAIRS = 4096


@dataclass(frozen=True)
class OverlapPairs:
    """Verified pairs ``[P]``: image ``b`` (row ``j``) mapped onto image ``a`` (row ``i``); ``frac`` the shared
    ground over the smaller image's area, ``frac_b`` over ``b``'s, ``scale`` ``b``'s pixel in ``a``'s pixels,
    ``rotation`` degrees (``b``, mirrored first when ``mirrored``, onto ``a``), ``inliers`` of the transform."""

    i: np.ndarray
    j: np.ndarray
    frac: np.ndarray
    frac_b: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    mirrored: np.ndarray
    inliers: np.ndarray

    def __len__(self) -> int:
        return len(self.i)

    @classmethod
    def of(cls, found: list[tuple[int, int, Match]]) -> OverlapPairs:
        def col(values, dtype):
            return np.array(values, dtype) if values else np.zeros(0, dtype)
        return cls(col([a for a, _, _ in found], np.int64), col([b for _, b, _ in found], np.int64),
                   col([m.overlap_frac for *_, m in found], np.float64), col([m.frac_b for *_, m in found], np.float64),
                   col([m.scale for *_, m in found], np.float64), col([m.rotation_deg for *_, m in found], np.float64),
                   col([m.mirrored for *_, m in found], bool), col([m.inliers for *_, m in found], np.int64))


def _index(sets: list[FeatureSet], mirrored: list[bool]) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """The keys of the keypoints of ``sets`` (rows numbered through all sets in order; the mirror images'
    keypoints too where ``mirrored``), one table at a time, and the row owning each keypoint. A table's keys
    are made from the descriptors when it is searched, into one buffer that every table reuses (4 bytes a
    keypoint): a table's keys are valid until the next is asked for."""
    parts: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    base = 0
    row = owner_dtype(sum(len(fs) for fs in sets))
    for fs, mirror in zip(sets, mirrored, strict=True):
        for desc, start in [(fs.desc, fs.start)] + ([(fs.mirror_desc, fs.mirror_start)] if mirror else []):
            parts.append(desc)
            owner.append(np.repeat(np.arange(base, base + len(fs), dtype=row), np.diff(start)))
        base += len(fs)

    bounds = np.cumsum([0] + [len(d) for d in parts])

    def tables() -> Iterator[np.ndarray]:
        keys = np.empty(bounds[-1], np.uint32)  # one buffer for every table, each part's keys written in place
        for cols in byte_columns(TABLES, BITS, DESC_BYTES):
            for d, lo, hi in zip(parts, bounds[:-1], bounds[1:], strict=True):
                table_keys(d, cols, keys[lo:hi])
            yield keys

    return tables(), np.concatenate(owner)


def _stored_index(stored: StoredFeatures, planes: Path) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """:func:`_index` of ``[stored]`` with the mirrors (the same keys, in the same order), each table's keys
    made from the bytes it samples alone, read from the planes file :func:`write_planes` wrote a part and
    :data:`KEY_CHUNK` keypoints at a time: the descriptors are never held."""
    n = len(stored)
    row = owner_dtype(n)
    ids: np.ndarray = np.arange(n, dtype=row)
    owner = np.concatenate([np.repeat(ids, np.diff(stored.start)), np.repeat(ids, np.diff(stored.mirror_start))])

    def tables() -> Iterator[np.ndarray]:
        keys = np.empty(len(owner), np.uint32)  # one buffer for every table, as :func:`_index` keeps
        with open(planes, "rb") as f:
            for cols in byte_columns(TABLES, BITS, DESC_BYTES):
                at = 0
                for offset, count in stored.blocks:
                    for lo in range(0, count, KEY_CHUNK):
                        hi = min(lo + KEY_CHUNK, count)
                        picked = np.empty((hi - lo, len(cols)), np.uint8)
                        for c, col in enumerate(cols.tolist()):
                            f.seek(offset + col * count + lo)
                            picked[:, c] = np.frombuffer(f.read(hi - lo), np.uint8)
                        table_keys(picked, np.arange(len(cols)), keys[at + lo : at + hi])
                    at += count
                yield keys

    return tables(), owner


def find_overlaps_in_parts(parts: list[Path], min_frac: float, tmp_dir: Path, min_inliers: int = MIN_INLIERS,
                           engine: Any = None, tmp_prefix: str = ".overlap-planes.") -> tuple[OverlapPairs,
                                                                                              StoredFeatures]:
    """:func:`find_overlaps` of :func:`read_features` of ``parts`` (the same pairs, in the same order) without
    holding every descriptor: they are written once as byte planes to a temp file in ``tmp_dir`` (named
    ``tmp_prefix`` + 8 characters + ``.tmp``, removed after), each table's keys are made from the bytes it
    samples, read from that file, and verification reads the features of the tiles in its candidates alone, a
    part at a time. Also returns the rows searched (ids and groups, no descriptors)."""
    fd, name = tempfile.mkstemp(prefix=tmp_prefix, suffix=".tmp", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            stored = write_planes(parts, out)
        if len(stored) < 2:
            return OverlapPairs.of([]), stored
        tables, owner = _stored_index(stored, Path(name))
        i, j, _ = candidate_pairs_by_table(tables, owner, len(stored), engine=engine)
        del owner
    finally:
        Path(name).unlink(missing_ok=True)
    other = stored.group[i] != stored.group[j]
    i, j = i[other], j[other]
    rows = np.unique(np.concatenate([i, j]))
    fs = read_feature_rows(stored, rows)
    found = _verify(fs, fs, np.searchsorted(rows, i), np.searchsorted(rows, j), min_frac, False, min_inliers,
                    engine)
    return OverlapPairs.of([(int(rows[a]), int(rows[b]), m) for a, b, m in found]), stored


def _verified(pairs: Iterator[tuple[int, int]], a_of: Callable[[int], Features],
              b_of: Callable[[int, bool], Features], min_frac: float, of_b: bool,
              min_inliers: int) -> list[tuple[int, int, Match]]:
    """The pairs whose verified match shares at least ``min_frac`` of ``b``'s area (``of_b``: leaks) or of the
    smaller image's (tile–tile)."""
    found = []
    for a, b in pairs:
        m = verify(a_of(a), b_of(b, False), b_of(b, True), min_inliers=min_inliers)
        if m is not None and m.spread >= MIN_SPREAD and (m.frac_b if of_b else m.overlap_frac) >= min_frac:
            found.append((a, b, m))
    return found


@dataclass(frozen=True)
class VerifyUnit:
    """Candidate pairs ``(a, b)`` to verify on a worker, with the features they need: ``a_side[a]`` and
    ``b_side[b]`` = (features, features of the mirror image)."""

    index: int
    pairs: tuple[tuple[int, int], ...]
    a_side: dict[int, Features]
    b_side: dict[int, tuple[Features, Features]]
    min_frac: float
    of_b: bool  # accept by the share of ``b``'s area (leaks) rather than of the smaller image's
    min_inliers: int


def verify_unit(unit: VerifyUnit) -> tuple[int, list[tuple[int, int, Match]]]:
    """The verified pairs of one unit (as the search in one process finds them) with the unit's index."""
    found = _verified(iter(unit.pairs), unit.a_side.__getitem__, lambda b, mirrored: unit.b_side[b][mirrored],
                      unit.min_frac, unit.of_b, unit.min_inliers)
    return unit.index, found


def _verify(a_set: FeatureSet, b_set: FeatureSet, i: np.ndarray, j: np.ndarray, min_frac: float, of_b: bool,
            min_inliers: int, engine: Any = None) -> list[tuple[int, int, Match]]:
    """Verify candidates ``(i[k], j[k])`` (rows of ``a_set``, ``b_set``): here, or as units on ``engine``."""
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    if engine is None or len(pairs) <= VERIFY_UNIT_PAIRS:
        return _verified(iter(pairs), a_set.features, lambda b, mirrored: b_set.features(b, mirrored=mirrored),
                         min_frac, of_b, min_inliers)

    def units() -> Iterator[VerifyUnit]:
        for index, lo in enumerate(range(0, len(pairs), VERIFY_UNIT_PAIRS)):
            chunk = tuple(pairs[lo:lo + VERIFY_UNIT_PAIRS])
            yield VerifyUnit(index, chunk, {a: a_set.features(a) for a, _ in chunk},
                             {b: (b_set.features(b), b_set.features(b, mirrored=True)) for _, b in chunk},
                             min_frac, of_b, min_inliers)

    by_unit: dict[int, list[tuple[int, int, Match]]] = {}
    for unit, result in engine.map_units(verify_unit, units()):
        if not isinstance(result, tuple):
            raise OutputError(f"overlap verification unit {unit.index} failed: {getattr(result, 'error', result)}")
        by_unit[result[0]] = result[1]
    return [m for index in sorted(by_unit) for m in by_unit[index]]


def find_overlaps(fs: FeatureSet, min_frac: float, min_inliers: int = MIN_INLIERS,
                  engine: Any = None) -> OverlapPairs:
    """Pairs of images of different groups sharing at least ``min_frac`` of the smaller one's ground; the
    candidates are searched for and verified on ``engine``'s workers when one is given (a cluster), else here."""
    if len(fs) < 2:
        return OverlapPairs.of([])
    tables, owner = _index([fs], [True])
    i, j, _ = candidate_pairs_by_table(tables, owner, len(fs), engine=engine)
    other = fs.group[i] != fs.group[j]
    return OverlapPairs.of(_verify(fs, fs, i[other], j[other], min_frac, False, min_inliers, engine))


def find_leaks(tiles: FeatureSet, images: FeatureSet, min_share: float,
               min_inliers: int = MIN_INLIERS, engine: Any = None) -> OverlapPairs:
    """(tile ``i``, image ``j``) pairs where the tile shows at least ``min_share`` of the image's area
    (``images`` with their mirrors' features, so every flip and rotation of an image is found)."""
    if not len(tiles) or not len(images):
        return OverlapPairs.of([])
    tables, owner = _index([tiles, images], [False, True])
    n = len(tiles)
    i, j, _ = candidate_pairs_by_table(tables, owner, n + len(images), engine=engine)
    cross = (i < n) & (j >= n)  # i < j: a tile and an image
    return OverlapPairs.of(_verify(tiles, images, i[cross], j[cross] - n, min_share, True, min_inliers, engine))
