"""Hamming range search on 64-bit hashes without comparing all pairs: multi-index hashing (MIH).

A pair of tiles is reported when, for every hash column ``k``, their hashes differ in at most ``radii[k]``
bits. Pigeonhole: split each 64-bit hash into ``radii[k] + 1`` contiguous blocks; two hashes within
``radii[k]`` bits agree exactly on at least one block. So every reported pair agrees on one block of *each*
column, and the candidates are the pairs that share a key ``(block b_1 of column 1, ..., block b_K of column
K)`` for some combination of blocks. Candidates come from one ``np.sort`` per combination (key and row index
packed in one ``uint64``), runs of equal keys are expanded into pairs with ``np.repeat``, and each candidate is
verified with a popcount. Requiring pHash *and* dHash to agree makes the keys long (≈ 21 bits for radii 5 and
5), so buckets stay small even for millions of hashes.

Cost: ``prod(radii + 1)`` sorts of ``N`` keys plus the candidates; the expected candidate count per combination
is ``N² / 2 / 2**key_bits`` for uniformly spread hashes, which is what makes large radii expensive.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

_U64 = np.uint64
#: candidate pairs verified per chunk; bounds memory at ~ (2 + 2K) * 8 bytes * this
_CHUNK_PAIRS = 1 << 21
#: odd 64-bit multipliers that mix block values into a key when their concatenation is too long
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each ``uint64`` → ``uint8`` of the same shape."""
    x = np.asarray(x, dtype=_U64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(b).count("1") for b in range(256)], np.uint8)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


