"""Dedup and catalog in bounded memory: the tiles parts are read a part and a few columns at a time.

The in-memory steps (``run_dedup(..., bounded=False)``, ``run_catalog(..., bounded=False)``) hold every column
of every tile as Arrow and Python objects: about 2 GB per million tiles. Here the driver keeps per tile only
fixed-size numpy columns (tile id as 32 bytes, hashes, GSD, area, source code: ≈ 100 bytes a tile) and reads
the rest again, part by part, when it needs it:

* exact duplicates: one digest column at a time, values hashed to 64 bits to find candidates, and only the
  candidates' values read back and compared;
* the Hamming search runs on the hash arrays (:func:`rs4m.dedup.near_edges`);
* geo candidates come from a band sweep over the footprints' bounding boxes; only the tiles of candidate
  pairs (different scenes, boxes overlapping, comparable GSD) have their footprints loaded to measure the
  overlap, with the same shapely operations as :func:`rs4m.dedup.geo_edges`;
* union-find works on integer row ids (:func:`rs4m.dedup.resolve`);
* ``dedup.parquet`` and ``manifest.parquet`` are streamed (:class:`rs4m.tablestream.ParquetStream`); the
  manifest's global sort by ``tile_id`` goes through spill files, one per output row group.

The files written are byte-identical to those of the in-memory steps (tested on builds).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs4m import dedup as dd
from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.hamming import expand_pairs
from rs4m.layout import OutputLayout
from rs4m.tablestream import ROW_GROUP_ROWS, ParquetStream, find_sorted, fixed_width

CANONICAL = ["phash_canonical", "dhash_canonical"]


@dataclass
class Tiles:
    """The non-filtered tiles of a build as compact columns, rows in parts order (as ``read_tiles``)."""

    parts: list[Path]
    rows_per_part: list[int]
    ids: np.ndarray  # S<w> [N]: 32 bytes for rs4m's tile ids
    source_codes: np.ndarray  # int32 [N]
    source_names: list[str]
    hashes: dict[str, np.ndarray]  # uint64 [N] each, nulls as 0
    valid: dict[str, np.ndarray]  # bool [N] each
    richness: np.ndarray  # float64 [N], NaN unknown
    gsd_m: np.ndarray  # float64 [N], NaN unknown
    area_px: np.ndarray  # float64 [N]

    def __len__(self) -> int:
        return len(self.ids)


def _part_columns(part: Path, columns: list[str], canonical: bool = False) -> pa.Table:
    """The non-filtered rows of one tiles part, ``columns`` only (validated as the in-memory read does)."""
    table = mf.read_table(part, mf.TILES_SCHEMA, columns=[*columns, "filter_reason"])
    if canonical:
        extra = pq.read_table(part, columns=CANONICAL)
        for name in CANONICAL:
            table = table.append_column(name, extra.column(name).cast(pa.uint64()))
    return table.filter(pc.is_null(table["filter_reason"]))


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.float64()).to_numpy().astype(np.float64) if len(column) else np.zeros(0)


def load_tiles(layout: OutputLayout) -> Tiles:
    """Compact columns of every non-filtered tile; raises :class:`OutputError` without tiles parts."""
    parts = layout.tile_parts()
    if not parts:
        raise OutputError(f"no tiles parts in {layout.tiles_dir}; run `rs4m tile {layout.root}` first")
    canonical = all(set(CANONICAL) <= set(pq.read_schema(p).names) for p in parts)
    names = ["phash", "dhash"] + (CANONICAL if canonical else [])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ["ids", "src", "richness", "gsd", "area", *names]}
    valid: dict[str, list[np.ndarray]] = {k: [] for k in names}
    source_index: dict[str, int] = {}
    rows = []
    for part in parts:
        t = _part_columns(part, ["tile_id", "source", "phash", "dhash", "richness", "gsd_m", "width", "height"],
                          canonical)
        rows.append(t.num_rows)
        cols["ids"].append(fixed_width(t["tile_id"]))
        enc = t["source"].combine_chunks().dictionary_encode()
        lookup = np.array([source_index.setdefault(s, len(source_index)) for s in enc.dictionary.to_pylist()],
                          np.int32)
        cols["src"].append(lookup[enc.indices.to_numpy(zero_copy_only=False)] if len(t) else np.zeros(0, np.int32))
        cols["richness"].append(_floats(t["richness"]))
        cols["gsd"].append(_floats(t["gsd_m"]))
        cols["area"].append(np.nan_to_num(_floats(t["width"]) * _floats(t["height"])))
        for name in names:
            cols[name].append(t[name].fill_null(0).to_numpy().astype(np.uint64))
            valid[name].append(np.asarray(t[name].is_valid(), bool))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return Tiles(parts, rows, cat["ids"], cat["src"], list(source_index), {k: cat[k] for k in names},
                 {k: np.concatenate(v) for k, v in valid.items()}, cat["richness"], cat["gsd"], cat["area"])


def _string_hashes(column: pa.ChunkedArray) -> np.ndarray:
    """64-bit hash of each value (this process's ``hash``; only used to find candidates), nulls as 0."""
    return np.fromiter((hash(v) & 0xFFFFFFFFFFFFFFFF if v is not None else 0 for v in column.to_pylist()),
                       np.uint64, count=len(column))


def exact_edges_bounded(tiles: Tiles, column: str) -> dd.Edges:
    """As :func:`rs4m.dedup.exact_edges` on a string column (e.g. ``sha256``), read part by part.

    Rows whose values hash alike are the candidates (8 bytes a tile); only their values are read back and
    compared exactly.
    """
    valid, hashed = [], []
    for part in tiles.parts:
        col = _part_columns(part, [column])[column]
        valid.append(np.asarray(col.is_valid(), bool))
        hashed.append(_string_hashes(col))
    ok, key = np.concatenate(valid), np.concatenate(hashed)
    rows = np.flatnonzero(ok)
    key = key[rows]
    order = np.argsort(key, kind="stable")
    k = key[order]
    twin = np.concatenate([[False], k[1:] == k[:-1]]) | np.concatenate([k[:-1] == k[1:], [False]])
    candidates = np.sort(rows[order[twin]])
    del key, order, k, twin
    values = _values_of(tiles, column, candidates)
    same = dd.exact_edges(values)
    return dd.Edges(candidates[same.i], candidates[same.j], same.distance, "exact")


def _values_of(tiles: Tiles, column: str, rows: np.ndarray) -> list:
    """The values of ``column`` at the (sorted) global ``rows``, read part by part."""
    out, base = [], 0
    for part, n in zip(tiles.parts, tiles.rows_per_part, strict=True):
        local = rows[(rows >= base) & (rows < base + n)] - base
        if len(local):
            out.extend(_part_columns(part, [column])[column].take(pa.array(local)).to_pylist())
        base += n
    return out


#: box entries swept at a time (bounds the sweep's working memory)
SWEEP_CHUNK = 1 << 20


def _footprint_boxes(tiles: Tiles) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a footprint and their bounding boxes ``float64 [M, 4]``."""
    import shapely

    rows, boxes, base = [], [], 0
    for part, n in zip(tiles.parts, tiles.rows_per_part, strict=True):
        geometry = _part_columns(part, ["geometry"])["geometry"]
        has = np.asarray(geometry.is_valid(), bool)
        rows.append(np.flatnonzero(has) + base)
        boxes.append(shapely.bounds(shapely.from_wkb(geometry.filter(pa.array(has)).to_numpy(zero_copy_only=False)))
                     .reshape(-1, 4))
        base += n
    return np.concatenate(rows), np.concatenate(boxes)


def _overlapping_boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(a < b)`` of boxes ``[minx, miny, maxx, maxy]`` that overlap (edges included), each once.

    Boxes go into horizontal bands of the grid they touch (about 1–2 bands each); within a band, sorted by
    ``minx``, a box's candidates are the boxes after it whose ``minx`` is at most its ``maxx`` (a sweep). A
    pair is reported by the band holding ``max(miny)`` of the two, so once. Bands are swept a chunk at a time.
    """
    if len(boxes) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    band_h = max(float(np.quantile(boxes[:, 3] - boxes[:, 1], 0.95)), 1e-9)
    y0 = np.floor(boxes[:, 1] / band_h).astype(np.int64)
    n = (np.floor(boxes[:, 3] / band_h).astype(np.int64) - y0 + 1).astype(np.int32)
    box = np.repeat(np.arange(len(boxes), dtype=np.int32), n)
    band = np.repeat(y0, n) + (np.arange(len(box)) - np.repeat(np.cumsum(n, dtype=np.int64) - n, n))
    del y0, n
    order = np.argsort(band, kind="stable")
    box, band = box[order], band[order]
    del order
    cuts = np.flatnonzero(np.concatenate([[True], band[1:] != band[:-1], [True]]))
    out_a, out_b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    lo = 0
    while lo < len(cuts) - 1:  # whole bands, about SWEEP_CHUNK entries at a time
        hi = max(int(np.searchsorted(cuts, cuts[lo] + SWEEP_CHUNK, "right")) - 1, lo + 1)
        a, b = _sweep(boxes, box[cuts[lo] : cuts[hi]], band[cuts[lo] : cuts[hi]], band_h)
        out_a.append(a)
        out_b.append(b)
        lo = hi
    return np.concatenate(out_a), np.concatenate(out_b)


def _sweep(boxes: np.ndarray, box: np.ndarray, band: np.ndarray, band_h: float) -> tuple[np.ndarray, np.ndarray]:
    """The reported pairs among the entries ``(box, band)`` of whole bands (see :func:`_overlapping_boxes`)."""
    order = np.lexsort((boxes[box, 0], band))
    box, band = box[order].astype(np.int64), band[order]
    # a monotone search key per (band, minx); the margin keeps the sweep a superset despite rounding
    rank = np.concatenate([[0], np.cumsum(band[1:] != band[:-1])])
    x0, span = boxes[:, 0].min(), float(np.ptp(boxes[:, [0, 2]])) + 1.0
    key = rank * span + (boxes[box, 0] - x0)
    hi = np.searchsorted(key, rank * span + (boxes[box, 2] - x0) + 1e-6 * (1.0 + span * rank.max()), "right")
    pos = np.arange(len(box))
    out_a, out_b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for p, q in expand_pairs(pos, hi - pos - 1, pos + 1):
        a, b = box[p], box[q]
        ok = ((band[p] == band[q]) & (boxes[a, 0] <= boxes[b, 2]) & (boxes[b, 0] <= boxes[a, 2])
              & (boxes[a, 1] <= boxes[b, 3]) & (boxes[b, 1] <= boxes[a, 3])
              & (np.floor(np.maximum(boxes[a, 1], boxes[b, 1]) / band_h).astype(np.int64) == band[p]))
        out_a.append(np.minimum(a[ok], b[ok]))
        out_b.append(np.maximum(a[ok], b[ok]))
    return np.concatenate(out_a), np.concatenate(out_b)


def geo_edges_bounded(tiles: Tiles, min_overlap: float, max_gsd_ratio: float, measure: str,
                      chunk: int = 100_000) -> dd.Edges:
    """As :func:`rs4m.dedup.geo_edges` on the build's footprints, without holding every footprint."""
    import shapely

    if measure not in dd.GEO_MEASURES:
        raise ValueError(f"measure must be one of {dd.GEO_MEASURES}, not {measure!r}")
    rows, boxes = _footprint_boxes(tiles)
    a, b = _overlapping_boxes(boxes)
    del boxes
    keep = dd._gsd_ok(tiles.gsd_m[rows[a]], tiles.gsd_m[rows[b]], max_gsd_ratio)
    i, j = rows[a[keep]], rows[b[keep]]
    needed = np.unique(np.concatenate([i, j]))
    scene = dict(zip(needed.tolist(), _values_of(tiles, "scene_id", needed), strict=True))
    other = np.array([scene[x] != scene[y] for x, y in zip(i.tolist(), j.tolist(), strict=True)], bool)
    i, j = i[other], j[other]  # tiles of one scene never pair
    wkb = dict(zip(needed.tolist(), _values_of(tiles, "geometry", needed), strict=True))
    parts = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))]
    for lo in range(0, len(i), chunk):
        qi, qj = i[lo : lo + chunk], j[lo : lo + chunk]
        ga = shapely.from_wkb(np.array([wkb[r] for r in qi.tolist()], dtype=object))
        gb = shapely.from_wkb(np.array([wkb[r] for r in qj.tolist()], dtype=object))
        area_a, area_b = shapely.area(ga), shapely.area(gb)
        inter = shapely.area(shapely.intersection(ga, gb))
        denom = np.minimum(area_a, area_b) if measure == "containment" else area_a + area_b - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = np.where(denom > 0, inter / denom, 0.0)
        ok = overlap >= min_overlap
        parts.append((qi[ok], qj[ok], overlap[ok]))
    q, t, overlap = (np.concatenate(x) for x in zip(*parts, strict=True))
    return dd.Edges(q, t, 1.0 - overlap, "geo")


