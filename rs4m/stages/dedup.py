"""The dedup stage: tiles parts → ``dedup.parquet`` + ``dedup.json`` (benchmark leakage: :mod:`rs4m.stages.leakage`).

``run_dedup`` reads every ``OUT/tiles/part-*.parquet`` (rows with a ``filter_reason`` take no part), finds
exact, near-duplicate and geo-overlap pairs (:mod:`rs4m.dedup`) and, with ``overlap`` on, overlaps without
georeference (:mod:`rs4m.stages.overlap`), adds the leaked tiles of a previous
``run_leakage(..., exclude=True)``, groups them and writes one row per tile. Re-running replaces the results.
A tile leaves the manifest when its ``dup_of`` is set (a duplicate of the kept tile) or its ``dup_reason`` is
``leak``.

Dihedral mode (flips and 90° rotations count as duplicates) uses the columns ``phash_canonical`` and
``dhash_canonical`` (:func:`rs4m.hashing.hashes_with_canonical`) when the tiles parts carry them; otherwise it
falls back to estimating flipped hashes from pHash/dHash, which finds fewer flips and no 90° rotations.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs4m import dedup as dd
from rs4m import manifest as mf
from rs4m.config import DedupConfig  # noqa: F401 - the [dedup] settings; re-exported here
from rs4m.errors import OutputError
from rs4m.killpoints import kill_point
from rs4m.layout import OutputLayout
from rs4m.stages.overlap import overlap_columns, overlap_edges
from rs4m.tablestream import fixed_width

TILE_COLUMNS = ["tile_id", "scene_id", "source", "scene_path", "sha256", "pixel_sha256", "phash", "dhash",
                "richness", "gsd_m", "width", "height", "geometry", "filter_reason"]
CANONICAL_COLUMNS = ["phash_canonical", "dhash_canonical"]


@dataclass
class DedupReport:
    """What one dedup run found (written to ``dedup.json``)."""

    tiles: int = 0
    searched: int = 0
    groups: int = 0
    duplicates: int = 0
    leaked: int = 0
    dihedral: str = "off"
    tiles_by_reason: dict[str, int] = field(default_factory=dict)
    groups_by_reason: dict[str, int] = field(default_factory=dict)
    pairs_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    #: with overlap search: tiles with features, verified pairs, seconds of the search
    overlap: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def read_tiles(layout: OutputLayout) -> pa.Table:
    """The non-filtered rows of every tiles part, with the canonical hash columns where all parts have them."""
    parts = layout.tile_parts()
    if not parts:
        raise OutputError(f"no tiles parts in {layout.tiles_dir}; run `rs4m tile {layout.root}` first")
    tables = []
    has_canonical = all(set(CANONICAL_COLUMNS) <= set(pq.read_schema(p).names) for p in parts)
    for part in parts:
        table = mf.read_table(part, mf.TILES_SCHEMA, columns=TILE_COLUMNS)
        if has_canonical:
            extra = pq.read_table(part, columns=CANONICAL_COLUMNS)
            for name in CANONICAL_COLUMNS:
                table = table.append_column(name, extra.column(name).cast(pa.uint64()))
        tables.append(table.filter(pc.is_null(table["filter_reason"])))
    return pa.concat_tables(tables)


def u64_column(table: pa.Table, name: str) -> np.ndarray:
    return table[name].fill_null(0).to_numpy().astype(np.uint64)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as ``float64 [N]``, nulls as NaN."""
    return table[name].cast(pa.float64()).to_pandas().to_numpy(np.float64, na_value=np.nan)


def _valid(table: pa.Table, name: str) -> np.ndarray:
    return table[name].is_valid().to_pandas().to_numpy(bool)


def searchable_rows(table: pa.Table, min_richness: float) -> np.ndarray:
    richness = _floats(table, "richness")
    has_hash = _valid(table, "phash") & _valid(table, "dhash")
    return has_hash & ~(richness < min_richness)  # NaN (unknown richness) stays searchable