def blocks(radius_bits: int) -> list[tuple[int, int]]:
    """``(shift, width)`` of the ``radius_bits + 1`` contiguous blocks covering 64 bits (widths differ by ≤ 1)."""
    n = min(int(radius_bits) + 1, 64)
    widths = [64 // n + (1 if b < 64 % n else 0) for b in range(n)]
    shifts = [64 - sum(widths[: b + 1]) for b in range(n)]
    return list(zip(shifts, widths))


def _block_values(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    mask = _U64((1 << width) - 1) if width < 64 else _U64(0xFFFFFFFFFFFFFFFF)
    return (h >> _U64(shift)) & mask


def _combo_key(hashes: np.ndarray, combo: Sequence[tuple[int, int]], key_bits: int) -> np.ndarray:
    """One key per row from one block of each column: exact concatenation when it fits in ``key_bits``,
    else a multiplicative mix (collisions only add candidates, which verification removes)."""
    if sum(w for _, w in combo) <= key_bits:
        key = np.zeros(len(hashes), _U64)
        for k, (shift, width) in enumerate(combo):
            key = (key << _U64(width)) | _block_values(hashes[:, k], shift, width)
        return key
    key = np.zeros(len(hashes), _U64)
    for k, (shift, width) in enumerate(combo):
        key ^= _block_values(hashes[:, k], shift, width) * _U64(_MIX[k % len(_MIX)])
    return key >> _U64(64 - key_bits)


def _sorted_runs(key: np.ndarray, tag_bits: int, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by key; return ``tags`` in key order and the start of each run of equal keys (+ end)."""
    packed = np.sort((key << _U64(tag_bits)) | tags.astype(_U64))
    keys = packed >> _U64(tag_bits)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1], [True]]))
    return packed & _U64((1 << tag_bits) - 1), starts


def expand_pairs(first: np.ndarray, count: np.ndarray,
                 step_from: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each element ``e`` pair position ``first[e]`` with ``step_from[e] + t`` for ``t < count[e]``; chunked."""
    keep = count > 0
    first, count, step_from = first[keep], count[keep], step_from[keep]
    cum = np.cumsum(count)
    lo = 0
    while lo < len(count):
        base = cum[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(cum, base + _CHUNK_PAIRS, side="right")), lo + 1)
        c = count[lo:hi]
        offsets = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        yield np.repeat(first[lo:hi], c), np.repeat(step_from[lo:hi], c) + offsets
        lo = hi


def _index_bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _self_search(cols: list[np.ndarray], key: np.ndarray, idx_bits: int, radii: np.ndarray):
    """Verified row pairs ``(a, b)`` that share a key of at most ``64 - idx_bits`` bits; chunked."""
    if len(key) < 2:
        return
    rows, starts = _sorted_runs(key, idx_bits, np.arange(len(key)))
    run_len = np.diff(starts)
    multi = run_len >= 2  # most runs are single rows: drop them before any gather
    rows = rows[np.repeat(multi, run_len)].astype(np.int64)
    lens = run_len[multi]
    # hashes in key order: a candidate's partners sit next to it, so the popcount reads stay in cache
    hs = [c[rows] for c in cols]
    pos = np.arange(len(rows))
    for a, b in expand_pairs(pos, np.repeat(np.cumsum(lens), lens) - pos - 1, pos + 1):
        a, b, d = _verify(hs, hs, a, b, radii)
        yield rows[a], rows[b], d


def _cross_search(qcols: list[np.ndarray], icols: list[np.ndarray], qkey: np.ndarray, ikey: np.ndarray,
                  idx_bits: int, radii: np.ndarray):
    """Verified ``(query row, index row)`` pairs that share a key of at most ``63 - idx_bits`` bits."""
    m, n = len(qkey), len(ikey)
    if m == 0 or n == 0:
        return
    # tag = side bit above the row index: index rows (side 0) sort before query rows within a run
    tags = np.concatenate([np.arange(n), np.arange(m) | (1 << idx_bits)])
    tagged, starts = _sorted_runs(np.concatenate([ikey, qkey]), idx_bits + 1, tags)
    is_query = (tagged >> _U64(idx_bits)).astype(bool)
    run_len = np.diff(starts)
    n_index = np.add.reduceat((~is_query).astype(np.int64), starts[:-1])
    mixed = (n_index > 0) & (n_index < run_len)  # runs holding both sides
    keep = np.repeat(mixed, run_len)
    is_query, rows = is_query[keep], (tagged[keep] & _U64((1 << idx_bits) - 1)).astype(np.int64)
    lens, n_index = run_len[mixed], n_index[mixed]
    q_pos, i_pos = np.flatnonzero(is_query), np.flatnonzero(~is_query)
    qs = [c[rows[q_pos]] for c in qcols]
    # index rows of a run are contiguous in i_pos: the k-th index row of run r is i_pos[index_start[r] + k]
    index_start = np.repeat(np.cumsum(n_index) - n_index, lens)[q_pos]
    ids = [c[rows[i_pos]] for c in icols]
    for a, b in expand_pairs(np.arange(len(q_pos)), np.repeat(n_index, lens)[q_pos], index_start):
        a, b, d = _verify(qs, ids, a, b, radii)
        yield rows[q_pos[a]], rows[i_pos[b]], d


def _verify(qh: list[np.ndarray], ih: list[np.ndarray], a: np.ndarray, b: np.ndarray, radii: np.ndarray):
    for k in range(len(qh)):  # reject on the first column before reading the next
        keep = popcount(qh[k][a] ^ ih[k][b]) <= radii[k]
        a, b = a[keep], b[keep]
    dist = np.stack([popcount(qh[k][a] ^ ih[k][b]) for k in range(len(qh))], axis=1)
    return a, b, dist.reshape(len(a), len(qh))


def _as_columns(hashes: np.ndarray, radii: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hashes, dtype=_U64)
    h = h[:, None] if h.ndim == 1 else h
    r = np.asarray(radii, dtype=np.int64).reshape(-1)
    if h.ndim != 2 or h.shape[1] != len(r) or (r < 0).any():
        raise ValueError(f"hashes [N, K] need K non-negative radii; got shape {h.shape} and radii {list(r)}")
    return h, r


def _finish(parts: list, n_cols: int, n_b: int, unordered: bool):
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, n_cols), np.uint8)
    a, b, d = (np.concatenate(x) for x in zip(*parts))
    if unordered:
        a, b = np.minimum(a, b), np.maximum(a, b)
    code, first = np.unique(a * n_b + b, return_index=True)
    return code // n_b, code % n_b, d[first]


def hamming_pairs(hashes: np.ndarray, radii: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of rows within ``radii[k]`` bits on every column ``k``.

    Args:
        hashes: ``uint64 [N, K]`` (or ``[N]`` with one radius).
        radii: ``K`` radii in bits.

    Returns:
        ``(i int64 [E], j int64 [E], dist uint8 [E, K])`` with ``i < j``, sorted by ``(i, j)``.
    """
    h, r = _as_columns(hashes, radii)
    parts, cols = [], [np.ascontiguousarray(h[:, k]) for k in range(h.shape[1])]
    idx_bits = _index_bits(len(h))
    for combo in itertools.product(*(blocks(x) for x in r)):
        parts.extend(_self_search(cols, _combo_key(h, combo, 64 - idx_bits), idx_bits, r))
    return _finish(parts, h.shape[1], len(h), unordered=True)


@dataclass(frozen=True)
class BlockPartition:
    """The rows of one block combination whose key falls in one partition: a unit of work (picklable).

    Pairs within the radii share a key in some combination, and equal keys fall in one partition, so the
    partitions of all combinations together find every pair.
    """

    rows: np.ndarray  # int64 [m], row ids in the whole search
    hashes: np.ndarray  # uint64 [m, K]
    key: np.ndarray  # uint64 [m]
    key_bits: int
    radii: np.ndarray


def search_partition(task: BlockPartition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs ``(i, j, dist)`` among one partition's rows, as row ids of the whole search."""
    idx_bits = 64 - task.key_bits  # the whole search's index width: the key leaves that much room
    cols = [np.ascontiguousarray(task.hashes[:, k]) for k in range(task.hashes.shape[1])]
    found = list(_self_search(cols, task.key, idx_bits, task.radii))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(task.radii)), np.uint8)
    a, b, d = (np.concatenate(x) for x in zip(*found))
    return task.rows[a], task.rows[b], d