def _id_order(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, rank)``: the argsort of the ids and each id's position in sorted order."""
    order = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return order, rank


def read_leaks_bounded(layout: OutputLayout, ids: np.ndarray, order: np.ndarray):
    """As :func:`rs4m.stages.dedup.read_leaks`, finding the leaked rows by binary search on sorted ids."""
    path = layout.leakage
    if not path.exists() or not mf.read_metadata(path, "exclude"):
        return None, None
    leaks = mf.read_table(path, mf.LEAKAGE_SCHEMA)
    pos, found = find_sorted(ids[order], fixed_width(leaks["tile_id"]))
    leaks = leaks.filter(pa.array(found)).to_pandas()
    rows = order[pos[found]].astype(np.int64)
    distance = np.full(len(ids), np.nan)
    np.fmin.at(distance, rows, leaks["distance"].fillna(0.0).to_numpy(np.float64))
    image = (leaks["benchmark"] + "\x00" + leaks["benchmark_image"]).to_numpy(object)
    same_image = dd.exact_edges(list(image), reason="exact")
    return distance, dd.Edges(rows[same_image.i], rows[same_image.j], same_image.distance, "exact")


def find_edges_bounded(tiles: Tiles, config, searchable: np.ndarray, engine=None) -> tuple[list[dd.Edges], str]:
    """As :func:`rs4m.stages.dedup.find_edges`, on compact columns (the Hamming searches on ``engine``)."""
    edges = [exact_edges_bounded(tiles, "sha256"), exact_edges_bounded(tiles, "pixel_sha256")]
    r = (config.radius_bits, config.dhash_radius_bits)
    edges.append(dd.near_edges(tiles.hashes["phash"], tiles.hashes["dhash"], *r, searchable=searchable,
                               engine=engine))
    method = "off"
    if config.dihedral and "phash_canonical" in tiles.hashes:
        method = "canonical"
        ok = searchable & tiles.valid["phash_canonical"] & tiles.valid["dhash_canonical"]
        edges.append(dd.near_edges(tiles.hashes["phash_canonical"], tiles.hashes["dhash_canonical"], *r,
                                   searchable=ok, engine=engine))
    elif config.dihedral:
        method = "flip-estimate"
        edges.append(dd.flip_estimate_edges(tiles.hashes["phash"], tiles.hashes["dhash"], *r, searchable=searchable))
    if config.geo:
        edges.append(geo_edges_bounded(tiles, config.geo_iou, config.gsd_ratio, config.geo_measure))
    return edges, method