def find_edges(table: pa.Table, config: DedupConfig, searchable: np.ndarray) -> tuple[list[dd.Edges], str]:
    """All exact, near (incl. dihedral) and geo edges among the rows of ``table``, and the dihedral method."""
    edges = [dd.exact_edges(table["sha256"].to_pylist()), dd.exact_edges(table["pixel_sha256"].to_pylist())]
    ph, dh, r = u64_column(table, "phash"), u64_column(table, "dhash"), (config.radius_bits, config.dhash_radius_bits)
    edges.append(dd.near_edges(ph, dh, *r, searchable=searchable))
    method = "off"
    if config.dihedral and set(CANONICAL_COLUMNS) <= set(table.column_names):
        method = "canonical"
        ok = searchable & _valid(table, "phash_canonical") & _valid(table, "dhash_canonical")
        edges.append(dd.near_edges(u64_column(table, "phash_canonical"), u64_column(table, "dhash_canonical"), *r,
                                   searchable=ok))
    elif config.dihedral:
        method = "flip-estimate"
        edges.append(dd.flip_estimate_edges(ph, dh, *r, searchable=searchable))
    if config.geo:
        edges.append(dd.geo_edges(table["geometry"].to_pylist(), table["scene_id"].to_pylist(),
                                  _floats(table, "gsd_m"),
                                  config.geo_iou, config.gsd_ratio, config.geo_measure))
    return edges, method


def read_leaks(layout: OutputLayout, tile_ids: list[str]) -> tuple[np.ndarray | None, dd.Edges | None]:
    """Leak distance per row (NaN: not leaked) and edges between tiles leaking one benchmark image, from a
    ``leakage.parquet`` written with ``exclude``; ``(None, None)`` without one."""
    path = layout.leakage
    if not path.exists() or not mf.read_metadata(path, "exclude"):
        return None, None
    leaks = mf.read_table(path, mf.LEAKAGE_SCHEMA).to_pandas()
    row_of = {t: k for k, t in enumerate(tile_ids)}
    leaks = leaks[leaks["tile_id"].isin(row_of.keys())]
    rows = leaks["tile_id"].map(row_of).to_numpy(np.int64)
    distance = np.full(len(tile_ids), np.nan)
    np.fmin.at(distance, rows, leaks["distance"].fillna(0.0).to_numpy(np.float64))
    image = (leaks["benchmark"] + "\x00" + leaks["benchmark_image"]).to_numpy(object)
    same_image = dd.exact_edges(list(image), reason="exact")
    return distance, dd.Edges(rows[same_image.i], rows[same_image.j], same_image.distance, "exact")


def _pairs_by_source(sources: np.ndarray, edges: list[dd.Edges]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for e in edges:
        a, b = sources[e.i], sources[e.j]
        keys = [" | ".join(sorted(p)) for p in zip(a, b, strict=True)]
        for key, n in Counter(keys).items():
            counts.setdefault(key, Counter())[e.reason] += n
    return {k: dict(v) for k, v in sorted(counts.items())}


def _summarise(report: DedupReport, groups: dd.Groups) -> None:
    reasons = [r for r in groups.dup_reason if r is not None]
    report.tiles_by_reason = dict(sorted(Counter(reasons).items()))
    in_group = groups.dup_group >= 0
    report.groups = int(len(np.unique(groups.dup_group[in_group])))
    report.leaked = report.tiles_by_reason.get(dd.LEAK, 0)
    report.duplicates = int(sum(v for k, v in report.tiles_by_reason.items() if k != dd.LEAK))
    strongest: dict[int, int] = {}
    order = {r: k for k, r in enumerate((dd.LEAK, *dd.REASONS))}
    for g, r in zip(groups.dup_group[in_group], groups.dup_reason[in_group], strict=True):
        if r is not None:
            strongest[g] = min(strongest.get(g, 99), order[r])
    names = (dd.LEAK, *dd.REASONS)
    report.groups_by_reason = dict(sorted(Counter(names[k] for k in strongest.values()).items()))


def _float_column(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.float32), pa.float32(), mask=np.isnan(values))