def block_partitions(hashes: np.ndarray, radii: Sequence[int], combo: Sequence[tuple[int, int]],
                     partitions: int) -> list[BlockPartition]:
    """The work units of one block combination: its rows split into ``partitions`` by key value."""
    h, r = _as_columns(hashes, radii)
    key_bits = 64 - _index_bits(len(h))
    key = _combo_key(h, combo, key_bits)
    part = (key * _U64(_MIX[0])) >> _U64(32)  # spread the key's value over the partitions
    part = (part % _U64(partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    return [BlockPartition(order[lo:hi], h[order[lo:hi]], key[order[lo:hi]], key_bits, r)
            for lo, hi in zip(bounds[:-1], bounds[1:]) if hi - lo >= 2]


def hamming_pairs_on(engine: Any, hashes: np.ndarray, radii: Sequence[int], partitions: int = 8):
    """:func:`hamming_pairs` with the candidate search of every (block combination, key partition) run as a
    unit of ``engine`` (e.g. Ray tasks); the output is the same, byte for byte.

    Combinations go one after another, so the driver holds one combination's partitions at a time.
    """
    h, r = _as_columns(hashes, radii)
    found = []
    for combo in itertools.product(*(blocks(x) for x in r)):
        for task, result in engine.map_units(search_partition, block_partitions(h, r, combo, partitions)):
            if not isinstance(result, tuple):
                raise RuntimeError(f"a Hamming search partition failed: {getattr(result, 'error', result)}")
            found.append(result)
    return _finish(found, h.shape[1], len(h), unordered=True)


def hamming_pairs_between(queries: np.ndarray, index: np.ndarray, radii: Sequence[int]):
    """All ``(query row, index row)`` pairs within ``radii[k]`` bits on every column ``k``.

    Args:
        queries: ``uint64 [M, K]``; index: ``uint64 [N, K]``; radii: ``K`` radii in bits.

    Returns:
        ``(q int64 [E], i int64 [E], dist uint8 [E, K])`` sorted by ``(q, i)``.
    """
    qh, r = _as_columns(queries, radii)
    ih, _ = _as_columns(index, radii)
    parts = []
    qcols = [np.ascontiguousarray(qh[:, k]) for k in range(qh.shape[1])]
    icols = [np.ascontiguousarray(ih[:, k]) for k in range(ih.shape[1])]
    idx_bits = _index_bits(max(len(qh), len(ih)))
    for combo in itertools.product(*(blocks(x) for x in r)):
        qkey = _combo_key(qh, combo, 63 - idx_bits)
        ikey = _combo_key(ih, combo, 63 - idx_bits)
        parts.extend(_cross_search(qcols, icols, qkey, ikey, idx_bits, r))
    return _finish(parts, qh.shape[1], max(len(ih), 1), unordered=False)


def brute_force_pairs(hashes: np.ndarray, radii: Sequence[int], chunk: int = 2048):
    """Reference all-pairs search (``O(N²)``), same output as :func:`hamming_pairs`; for tests and benchmarks."""
    h, r = _as_columns(hashes, radii)
    out_i, out_j, out_d = [], [], []
    for lo in range(0, len(h), chunk):
        block = h[lo : lo + chunk]
        dist = np.stack([popcount(block[:, None, k] ^ h[None, :, k]) for k in range(h.shape[1])], axis=-1)
        ok = (dist <= r).all(axis=-1) & (np.arange(len(h))[None, :] > np.arange(lo, lo + len(block))[:, None])
        a, b = np.nonzero(ok)
        out_i.append(a + lo), out_j.append(b), out_d.append(dist[a, b])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, h.shape[1]), np.uint8)
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_d).astype(np.uint8))