def write_dedup_bounded(layout: OutputLayout, tiles: Tiles, groups: dd.Groups,
                        dedup_table: Callable[..., pa.Table], overlap: dict[str, np.ndarray] | None = None) -> None:
    """``dedup.parquet`` part by part, byte-identical to ``dedup_table`` (the in-memory table builder of
    :mod:`rs4m.stages.dedup`) of all rows at once; ``overlap``: the overlap columns ``[N]`` when searched."""
    base = 0
    with ParquetStream(layout.dedup, mf.DEDUP_SCHEMA if overlap is None else mf.DEDUP_OVERLAP_SCHEMA) as out:
        for part, n in zip(tiles.parts, tiles.rows_per_part, strict=True):
            table = _part_columns(part, ["tile_id", "source", "scene_path"])
            piece = dd.Groups(*(getattr(groups, f)[base : base + n] for f in dd.Groups.__dataclass_fields__))
            cols = None if overlap is None else {k: v[base : base + n] for k, v in overlap.items()}
            out.write(dedup_table(table, piece, cols))
            base += n


def dedup_groups(layout: OutputLayout, config, engine=None):
    """The build's tiles, edges, dihedral method, searchable mask, groups (as the in-memory dedup) and the
    overlap edges with their transforms (None without overlap search)."""
    tiles = load_tiles(layout)
    has_hash = tiles.valid["phash"] & tiles.valid["dhash"]
    searchable = has_hash & ~(tiles.richness < config.min_richness)  # NaN richness stays searchable
    edges, method = find_edges_bounded(tiles, config, searchable, engine)
    found = None
    if config.overlap:
        from rs4m.stages.overlap import overlap_edges

        found = overlap_edges(layout, tiles.ids, searchable, config, engine)
        edges.append(found.edges)
    order, id_rank = _id_order(tiles.ids)
    leak_distance, leak_edges = read_leaks_bounded(layout, tiles.ids, order)
    rank = dd.keep_rank_codes(tiles.source_codes, tiles.source_names, config.source_priority, tiles.gsd_m,
                              tiles.area_px, id_rank)
    # resolve only indexes and compares the ids: an array of str serves as the Sequence[str] it declares
    groups = dd.resolve(tiles.ids, edges, rank, leak_distance, leak_edges)  # type: ignore[arg-type]
    return tiles, edges, method, searchable, groups, found


