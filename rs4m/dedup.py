"""Duplicate detection on arrays, no file IO: exact, near and geo-overlap pairs, union-find and the keep policy.

Every detector returns :class:`Edges` (pairs of row indices with a distance and a reason). :func:`resolve`
joins all edges with union-find into groups, keeps one tile per group and says of every other one what it
duplicates and why. Benchmark leakage is in :mod:`rs4m.leakage`.

Definitions:

* **exact**: equal ``sha256`` of the stored bytes, or equal ``pixel_sha256`` of the pixels (distance 0).
* **near**: pHash within ``radius_bits`` *and* dHash within ``dhash_radius_bits`` (distance: pHash bits).
  Tiles below a richness threshold are left out: flat tiles collapse onto a few hash values.
* **geo**: two georeferenced tiles of *different* scenes whose lon/lat footprints overlap by at least a
  threshold, at comparable GSD (ratio ≤ ``max_gsd_ratio``). The overlap is measured by default as
  *containment*, area(A ∩ B) / min(area A, area B): a quadrant of a scene is contained in it (1.0) although
  their IoU is only 0.25, while tiles that merely touch score 0. ``measure="iou"`` uses IoU instead.
  Distance: 1 − overlap.
* **overlap**: two tiles of different scenes showing the same ground without georeference (local features
  and a verified similarity transform, :mod:`rs4m.overlap`; found by :mod:`rs4m.stages.overlap`).
  Distance: 1 − the shared ground over the smaller tile's area.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rs4m.hamming import hamming_pairs, hamming_pairs_between, hamming_pairs_on
from rs4m.hashing import dhash_dihedral, phash_dihedral

#: edge reasons, strongest first: a tile joined by several kinds of edge reports the strongest
REASONS = ("exact", "near", "overlap", "geo")
LEAK = "leak"
GEO_MEASURES = ("containment", "iou")


@dataclass(frozen=True)
class Edges:
    """Undirected pairs of row indices: ``i, j int64 [E]``, ``distance float64 [E]``, all of one ``reason``."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    reason: str

    def __len__(self) -> int:
        return len(self.i)

    @classmethod
    def empty(cls, reason: str) -> Edges:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), reason)


def exact_edges(keys: Sequence[str | None], reason: str = "exact") -> Edges:
    """Rows with equal non-null ``keys [N]`` (e.g. sha256): each member is joined to its group's first row."""
    codes, _ = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=True)
    rows = np.flatnonzero(codes >= 0)
    _, first = np.unique(codes[rows], return_index=True)
    first_of_code = np.full(codes.max() + 1 if len(rows) else 0, -1, np.int64)
    first_of_code[codes[rows[first]]] = rows[first]
    head = first_of_code[codes[rows]]
    keep = head != rows
    return Edges(head[keep], rows[keep], np.zeros(int(keep.sum())), reason)


def _searchable_rows(n: int, searchable: np.ndarray | None) -> np.ndarray:
    return np.arange(n) if searchable is None else np.flatnonzero(np.asarray(searchable, bool))


def near_edges(phash: np.ndarray, dhash: np.ndarray, radius_bits: int, dhash_radius_bits: int,
               searchable: np.ndarray | None = None, engine: Any = None) -> Edges:
    """Pairs within ``radius_bits`` on pHash and ``dhash_radius_bits`` on dHash (multi-index hashing).

    Args:
        phash, dhash: ``uint64 [N]``; searchable: ``bool [N]`` rows taking part (None: all);
        engine: run the candidate search as units of this engine (:func:`rs4m.hamming.hamming_pairs_on`;
            same result), None: in this process.
    """
    rows = _searchable_rows(len(phash), searchable)
    hashes = np.stack([np.asarray(phash, np.uint64)[rows], np.asarray(dhash, np.uint64)[rows]], axis=1)
    radii = [radius_bits, dhash_radius_bits]
    if engine is None:
        a, b, dist = hamming_pairs(hashes, radii)
    else:  # one block combination at a time, cut into as many key ranges as the engine has CPUs (at least 8)
        parts = max(8, int(getattr(engine, "parallelism", 8)))
        a, b, dist = hamming_pairs_on(engine, hashes, radii, partitions=parts)
    return Edges(rows[a], rows[b], dist[:, 0].astype(np.float64), "near")


def flip_estimate_edges(phash: np.ndarray, dhash: np.ndarray, radius_bits: int, dhash_radius_bits: int,
                        searchable: np.ndarray | None = None) -> Edges:
    """Pairs where one tile is a flipped (left-right, up-down or 180° turned) copy of the other, judged from
    the stored hashes alone (:func:`rs4m.hashing.phash_dihedral`, :func:`rs4m.hashing.dhash_dihedral`).

    A fallback for tiles without canonical hashes: the estimates are a few bits off, so recall is lower than
    with canonical hashes, and 90° rotations cannot be found this way (dHash has no vertical differences).
    """
    rows = _searchable_rows(len(phash), searchable)
    ph, dh = np.asarray(phash, np.uint64)[rows], np.asarray(dhash, np.uint64)[rows]
    var_p, var_d = phash_dihedral(ph)[:, 1:4], dhash_dihedral(dh)[:, 1:4]
    queries = np.stack([var_p.ravel(), var_d.ravel()], axis=1)  # row r, variant v at r * 3 + v
    q, b, dist = hamming_pairs_between(queries, np.stack([ph, dh], axis=1), [radius_bits, dhash_radius_bits])
    a = q // 3
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    _, first = np.unique(lo * max(len(rows), 1) + hi, return_index=True)
    return Edges(rows[lo[first]], rows[hi[first]], dist[keep][first, 0].astype(np.float64), "near")


