"""The files of the tile stage's work units on disk: which units are done, removing what the others left, and the
tables folded from the units' parts (``shards.parquet``, the tile errors in ``errors.parquet``).

A unit is done when its tiles part (written last, after its shard, its errors part and, with overlap search on, its
features part) is readable and its shard agrees with the facts the part records (size, and a tar header before every
sampled stored tile naming it); with overlap search on, also its features part must hold one row per stored tile,
made with the current extraction settings (a unit tiled without features is tiled again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.compact import JOURNAL
from rs4m.layout import OutputLayout, leftover_files
from rs4m.shards import ShardReader
from rs4m.stages.errors_table import replace_errors


def clean_partial(layout: OutputLayout, done: set[int], units: Iterable[int] = ()) -> None:
    """Remove files of units that did not finish or are damaged (``units`` not in ``done``), shards without
    their part, and stray temp files."""
    for tmp in leftover_files(layout.root):  # only temp names of the files a build writes
        if tmp.name.endswith(".tmp") and tmp.parent != layout.root:
            tmp.unlink(missing_ok=True)
    for unit in set(units) - done:
        for path in layout.unit_files(unit):
            path.unlink(missing_ok=True)
    if layout.shards_dir.is_dir():
        for path in layout.shards_dir.glob("rs4m-[0-9][0-9][0-9][0-9][0-9].tar"):  # only names it writes
            unit = int(path.stem.split("-")[1])
            if unit not in done:
                path.unlink()


#: stored tiles per unit whose tar header is checked on resume (evenly spaced, first and last included)
RESUME_HEADER_CHECKS = 64


def unit_is_intact(layout: OutputLayout, unit: int, features: bool = False) -> bool:
    """Whether a unit's files agree: its parts are readable Parquet, its shard has the size its tiles part
    records, and the tar headers before sampled stored tiles name those tiles; with ``features``, its features
    part has a row per tile ever stored (``sha256`` set: a compaction keeps it). Cheap: no shard is hashed."""
    part, shard = layout.tile_part(unit), layout.shard(unit)
    try:
        info = mf.read_metadata(part, "shard")
        mf.read_metadata(layout.unit_errors(unit), "shard")
        table = mf.read_table(part, mf.TILES_SCHEMA,
                              columns=["tile_id", "sha256", "shard", "offset", "length", "format"])
    except Exception:  # noqa: BLE001 - any unreadable part (missing, garbled, wrong schema) means: redo
        return False
    if not info or not shard.is_file() or shard.stat().st_size != info.get("bytes"):
        return False
    if features and not _features_intact(layout, unit, int(pc.sum(pc.is_valid(table["sha256"])).as_py() or 0)):
        return False
    stored = table.filter(pc.is_valid(table["shard"])).to_pylist()
    if len(stored) > RESUME_HEADER_CHECKS:
        stored = [stored[i * (len(stored) - 1) // (RESUME_HEADER_CHECKS - 1)] for i in range(RESUME_HEADER_CHECKS)]
    with ShardReader(layout.shards_dir) as reader:
        try:
            return all(r["shard"] == shard.name and reader.member_name(shard.name, r["offset"])
                       == (f"{r['tile_id']}.{r['format']}", r["length"]) for r in stored)
        except OSError:
            return False


def _features_intact(layout: OutputLayout, unit: int, stored: int) -> bool:
    from rs4m.overlap.store import part_is_current

    return part_is_current(layout.feature_part(unit), stored)


def done_units(layout: OutputLayout, features: bool = False) -> set[int]:
    """Units whose tiles part and shard exist and agree (:func:`unit_is_intact`), and with ``features`` whose
    features part is complete.

    While a compaction journal is live, shards and parts are mid-rename and disagree on purpose: then a unit
    is done when both files exist (and its features part, with ``features``), and the compaction is left to
    finish.
    """
    units = {int(p.stem.split("-")[1]) for p in layout.tile_parts()}
    if (layout.root / JOURNAL).exists():
        return {u for u in units if layout.shard(u).exists() and (not features or layout.feature_part(u).exists())}
    return {u for u in units if unit_is_intact(layout, u, features)}


def write_shards_table(layout: OutputLayout) -> int:
    """``shards.parquet`` from the shard facts each tiles part carries; returns the number of shards."""
    infos = [mf.read_metadata(p, "shard") for p in layout.tile_parts()]
    mf.write_table(mf.table_from_rows([i for i in infos if i], mf.SHARDS_SCHEMA), layout.shards_table)
    return len(infos)


def merge_unit_errors(layout: OutputLayout, unit_rows: Sequence[dict] = ()) -> int:
    """Fold the units' error parts into ``errors.parquet`` (stage ``tile``) with the rows of failed units
    (stage ``unit``, replacing the previous run's); returns the count of both."""
    parts = sorted(layout.unit_errors_dir.glob("part-*.parquet")) if layout.unit_errors_dir.is_dir() else []
    rows = mf.read_parts(parts, mf.ERRORS_SCHEMA).to_pylist()
    replace_errors(layout, {"tile": rows, "unit": list(unit_rows)})
    return len(rows) + len(unit_rows)