@dataclass
class DedupColumns:
    """The dedup columns of the grouped tiles (``dup_group`` not null), sorted by tile id for lookups."""

    ids: np.ndarray  # S<w> [G], sorted
    table: pa.Table  # dup_group, dup_of, dup_reason in the order of ``ids``

    @classmethod
    def read(cls, layout: OutputLayout) -> DedupColumns:
        names = ["tile_id", "dup_group", "dup_of", "dup_reason"]
        pieces = []
        if layout.dedup.exists():
            missing = set(names) - set(pq.read_schema(layout.dedup).names)
            if missing:
                raise OutputError(f"{layout.dedup} lacks column '{sorted(missing)[0]}'")
            for batch in pq.ParquetFile(layout.dedup).iter_batches(columns=names, batch_size=1 << 16):
                pieces.append(pa.Table.from_batches([batch]).filter(pc.is_valid(batch["dup_group"])))
        empty = pa.schema([mf.DEDUP_SCHEMA.field(n) for n in names]).empty_table()
        table = pa.concat_tables(pieces) if pieces else empty
        ids = fixed_width(table["tile_id"])
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], table.take(pa.array(order)).drop_columns(["tile_id"]))

    def columns_for(self, tile_ids: pa.ChunkedArray) -> pa.Table:
        """The dedup columns for ``tile_ids`` (nulls where a tile is in no group), in their order."""
        if not len(self.ids):
            return pa.table({f.name: pa.nulls(len(tile_ids), f.type) for f in mf.DEDUP_FIELDS})
        pos, found = find_sorted(self.ids, fixed_width(tile_ids))
        return self.table.take(pa.array(pos, mask=~found))