def _gsd_ok(gsd_a: np.ndarray, gsd_b: np.ndarray, max_ratio: float) -> np.ndarray:
    """GSDs within ``max_ratio`` of each other; unknown (NaN) GSDs do not block a pair."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.maximum(gsd_a, gsd_b) / np.minimum(gsd_a, gsd_b)
    return ~(ratio > max_ratio)


def geo_edges(footprints: Sequence[bytes | None], scene_ids: Sequence[str], gsd_m: np.ndarray,
              min_overlap: float = 0.5, max_gsd_ratio: float = 2.0, measure: str = "containment",
              chunk: int = 100_000) -> Edges:
    """Pairs of tiles of different scenes whose footprints overlap by ``min_overlap`` at comparable GSD.

    Args:
        footprints: ``N`` WKB polygons in lon/lat (None where not georeferenced).
        scene_ids: ``N`` scene ids; tiles of one scene never pair (their overlap is the tiling's stride).
        gsd_m: ``float [N]`` (NaN where unknown).
        measure: ``"containment"`` (intersection over the smaller area) or ``"iou"``.
    """
    import shapely

    if measure not in GEO_MEASURES:
        raise ValueError(f"measure must be one of {GEO_MEASURES}, not {measure!r}")
    wkb = np.array(list(footprints), dtype=object)
    rows = np.flatnonzero(pd.notna(pd.Series(wkb, dtype=object)).to_numpy())
    if len(rows) < 2:
        return Edges.empty("geo")
    geoms = shapely.from_wkb(wkb[rows])
    area = shapely.area(geoms)
    scenes = pd.factorize(pd.Series(np.asarray(scene_ids, dtype=object)[rows]))[0]
    gsd = np.asarray(gsd_m, np.float64)[rows]
    tree = shapely.STRtree(geoms)
    parts = []
    for lo in range(0, len(rows), chunk):
        q, t = tree.query(geoms[lo : lo + chunk], predicate="intersects")
        q = q + lo
        keep = (q < t) & (scenes[q] != scenes[t]) & _gsd_ok(gsd[q], gsd[t], max_gsd_ratio)
        q, t = q[keep], t[keep]
        inter = shapely.area(shapely.intersection(geoms[q], geoms[t]))
        denom = np.minimum(area[q], area[t]) if measure == "containment" else area[q] + area[t] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = np.where(denom > 0, inter / denom, 0.0)
        ok = overlap >= min_overlap
        parts.append((q[ok], t[ok], overlap[ok]))
    q, t, overlap = (np.concatenate(x) for x in zip(*parts, strict=True))
    return Edges(rows[q], rows[t], 1.0 - overlap, "geo")


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over ``n`` nodes and edges ``(i, j)``: ``int64 [n]``, each node's smallest member index.

    Vectorised: hook every root onto the smallest root it touches, then compress paths, until stable.
    """
    parent = np.arange(n, dtype=np.int64)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        differ = ri != rj
        if not differ.any():
            return parent
        np.minimum.at(parent, np.maximum(ri, rj)[differ], np.minimum(ri, rj)[differ])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def keep_rank(sources: Sequence[str] | np.ndarray, source_priority: Sequence[str], gsd_m: np.ndarray,
              area_px: np.ndarray, tile_ids: Sequence[str]) -> np.ndarray:
    """Preference rank of every tile, 0 = most preferred: ``int64 [N]``.

    The keep policy, in order: a source listed earlier in ``source_priority`` (unlisted sources after all
    listed ones, alike), then the smaller ``gsd_m`` (higher resolution; unknown last), then the larger
    ``area_px`` (width × height), then the smaller ``tile_id``.
    """
    src_codes, src_names = pd.factorize(pd.Series(sources, dtype=object))
    id_order = pd.factorize(pd.Series(tile_ids, dtype=object), sort=True)[0]  # string order as integers
    return keep_rank_codes(src_codes, list(src_names), source_priority, gsd_m, area_px, id_order)


def keep_rank_codes(src_codes: np.ndarray, src_names: Sequence[str], source_priority: Sequence[str],
                    gsd_m: np.ndarray, area_px: np.ndarray, id_order: np.ndarray) -> np.ndarray:
    """:func:`keep_rank` from integer columns: ``src_codes [N]`` index ``src_names``; ``id_order [N]`` is each
    tile id's position in sorted order (tile ids are unique)."""
    order_of = {name: k for k, name in enumerate(source_priority)}
    src_rank = np.array([order_of.get(s, len(order_of)) for s in src_names], np.int64)[src_codes]
    gsd = np.nan_to_num(np.asarray(gsd_m, np.float64), nan=np.inf)
    order = np.lexsort((id_order, -np.asarray(area_px, np.float64), gsd, src_rank))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def group_id(tile_id: str) -> int:
    """Stable id of the group whose kept tile is ``tile_id``: 63 bits of its BLAKE2b, same on every run."""
    return int.from_bytes(hashlib.blake2b(tile_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True)
class Groups:
    """Per tile (``[N]`` each): ``dup_group`` (int64, -1 when in no group), ``dup_of`` (kept tile id or None),
    ``dup_reason`` (None for kept and ungrouped tiles), ``distance`` (NaN where none)."""

    dup_group: np.ndarray
    dup_of: np.ndarray
    dup_reason: np.ndarray
    distance: np.ndarray


def _best_incident(n: int, edges: list[Edges]) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the strongest reason code among its edges (len(REASONS) if none) and its smallest distance."""
    code = {r: k for k, r in enumerate(REASONS)}
    node = np.concatenate([np.concatenate([e.i, e.j]) for e in edges] + [np.zeros(0, np.int64)])
    reason = np.concatenate([np.full(2 * len(e), code[e.reason]) for e in edges] + [np.zeros(0, np.int64)])
    dist = np.concatenate([np.concatenate([e.distance, e.distance]) for e in edges] + [np.zeros(0)])
    order = np.lexsort((dist, reason, node))
    node, reason, dist = node[order], reason[order], dist[order]
    first = np.flatnonzero(np.concatenate([[True], node[1:] != node[:-1]])) if len(node) else node
    best_reason, best_dist = np.full(n, len(REASONS)), np.full(n, np.nan)
    best_reason[node[first]], best_dist[node[first]] = reason[first], dist[first]
    return best_reason, best_dist


def _strings(values: np.ndarray) -> list[str]:
    return [v.decode("ascii") if isinstance(v, bytes) else v for v in values.tolist()]


def resolve(tile_ids: Sequence[str], edges: list[Edges], rank: np.ndarray,
            leak_distance: np.ndarray | None = None, leak_edges: Edges | None = None) -> Groups:
    """Union-find over all edges → groups; keep the best-ranked tile of each, describe the others.

    Args:
        tile_ids: ``N`` ids (strings, or a numpy ``S`` array of ASCII ids, which costs no Python object per
            tile); edges: detector outputs (reasons from :data:`REASONS`);
        rank: ``int64 [N]``, a permutation of ``0..N-1`` (:func:`keep_rank`);
        leak_distance: ``float [N]``, not NaN for tiles that leak a benchmark image;
        leak_edges: joins tiles that leak the same benchmark image.

    A group with a leaked tile has no kept tile: all its members get ``dup_reason = "leak"`` (they copy a
    benchmark image, directly or through a duplicate). Elsewhere every member but the kept one gets
    ``dup_of`` = kept id and the strongest reason among its own edges (exact > near > geo) with the smallest
    distance of that reason.
    """
    n = len(tile_ids)
    ids = tile_ids if isinstance(tile_ids, np.ndarray) and tile_ids.dtype.kind == "S" else \
        np.asarray(tile_ids, dtype=object)
    leaked = np.zeros(n, bool) if leak_distance is None else ~np.isnan(leak_distance)
    every = [e for e in edges if len(e)] + ([leak_edges] if leak_edges is not None and len(leak_edges) else [])
    labels = connected_components(n, *(np.concatenate([getattr(e, a) for e in every] + [np.zeros(0, np.int64)])
                                      for a in ("i", "j")))
    size = np.bincount(labels, minlength=n)
    group_leaks = np.bincount(labels, weights=leaked, minlength=n) > 0
    in_group = (size[labels] > 1) | leaked
    best_rank = np.full(n, n, np.int64)  # per label: the lowest rank among its members
    np.minimum.at(best_rank, labels, np.asarray(rank, np.int64))
    node_of_rank = np.argsort(rank)
    kept = node_of_rank[np.minimum(best_rank[labels], n - 1)] if n else labels
    reason, dist = _best_incident(n, [e for e in edges if len(e)])
    dup_group = np.full(n, -1, np.int64)
    heads, where = np.unique(kept[in_group], return_inverse=True)
    dup_group[in_group] = np.array([group_id(t) for t in _strings(ids[heads])], np.int64)[where] if len(heads) \
        else []
    is_dup = in_group & (kept != np.arange(n)) & ~group_leaks[labels]
    dup_of = np.full(n, None, dtype=object)
    dup_of[is_dup] = np.array(_strings(ids[kept[is_dup]]), dtype=object)
    names = np.array(list(REASONS) + [None], dtype=object)
    dup_reason = names[np.where(is_dup, reason, len(names) - 1)]  # the last name is None
    distance = np.where(is_dup, dist, np.nan)
    leak_group = in_group & group_leaks[labels]
    dup_reason[leak_group] = LEAK
    distance[leak_group] = np.nan if leak_distance is None else leak_distance[leak_group]
    return Groups(dup_group, dup_of, dup_reason, distance)