def dedup_table(table: pa.Table, groups: dd.Groups, overlap: dict[str, np.ndarray] | None = None) -> pa.Table:
    """``DEDUP_SCHEMA`` rows: one per tile of ``table``; with ``overlap`` (its columns, NaN for none)
    ``DEDUP_OVERLAP_SCHEMA``."""
    group = pa.array(groups.dup_group, pa.int64(), mask=groups.dup_group < 0)
    columns = {
        "tile_id": table["tile_id"], "source": table["source"], "scene_path": table["scene_path"],
        "dup_group": group, "dup_of": pa.array(groups.dup_of.tolist(), pa.string()),
        "dup_reason": pa.array(groups.dup_reason.tolist(), pa.string()), "distance": _float_column(groups.distance),
    }
    if overlap is None:
        return pa.table(columns, schema=mf.DEDUP_SCHEMA)
    columns.update({name: _float_column(overlap[name]) for name in mf.DEDUP_OVERLAP_SCHEMA.names[len(columns):]})
    return pa.table(columns, schema=mf.DEDUP_OVERLAP_SCHEMA)


def run_dedup(out: Path, config: DedupConfig = DedupConfig(), bounded: bool = True, engine=None) -> DedupReport:
    """Find duplicate groups among the tiles of build ``out``; write ``dedup.parquet`` and ``dedup.json``.

    ``bounded`` (the default) reads the tiles parts a few columns at a time (:mod:`rs4m.stages.bounded`);
    ``bounded=False`` holds them all in memory. Both write the same bytes. With an ``engine`` (e.g. Ray)
    the bounded path runs the Hamming searches' candidate generation as its units, with the same result.
    """
    started = time.perf_counter()
    layout = OutputLayout(Path(out))
    if bounded:
        report = _dedup_bounded(layout, config, engine)
    else:
        report = _dedup_in_memory(layout, config)
    kill_point("dedup:written")  # a kill here leaves dedup.json of the previous run: the rerun redoes both
    report.seconds = round(time.perf_counter() - started, 3)
    mf.atomic_write_json(layout.dedup_report, {"config": asdict(config), **report.to_dict()})
    return report


def _dedup_bounded(layout: OutputLayout, config: DedupConfig, engine) -> DedupReport:
    from rs4m.stages import bounded as bd

    tiles, edges, method, searchable, groups, found = bd.dedup_groups(layout, config, engine)
    cols = None if found is None else overlap_columns(len(tiles), found, groups.dup_reason)
    bd.write_dedup_bounded(layout, tiles, groups, dedup_table, cols)
    sources = np.array(tiles.source_names, dtype=object)[tiles.source_codes]
    report = DedupReport(tiles=len(tiles), searched=int(searchable.sum()), dihedral=method,
                         pairs_by_source=_pairs_by_source(sources, [e for e in edges if len(e)]),
                         overlap=found.counts if found is not None else {})
    _summarise(report, groups)
    return report


def _dedup_in_memory(layout: OutputLayout, config: DedupConfig) -> DedupReport:
    table = read_tiles(layout)
    searchable = searchable_rows(table, config.min_richness)
    edges, method = find_edges(table, config, searchable)
    found = None
    if config.overlap:
        found = overlap_edges(layout, fixed_width(table["tile_id"]), searchable, config)
        edges.append(found.edges)
    tile_ids = table["tile_id"].to_pylist()
    leak_distance, leak_edges = read_leaks(layout, tile_ids)
    sources = np.asarray(table["source"].to_pylist(), dtype=object)
    area = np.nan_to_num(_floats(table, "width") * _floats(table, "height"))
    rank = dd.keep_rank(sources, config.source_priority, _floats(table, "gsd_m"), area, tile_ids)
    groups = dd.resolve(tile_ids, edges, rank, leak_distance, leak_edges)
    cols = None if found is None else overlap_columns(len(tile_ids), found, groups.dup_reason)
    schema = mf.DEDUP_SCHEMA if cols is None else mf.DEDUP_OVERLAP_SCHEMA
    mf.write_table(dedup_table(table, groups, cols), layout.dedup, schema)
    report = DedupReport(tiles=len(tile_ids), searched=int(searchable.sum()), dihedral=method,
                         pairs_by_source=_pairs_by_source(sources, [e for e in edges if len(e)]),
                         overlap=found.counts if found is not None else {})
    _summarise(report, groups)
    return report
