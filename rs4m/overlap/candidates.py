"""Candidate pairs of overlapping tiles without comparing all pairs: locality-sensitive hashing of the
binary descriptors with per-tile-pair vote counting.

Each table takes ``bits // 8`` fixed bytes of the 128-bit descriptor; two descriptors within ``d`` bits
share a table's key with probability ``(1 - d / 128) ** bits``. Every key is packed with its tile's row into
one ``uint64``, the table is sorted once, and each run of equal keys votes once for every pair of distinct
tiles in it. Runs longer than ``max_bucket`` (textures everyone has: sea, uniform fields) are dropped, which
bounds the work per run. Pairs with at least ``min_votes`` votes over all tables are the candidates, for
geometric verification.

Cost: ``tables`` sorts of ``M`` keys (``M`` = indexed keypoints of all tiles) plus the votes; the expected
number of votes between two unrelated tiles is ``tables * T_a * T_b * 2 ** -bits`` for uniformly spread
descriptor bits, which is what ``bits`` trades against recall.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: keypoints of each tile that enter the index (strongest first within the spread order of extraction)
INDEX_KEYPOINTS = 224
#: chosen on benchmarks/overlap_quality.py: ORB descriptors of unrelated images are far from uniform, so
#: shorter keys (20–28 bits) collide between most unrelated tiles of even a thousand-image pool
TABLES = 16
BITS = 32
MIN_VOTES = 4
MAX_BUCKET = 32
#: fixed seed of the sampled bit positions, so that keys of every build are comparable
_SEED = 0x5EED


def byte_columns(tables: int = TABLES, bits: int = BITS, desc_bytes: int = 16) -> np.ndarray:
    """The descriptor bytes each table's key is made of, ``int64 [tables, bits // 8]`` (fixed: a function of
    its arguments). Sampling whole bytes samples bits as well as single bits do (each bit is its own
    intensity test) and makes a key one gather."""
    rng = np.random.default_rng(_SEED)
    return np.stack([np.sort(rng.choice(desc_bytes, bits // 8, replace=False)) for _ in range(tables)])


#: descriptors turned into keys at a time: the working arrays stay a few MB whatever ``M`` is
KEY_CHUNK = 1 << 18


def table_keys(desc: np.ndarray, cols: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One table's keys of binary descriptors ``uint8 [M, B]``: the bytes ``cols`` (at most 4) read as a
    big-endian integer, ``uint32 [M]`` (the first column is the high byte), written into ``out`` when given
    (``uint32 [M]``, e.g. a slice of the keys of several descriptor arrays), so that only the keys are held."""
    keys = np.empty(len(desc), np.uint32) if out is None else out
    picked = np.zeros((min(len(desc), KEY_CHUNK), 4), np.uint8)
    for lo in range(0, len(desc), KEY_CHUNK):
        hi = min(lo + KEY_CHUNK, len(desc))
        picked[: hi - lo, 4 - len(cols) :] = desc[lo:hi][:, cols]  # one gather of the key's bytes
        keys[lo:hi] = picked[: hi - lo].view(">u4").reshape(-1)
    return keys


