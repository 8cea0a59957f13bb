"""Candidate pairs of overlapping tiles without comparing all pairs: locality-sensitive hashing of the
binary descriptors with per-tile-pair vote counting.

Each table samples ``bits`` fixed bit positions of the 128-bit descriptor; two descriptors within ``d`` bits
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


def bit_positions(tables: int = TABLES, bits: int = BITS, desc_bits: int = 128) -> np.ndarray:
    """The sampled bit positions of each table, ``int64 [tables, bits]`` (fixed: a function of its arguments)."""
    rng = np.random.default_rng(_SEED)
    return np.stack([rng.choice(desc_bits, bits, replace=False) for _ in range(tables)])


def lsh_keys(desc: np.ndarray, tables: int = TABLES, bits: int = BITS) -> np.ndarray:
    """Keys of binary descriptors ``uint8 [M, B]`` → ``uint32 [M, tables]`` (each below ``2 ** bits``,
    ``bits ≤ 32``)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be 1..32, got {bits}")
    unpacked = np.unpackbits(np.asarray(desc, np.uint8), axis=1)  # [M, 8B]
    pos = bit_positions(tables, bits, unpacked.shape[1])
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64))
    out = np.empty((len(unpacked), tables), np.uint32)
    for t, p in enumerate(pos):
        out[:, t] = (unpacked[:, p].astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return out


def _table_votes(key: np.ndarray, owner: np.ndarray, n_tiles: int, max_bucket: int) -> np.ndarray:
    """Pair codes ``i * n_tiles + j`` (``i < j``) of distinct tiles sharing a key of one table, one per run."""
    id_bits = max(1, int(n_tiles - 1).bit_length())
    packed = np.unique((key.astype(np.uint64) << np.uint64(id_bits)) | owner.astype(np.uint64))  # a tile once per key
    keys, rows = packed >> np.uint64(id_bits), (packed & np.uint64((1 << id_bits) - 1)).astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1], [True]]))
    size = np.diff(starts)
    codes = []
    for offset in range(1, max_bucket):  # pair each member with the one ``offset`` places later in its run
        first = starts[:-1][size > offset]
        if len(first) == 0:
            break
        span = size[size > offset] - offset  # members that have a partner ``offset`` later
        if (size > max_bucket).any():
            keep = size[size > offset] <= max_bucket
            first, span = first[keep], span[keep]
        idx = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
        codes.append(rows[idx].astype(np.uint64) * np.uint64(n_tiles) + rows[idx + offset].astype(np.uint64))
    return np.concatenate(codes) if codes else np.zeros(0, np.uint64)


def candidate_pairs(keys: np.ndarray, owner: np.ndarray, n_tiles: int, min_votes: int = MIN_VOTES,
                    max_bucket: int = MAX_BUCKET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile pairs sharing keys in at least ``min_votes`` (table, key) runs.

    ``keys uint [M, L]`` from :func:`lsh_keys` (key bits + ``log2(n_tiles)`` ≤ 64), ``owner int [M]`` the tile row of each keypoint (``< n_tiles``).
    Returns ``i int64 [P]``, ``j int64 [P]`` (``i < j``) and ``votes int64 [P]``, sorted by ``(i, j)``.
    """
    owner = np.asarray(owner, np.int64)
    counted = np.zeros(0, np.uint64)
    counts = np.zeros(0, np.int64)
    for t in range(keys.shape[1]):
        codes, n = np.unique(_table_votes(keys[:, t], owner, n_tiles, max_bucket), return_counts=True)
        merged, inverse = np.unique(np.concatenate([counted, codes]), return_inverse=True)
        total = np.bincount(inverse, np.concatenate([counts, n]), len(merged)).astype(np.int64)
        counted, counts = merged, total
    keep = counts >= min_votes
    code = counted[keep]
    return (code // np.uint64(n_tiles)).astype(np.int64), (code % np.uint64(n_tiles)).astype(np.int64), counts[keep]