def _joined_part(part: Path, dedup: DedupColumns, columns: list[str] | None = None) -> pa.Table:
    """One tiles part with its dedup columns, in ``MANIFEST_SCHEMA`` (or ``columns`` of it)."""
    tiles = mf.read_table(part, mf.TILES_SCHEMA, columns=columns)
    extra = dedup.columns_for(tiles["tile_id"])
    for name in extra.column_names:
        tiles = tiles.append_column(name, extra[name])
    return tiles if columns else mf.conform(tiles, mf.MANIFEST_SCHEMA)


def _counts(per_source: dict[str, Counter], table: pa.Table, keep: np.ndarray) -> None:
    """Add one part's rows to the per-source counts of :func:`rs4m.stages.catalog.catalog_counts`."""
    filtered = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(table["filter_reason"]), 0), False), bool)
    leak = np.asarray(pc.fill_null(pc.equal(table["dup_reason"], "leak"), False), bool)
    kind = np.where(keep, 0, np.where(filtered, 1, np.where(leak, 2, 3)))
    names = ("tiles_kept", "filtered", "leaked", "duplicates")
    sources = table["source"].combine_chunks().dictionary_encode()
    combo, counts = np.unique(sources.indices.to_numpy(zero_copy_only=False) * 4 + kind, return_counts=True)
    for code, n in zip(combo.tolist(), counts.tolist(), strict=True):
        c = per_source.setdefault(sources.dictionary[code // 4].as_py(), Counter())
        c["tiles_total"] += n
        c[names[code % 4]] += n


def run_catalog_bounded(layout: OutputLayout, kept_mask: Callable[[pa.Table], pa.ChunkedArray]) -> dict:
    """Write ``manifest.parquet`` (see :func:`rs4m.stages.catalog.run_catalog`) with bounded memory.

    Pass 1 reads ``tile_id`` and the keep columns of every part and sorts the kept ids; the ids at every
    :data:`ROW_GROUP_ROWS`-th position cut the manifest into row groups. Pass 2 spills each part's kept rows
    to the spill file of their row group; pass 3 sorts each spill file and writes it as one row group.
    ``kept_mask`` is the catalog's rule for the rows that stay.
    """
    dedup = DedupColumns.read(layout)
    per_source: dict[str, Counter] = {}
    parts, kept_ids = layout.tile_parts(), []
    for part in parts:
        t = _joined_part(part, dedup, ["tile_id", "source", "filter_reason"])
        keep = np.asarray(kept_mask(t), bool)
        _counts(per_source, t, keep)
        kept_ids.append(fixed_width(t["tile_id"].filter(pa.array(keep))))
    ids = np.concatenate(kept_ids) if kept_ids else np.zeros(0, "S1")
    del kept_ids
    ids.sort()
    bounds = ids[ROW_GROUP_ROWS::ROW_GROUP_ROWS].copy()
    del ids
    spill_dir = fresh_spill_dir(layout.root)
    try:
        spills = _spill(parts, dedup, bounds, spill_dir, kept_mask)
        with ParquetStream(layout.manifest, mf.MANIFEST_SCHEMA) as out:
            for path in spills:
                group = pq.read_table(path)
                out.write(group.take(pc.sort_indices(group, [("tile_id", "ascending")])))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    total: Counter = sum(per_source.values(), Counter())
    keys = ("tiles_total", "tiles_kept", "filtered", "duplicates", "leaked")
    return {**{k: total[k] for k in keys},
            "sources": {s: {k: c[k] for k in keys} for s, c in sorted(per_source.items())}}


#: where the catalog spills sorted row groups; one writer at a time holds OUT's lock, so the name is fixed and a
#: folder left by a killed catalog is removed by the next one
SPILL_DIR = ".catalog-spill"


def fresh_spill_dir(root: Path) -> Path:
    """An empty ``OUT/.catalog-spill`` folder (what a killed catalog left there is removed first)."""
    path = Path(root) / SPILL_DIR
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.mkdir()
    return path


def _spill(parts: list[Path], dedup: DedupColumns, bounds: np.ndarray, spill_dir: Path, kept_mask) -> list[Path]:
    """Each part's kept rows, appended to the spill file of the output row group their tile id falls in."""
    paths = [spill_dir / f"group-{k:05d}.parquet" for k in range(len(bounds) + 1)]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for part in parts:
            t = _joined_part(part, dedup)
            t = t.filter(kept_mask(t))
            group = np.searchsorted(bounds, fixed_width(t["tile_id"]), side="right")
            for k in np.unique(group).tolist():
                if k not in writers:
                    writers[k] = pq.ParquetWriter(paths[k], t.schema, compression="lz4")
                writers[k].write_table(t.filter(pa.array(group == k)))
    finally:
        for w in writers.values():
            w.close()
    return [p for k, p in enumerate(paths) if k in writers]