def lsh_keys(desc: np.ndarray, tables: int = TABLES, bits: int = BITS) -> np.ndarray:
    """Keys of binary descriptors ``uint8 [M, B]`` → ``uint32 [M, tables]`` (``bits`` of 8, 16, 24 or 32)."""
    if bits not in (8, 16, 24, 32):
        raise ValueError(f"bits must be 8, 16, 24 or 32, got {bits}")
    desc = np.asarray(desc, np.uint8)
    out = np.zeros((len(desc), tables), np.uint32)
    for t, cols in enumerate(byte_columns(tables, bits, desc.shape[1])):
        out[:, t] = table_keys(desc, cols)
    return out


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs (``np.unique`` of numpy ≥ 2.3 hashes
    first, ~20× slower than one sort on these arrays)."""
    if not len(values):
        starts = np.zeros(0, np.int64)
    else:
        starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return values[starts], np.diff(np.append(starts, len(values)))


#: a table's keys are sorted in this many slices by their top bits (equal keys share a slice), which divides the
#: sort's working memory (~40 bytes a keypoint) by as much; at most 256 (a keypoint's slice is one byte). 16: the
#: working memory of a slice (~2.5 bytes a keypoint of the table) beside the table's keys and owners (8)
SLICES = 16


def owner_dtype(n_tiles: int) -> type:
    """The narrowest row type of ``n_tiles`` rows the search keeps one of per keypoint (int32: 4 bytes a
    keypoint, where int64 would double what the owners hold)."""
    return np.int32 if n_tiles < 2**31 else np.int64


#: a table cut into more slices than this is cut in two levels: masks of this many coarse slices (one pass
#: over the keys each), then each coarse slice sorted by its next bits, so the passes over the whole table stay
#: this many whatever the slices (a mask per slice would be 256 passes for 256 slices)
COARSE_SLICES = 16


def _top(key: np.ndarray, shift: int) -> np.ndarray:
    """``key >> shift`` as uint8 (the caller's bits fit), made in chunks (no 4-byte working copy)."""
    top = np.empty(len(key), np.uint8)
    for lo in range(0, len(key), KEY_CHUNK):
        top[lo : lo + KEY_CHUNK] = key[lo : lo + KEY_CHUNK].astype(np.uint32, copy=False) >> np.uint32(shift)
    return top


def _slices(key: np.ndarray, owner: np.ndarray, slices: int,
            key_bits: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(keys, owners)`` of each slice of the key value range by its top bits, in order (equal keys share a
    slice; ``slices`` rounded up to a power of two, at most 256; the whole table as one slice when it has fewer
    than 65,536 keys). Within a slice the keypoints keep their order."""
    if slices > 256:
        raise ValueError(f"slices must be at most 256, got {slices}")
    if slices <= 1 or len(key) < 1 << 16:
        yield key, owner
        return
    top_bits = min((slices - 1).bit_length(), key_bits)
    coarse_bits = min(top_bits, (COARSE_SLICES - 1).bit_length())
    top = _top(key, key_bits - coarse_bits)
    for c in range(1 << coarse_bits):
        mine = top == c
        k, o = key[mine], owner[mine]
        if coarse_bits == top_bits:
            yield k, o
            continue
        fine = _top(k, key_bits - top_bits) & np.uint8((1 << (top_bits - coarse_bits)) - 1)
        order = np.argsort(fine, kind="stable")  # a radix sort of one byte
        k, o, fine = k[order], o[order], fine[order]
        bounds = np.searchsorted(fine, np.arange((1 << (top_bits - coarse_bits)) + 1, dtype=np.int64))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            yield k[lo:hi], o[lo:hi]


def _table_votes(key: np.ndarray, owner: np.ndarray, n_tiles: int, max_bucket: int, slices: int = SLICES,
                 key_bits: int = 32) -> np.ndarray:
    """Pair codes ``i * n_tiles + j`` (``i < j``) of distinct tiles sharing a key of one table, one per run;
    the keys are taken a slice of their value range at a time (the same pairs, in slice order)."""
    return np.concatenate([_slice_votes(k, o, n_tiles, max_bucket) for k, o in _slices(key, owner, slices, key_bits)])


@dataclass(frozen=True)
class VoteSlice:
    """The keypoints of one table whose keys fall in one slice of the key range: a unit of work (picklable).
    Equal keys fall in one slice, so the votes of all slices of all tables are every vote of the search."""

    key: np.ndarray  # uint32 [m]
    owner: np.ndarray  # int [m], the row of each keypoint
    n_tiles: int
    max_bucket: int


def slice_votes(unit: VoteSlice) -> np.ndarray:
    """The pair codes of one :class:`VoteSlice` (as :func:`_table_votes` finds them for its keys)."""
    return _slice_votes(unit.key, unit.owner, unit.n_tiles, unit.max_bucket)


def _table_votes_on(engine: Any, key: np.ndarray, owner: np.ndarray, n_tiles: int, max_bucket: int,
                    slices: int) -> np.ndarray:
    """:func:`_table_votes` with each slice of the table a unit of ``engine`` (e.g. a Ray task); the votes
    are the same, in another order (the counting sorts them)."""
    units = (VoteSlice(k, o, n_tiles, max_bucket) for k, o in _slices(key, owner, slices) if len(k) >= 2)
    votes = []
    for _unit, result in engine.map_units(slice_votes, units):
        if not isinstance(result, np.ndarray):
            raise RuntimeError(f"an overlap candidate search slice failed: {getattr(result, 'error', result)}")
        votes.append(result)
    return np.concatenate(votes) if votes else np.zeros(0, np.uint64)


def _slice_votes(key: np.ndarray, owner: np.ndarray, n_tiles: int, max_bucket: int) -> np.ndarray:
    id_bits = max(1, int(n_tiles - 1).bit_length())
    packed = key.astype(np.uint64)  # one working array, shifted, or-ed and sorted in place
    packed <<= np.uint64(id_bits)
    packed |= owner.astype(np.uint64, copy=False)
    packed.sort()
    packed, _ = _runs(packed)
    keys, rows = packed >> np.uint64(id_bits), (packed & np.uint64((1 << id_bits) - 1)).astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1], [True]]))
    size = np.diff(starts)
    shared = (size >= 2) & (size <= max_bucket)  # most keys belong to one tile: drop them once, up front
    first, size = starts[:-1][shared], size[shared]
    codes = []
    for offset in range(1, int(size.max(initial=1))):  # each member with the one ``offset`` places later
        more = size > offset
        first, size = first[more], size[more]
        span = size - offset
        idx = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
        codes.append(rows[idx].astype(np.uint64) * np.uint64(n_tiles) + rows[idx + offset].astype(np.uint64))
    return np.concatenate(codes) if codes else np.zeros(0, np.uint64)


def candidate_pairs(keys: np.ndarray, owner: np.ndarray, n_tiles: int, min_votes: int = MIN_VOTES,
                    max_bucket: int = MAX_BUCKET, slices: int = SLICES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile pairs sharing keys in at least ``min_votes`` (table, key) runs.

    ``keys uint [M, L]`` from :func:`lsh_keys` (key bits + ``log2(n_tiles)`` ≤ 64), ``owner int [M]`` the tile
    row of each keypoint (``< n_tiles``).
    Returns ``i int64 [P]``, ``j int64 [P]`` (``i < j``) and ``votes int64 [P]``, sorted by ``(i, j)``.
    """
    return candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, n_tiles, min_votes,
                                    max_bucket, slices)


def candidate_pairs_by_table(tables: Iterable[np.ndarray], owner: np.ndarray, n_tiles: int,
                             min_votes: int = MIN_VOTES, max_bucket: int = MAX_BUCKET, slices: int = SLICES,
                             engine: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`candidate_pairs` with the keys given one table at a time (``uint32 [M]`` each, e.g. made from the
    descriptors as they are needed), so that only one table's keys are ever held; each table is sorted in
    ``slices`` slices of its key range (``slices`` ≤ 256). ``owner`` may be any integer type (int32 from
    :func:`owner_dtype` halves what it holds).

    With an ``engine`` (a cluster), every slice of every table is one of its units, a table at a time, cut
    into at least as many slices as the engine has CPUs (its ``parallelism``, at most 256); the candidates
    are the same, byte for byte.
    """
    owner = np.asarray(owner)
    if owner.dtype.kind not in "iu":  # e.g. an empty list
        owner = owner.astype(np.int64)
    if engine is None:
        votes = [_table_votes(key, owner, n_tiles, max_bucket, slices) for key in tables]
    else:
        pieces = min(256, max(slices, int(getattr(engine, "parallelism", slices))))
        votes = [_table_votes_on(engine, key, owner, n_tiles, max_bucket, pieces) for key in tables]
    counted, counts = _runs(np.sort(np.concatenate(votes))) if votes else (np.zeros(0, np.uint64), np.zeros(0))
    keep = counts >= min_votes
    code = counted[keep]
    return (code // np.uint64(n_tiles)).astype(np.int64), (code % np.uint64(n_tiles)).astype(np.int64), \
        counts[keep].astype(np.int64)
