"""The overlap search of the dedup stage: the build's features parts → ``overlap`` edges between tiles of
different scenes, and the ``overlap_*`` columns of ``dedup.parquet`` (:mod:`rs4m.overlap` does the search).

An overlap edge joins two tiles of different scenes sharing at least ``overlap_frac`` of the smaller tile's
ground, where each is the other's best match in the other's scene (mutual best: a copy overlapping several
tiles of one scene joins only the one it overlaps most, so that union-find does not chain the overlapping tiles
of one scene into one group through it); its distance is ``1 - overlap_frac``. A tile that leaves the manifest
as an overlap duplicate gets the fraction, scale and rotation of its strongest overlap edge (the one
:func:`rs4m.dedup.resolve` took its distance from): its own pixel size in the other tile's pixels, and the
rotation (degrees, counter-clockwise) onto it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rs4m import dedup as dd
from rs4m.config import DedupConfig
from rs4m.errors import OutputError
from rs4m.layout import OutputLayout
from rs4m.tablestream import find_sorted

OVERLAP = "overlap"


@dataclass(frozen=True)
class OverlapEdges:
    """``overlap`` edges between dedup rows and, per edge ``[E]``, the scale of ``j`` in ``i``'s pixels, the
    rotation of ``j`` onto ``i`` and whether ``j`` was mirrored first."""

    edges: dd.Edges
    scale: np.ndarray
    rotation: np.ndarray
    mirrored: np.ndarray
    counts: dict


def feature_parts(layout: OutputLayout) -> list:
    """The build's features parts; an :class:`OutputError` that says what to run when a unit has none, or has
    features of an older extraction (:data:`rs4m.overlap.store.FEATURES_VERSION`)."""
    units = {int(p.stem.split("-")[1]) for p in layout.tile_parts()}
    have = {int(p.stem.split("-")[1]) for p in layout.feature_parts()}
    missing = sorted(units - have)
    if missing:
        raise OutputError(f"overlap search needs the tiles' local features, but {len(missing)} of {len(units)} units "
                          f"have none (unit {missing[0]} first); run `rs4m build {layout.root} --overlap` (or with "
                          "[dedup] overlap = true in the recipe) to compute them")
    from rs4m.overlap.store import part_is_current, settings

    parts = [layout.feature_part(u) for u in sorted(units)]
    stale = [p for p in parts if not part_is_current(p)]
    if stale:  # features of another extraction do not match those of this one (nor benchmark images')
        raise OutputError(f"overlap search needs features made with the current extraction ({settings()}), but "
                          f"{len(stale)} of {len(parts)} features parts are unreadable or were made otherwise "
                          f"({stale[0].name} first); run `rs4m build {layout.root} --overlap` to make them again")
    return parts


def overlap_edges(layout: OutputLayout, ids: np.ndarray, searchable: np.ndarray, config: DedupConfig,
                  engine=None) -> OverlapEdges:
    """Overlap edges among the dedup rows whose tile ids are ``ids`` (``S`` array ``[N]``) and ``searchable``;
    the candidate search and verification run on ``engine``'s workers when one is given (a cluster engine)."""
    from rs4m.overlap.search import find_overlaps_in_parts

    started = time.perf_counter()
    # the descriptors are read a table's bytes at a time from a temp file of dedup.parquet's (removed after; one
    # a killed search leaves is a leftover the next build removes)
    pairs, fs = find_overlaps_in_parts(feature_parts(layout), config.overlap_frac, layout.root, engine=engine,
                                       tmp_prefix=f".{layout.dedup.name}.")
    order = np.argsort(ids, kind="stable")
    fs_ids = np.array(fs.ids, dtype=ids.dtype if len(ids) else "S1")
    pos, found = find_sorted(ids[order], fs_ids)
    row = np.where(found, order[pos], -1)
    ok = np.ones(len(row), bool)
    ok[found] = searchable[row[found]]
    keep = ok[pairs.i] & ok[pairs.j] & (row[pairs.i] >= 0) & (row[pairs.j] >= 0)
    keep[keep] = mutual_best(pairs.i[keep], pairs.j[keep], pairs.frac[keep], fs.group)
    i, j = row[pairs.i[keep]], row[pairs.j[keep]]
    edges = dd.Edges(i, j, 1.0 - pairs.frac[keep], OVERLAP)
    counts = {"features": len(fs), "pairs": int(keep.sum()), "seconds": round(time.perf_counter() - started, 3)}
    return OverlapEdges(edges, pairs.scale[keep], pairs.rotation[keep], pairs.mirrored[keep], counts)


def _best_per(node: np.ndarray, other: np.ndarray, other_group: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """``bool [E]``: edge is ``node``'s best (largest ``frac``, then smallest ``other``) in ``other``'s group."""
    order = np.lexsort((other, -frac, other_group, node))
    key_node, key_group = node[order], other_group[order]
    first = np.concatenate([[True], (key_node[1:] != key_node[:-1]) | (key_group[1:] != key_group[:-1])])
    best = np.zeros(len(node), bool)
    best[order[first]] = True
    return best


def mutual_best(i: np.ndarray, j: np.ndarray, frac: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``bool [E]``: pairs ``(i, j)`` where ``j`` is ``i``'s best match among the tiles of ``j``'s group and
    ``i`` is ``j``'s best among ``i``'s group."""
    if not len(i):
        return np.zeros(0, bool)
    return _best_per(i, j, group[j], frac) & _best_per(j, i, group[i], frac)


def overlap_columns(n: int, found: OverlapEdges, dup_reason: np.ndarray) -> dict[str, np.ndarray]:
    """``overlap_frac``, ``overlap_scale``, ``overlap_rotation`` ``float64 [N]`` (NaN where not an overlap
    duplicate), from each overlap duplicate's strongest overlap edge."""
    e = found.edges
    node = np.concatenate([e.i, e.j])
    dist = np.concatenate([e.distance, e.distance])
    # seen from i, j's transform inverts: 1 / scale, and the rotation reverses unless a mirror is in it
    scale = np.concatenate([1.0 / found.scale, found.scale])
    rotation = np.concatenate([np.where(found.mirrored, found.rotation, -found.rotation), found.rotation])
    order = np.lexsort((dist, node))  # as dd.resolve picks each tile's distance: smallest first, then edge order
    sorted_node = node[order]
    first = np.flatnonzero(np.concatenate([[True], sorted_node[1:] != sorted_node[:-1]])) if len(order) else order
    out = {name: np.full(n, np.nan) for name in ("overlap_frac", "overlap_scale", "overlap_rotation")}
    if len(order):
        rows, pick = sorted_node[first], order[first]
        out["overlap_frac"][rows] = 1.0 - dist[pick]
        out["overlap_scale"][rows] = scale[pick]
        out["overlap_rotation"][rows] = rotation[pick]
    is_overlap = np.array([r == OVERLAP for r in dup_reason.tolist()], bool) if n else np.zeros(0, bool)
    for values in out.values():
        values[~is_overlap] = np.nan
    return out
