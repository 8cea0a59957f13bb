"""Catalog stage: ``manifest.parquet`` = tiles − filtered − duplicates − leaked, sorted by ``tile_id``.

The manifest carries every column of the tiles parts plus the dedup columns; it is what RS-4M *is*.
``shards.parquet`` is rewritten from the shard facts in the tiles parts and ``build.json`` gets the counts
per stage and per source.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.export.wids import write_wids_index
from rs4m.keep import kept_mask
from rs4m.killpoints import kill_point
from rs4m.layout import OutputLayout
from rs4m.stages.unitfiles import write_shards_table


def joined_tiles(layout: OutputLayout) -> pa.Table:
    """Every tile row with its dedup columns (null where dedup has not run or the tile is in no group)."""
    tiles = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA)
    if layout.dedup.exists():
        dedup = mf.read_table(layout.dedup, mf.DEDUP_SCHEMA, columns=["tile_id", "dup_group", "dup_of", "dup_reason"])
        joined = tiles.join(dedup, "tile_id", join_type="left outer")
    else:
        nulls = {f.name: pa.nulls(tiles.num_rows, f.type) for f in mf.DEDUP_FIELDS}
        joined = tiles
        for name, col in nulls.items():
            joined = joined.append_column(name, col)
    return mf.conform(joined, mf.MANIFEST_SCHEMA)


def catalog_counts(table: pa.Table, keep: pa.ChunkedArray) -> dict:
    """Counts for ``build.json``: totals, drops by reason, and the same per source."""
    rows = table.select(["source", "filter_reason", "dup_of", "dup_reason"]).to_pylist()
    kept = keep.to_pylist()
    per_source: dict[str, Counter] = {}
    for row, k in zip(rows, kept, strict=True):
        c = per_source.setdefault(row["source"], Counter())
        c["tiles_total"] += 1
        if k:
            c["tiles_kept"] += 1
        elif row["filter_reason"]:
            c["filtered"] += 1
        elif row["dup_reason"] == "leak":
            c["leaked"] += 1
        else:
            c["duplicates"] += 1
    total = sum(per_source.values(), Counter())
    keys = ("tiles_total", "tiles_kept", "filtered", "duplicates", "leaked")
    return {**{k: total[k] for k in keys},
            "sources": {s: {k: c[k] for k in keys} for s, c in sorted(per_source.items())}}


def run_catalog(out: Path, bounded: bool = True) -> dict:
    """Write ``manifest.parquet`` and ``shards.parquet``; return the counts.

    ``bounded`` (the default) streams the tiles parts (:func:`rs4m.stages.bounded.run_catalog_bounded`);
    ``bounded=False`` joins them in memory. Both write the same bytes.
    """
    layout = OutputLayout(Path(out))
    if not layout.tile_parts():
        raise OutputError(f"{out} has no tiles parts to catalog; run `rs4m build {out} --source ...` "
                          f"(or `rs4m scan` and `rs4m tile {out}`) first")
    if bounded:
        from rs4m.stages.bounded import run_catalog_bounded

        counts = run_catalog_bounded(layout, kept_mask)
    else:
        counts = _catalog_in_memory(layout)
    kill_point("catalog:manifest")
    write_shards_table(layout)
    write_wids_index(layout.root)  # the random-access index beside the shards
    return counts


def _catalog_in_memory(layout: OutputLayout) -> dict:
    table = joined_tiles(layout)
    keep = kept_mask(table)
    manifest = table.filter(keep)
    manifest = manifest.take(pc.sort_indices(manifest, [("tile_id", "ascending")]))
    mf.write_table(manifest, layout.manifest, mf.MANIFEST_SCHEMA)
    return catalog_counts(table, keep)
