"""``rs4m compact``: rewrite shards so they hold only the manifest's tiles.

Duplicates and leaked tiles stay in the shards after cataloguing (the tiles parts point at them). Compaction
copies the bytes of every manifest tile (its image member and its ``.json`` member, byte for byte) into a new
shard, in the old order, and drops the rest. Afterwards:

* ``manifest.parquet`` has the new offsets (``length`` and ``sha256`` are unchanged: the bytes are identical);
* each tiles part has the new offsets for kept rows and **null** ``shard`` / ``offset`` / ``length`` for the
  rows whose bytes were dropped (their hashes and every other column stay, so ``rs4m dedup`` and
  ``rs4m catalog`` can run again and give the same manifest), and its ``rs4m.shard`` metadata describes the
  new shard;
* ``shards.parquet`` lists the new sizes, sample counts and sha256.

A shard whose tiles are all kept is left alone; a shard with no kept tile becomes an empty tar (never deleted,
so the tile stage still sees its unit as done).

Crash safety: nothing under a final name changes until every new file exists.

1. Each new shard, tiles part, the manifest and ``shards.parquet`` are written and fsynced under *staged*
   names (``<final name>.compact``), which no reader looks at.
2. ``OUT/compact.json`` is written atomically: the list of (staged, final) renames. This is the commit point.
3. The renames run in that order (shards, tiles parts, manifest, ``shards.parquet``), each one atomic; then
   the journal is removed.

Killed before step 2, the build is unchanged and the next ``rs4m compact`` deletes the staged files and starts
again. Killed during step 3, the journal is there: ``rs4m verify`` says so, and the next ``rs4m compact``
finishes the renames (those whose staged file is gone are already done) before doing anything else.
A later ``rs4m dedup`` that *keeps* a tile whose bytes were compacted away would put a row without bytes in
the manifest; ``rs4m verify`` reports such rows ("no stored bytes").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.killpoints import kill_point
from rs4m.layout import STAGED_SUFFIX, OutputLayout, check_shard_name, inside, leftover_files
from rs4m.shards import ShardReader, ShardWriter, decode_meta, list_members

STAGED = STAGED_SUFFIX
JOURNAL = "compact.json"


@dataclass
class CompactReport:
    """What one compaction did; sizes in bytes."""

    shards: int = 0
    shards_rewritten: int = 0
    tiles_kept: int = 0
    tiles_dropped: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    resumed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def journal_path(layout: OutputLayout) -> Path:
    """``OUT/compact.json``: present only between the commit point and the end of the renames."""
    return layout.root / JOURNAL


def staged(path: Path) -> Path:
    """The staged name of ``path`` (same folder, so the rename is atomic)."""
    return path.with_name(path.name + STAGED)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: final names a journal may rename onto, relative to OUT
_JOURNAL_TARGET = re.compile(r"(shards/rs4m-\d{5}\.tar|tiles/part-\d{5}\.parquet|manifest\.parquet|shards\.parquet)")


def _journal_pair(layout: OutputLayout, entry: object) -> tuple[Path, Path]:
    """One (staged, final) rename of the journal, checked: the final name is one a compaction writes, the
    staged name is it plus ``.compact``, and both resolve inside OUT. Anything else is refused."""
    if (not isinstance(entry, (list, tuple)) or len(entry) != 2
            or not all(isinstance(e, str) for e in entry)):
        raise OutputError(f"{journal_path(layout)}: rename entry {entry!r} is not a [staged, final] pair; "
                          f"refusing the journal (remove it, or rebuild with `rs4m build {layout.root} --force`)")
    staged_rel, final_rel = entry
    src, dst = layout.root / staged_rel, layout.root / final_rel
    if (_JOURNAL_TARGET.fullmatch(final_rel) is None or staged_rel != final_rel + STAGED
            or not inside(layout.root, src) or not inside(layout.root, dst.parent)):
        raise OutputError(f"{journal_path(layout)}: rename {staged_rel!r} → {final_rel!r} is not one a compaction "
                          f"writes inside {layout.root}; refusing the journal (remove it, or rebuild with "
                          f"`rs4m build {layout.root} --force`)")
    return src, dst


def read_journal(layout: OutputLayout) -> list[tuple[Path, Path]]:
    """The checked renames of ``OUT/compact.json`` (see :func:`_journal_pair`)."""
    journal = journal_path(layout)
    try:
        renames = json.loads(journal.read_text())["renames"]
        if not isinstance(renames, list):
            raise TypeError("renames is not a list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise OutputError(f"{journal} cannot be read ({err}); remove it, or rebuild with "
                          f"`rs4m build {layout.root} --force`") from None
    return [_journal_pair(layout, entry) for entry in renames]


def finish_swaps(layout: OutputLayout) -> bool:
    """Apply the renames of an interrupted compaction's journal; True if there was one."""
    journal = journal_path(layout)
    if not journal.exists():
        return False
    for src, dst in read_journal(layout):
        if src.exists():
            os.replace(src, dst)
            kill_point("compact:rename")
    for folder in {layout.root, layout.shards_dir, layout.tiles_dir}:
        if folder.is_dir():
            _fsync_dir(folder)
    journal.unlink()
    return True


def remove_staged(layout: OutputLayout) -> None:
    """Delete staged files of a compaction that died before its commit point (and temp files of theirs)."""
    for path in leftover_files(layout.root):
        path.unlink(missing_ok=True)


def copy_kept(src: Path, dst: Path, kept: dict[str, dict]) -> tuple[dict, dict[str, int]]:
    """Copy the samples of ``src`` whose key is in ``kept`` (tile_id → manifest row) into a new shard ``dst``.

    Image bytes are checked against the row's ``sha256`` (damage is never copied). Returns the new shard's
    ``SHARDS_SCHEMA`` row and the new data offset of every copied tile.
    """
    members = {name: (offset, size) for name, offset, size in list_members(src)}
    offsets: dict[str, int] = {}
    with ShardReader(src.parent) as reader, ShardWriter(dst) as writer:
        for name, (offset, size) in sorted(members.items(), key=lambda kv: kv[1][0]):
            key, _, ext = name.partition(".")
            row = kept.get(key)
            if row is None or ext == "json":
                continue
            if offset != row["offset"] or size != row["length"] or ext != row["format"]:
                raise OutputError(f"{src.name}: manifest row of tile {key} does not point at its member "
                                  f"{name}; run `rs4m verify {src.parent.parent}` first")
            data = reader.read(src.name, offset, size)
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise OutputError(f"{src.name}: bytes of tile {key} differ from their sha256; "
                                  f"run `rs4m verify {src.parent.parent}`")
            meta_name = f"{key}.json"
            meta = decode_meta(reader.read(src.name, *members[meta_name])) if meta_name in members else None
            offsets[key] = writer.add(key, ext, data, meta).offset
    missing = sorted(set(kept) - set(offsets))
    if missing:
        raise OutputError(f"{src.name} lacks tile {missing[0]} of the manifest; run `rs4m verify`")
    info = writer.info
    assert info is not None  # set when the writer closed
    return {"shard": info.shard.removesuffix(STAGED), "samples": info.samples, "bytes": info.bytes,
            "sha256": info.sha256}, offsets


def _new_locations(table: pa.Table, shards: set[str], offsets: dict[str, int]) -> pa.Table:
    """``table`` (a tiles part or the manifest) with, for rows in the rewritten ``shards``, the new offset of
    each copied tile and null shard / offset / length for the others; rows of other shards are unchanged."""
    ids = table["tile_id"].to_pylist()
    new = {n: table[n].to_pylist() for n in ("shard", "offset", "length")}
    for k, tile_id in enumerate(ids):
        if new["shard"][k] not in shards:
            continue
        if tile_id in offsets:
            new["offset"][k] = offsets[tile_id]
        else:
            new["shard"][k] = new["offset"][k] = new["length"][k] = None
    for name, values in new.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return table


def _stage_unit(layout: OutputLayout, part: Path, kept: dict[str, dict[str, dict]], renames: list,
                shard_rows: list[dict], report: CompactReport) -> dict[str, int]:
    """Stage the new shard and tiles part of one unit if it holds dropped bytes; return the new offsets.
    ``kept`` maps shard → tile_id → manifest row."""
    info = mf.read_metadata(part, "shard")
    table = pq.read_table(part)
    shard = check_shard_name(info["shard"])
    stored = {t for t, s in zip(table["tile_id"].to_pylist(), table["shard"].to_pylist(), strict=True) if s == shard}
    mine = kept.get(shard, {})
    report.shards += 1
    report.bytes_before += info["bytes"]
    report.tiles_kept += len(mine)
    report.tiles_dropped += len(stored - set(mine))
    if stored <= set(mine):
        shard_rows.append(info)
        report.bytes_after += info["bytes"]
        return {}
    path = layout.shards_dir / shard
    new_info, offsets = copy_kept(path, staged(path), mine)
    mf.write_table(_new_locations(table, {shard}, offsets), staged(part), metadata={"shard": new_info})
    renames.append((staged(path), path))
    renames.append((staged(part), part))
    shard_rows.append(new_info)
    report.shards_rewritten += 1
    report.bytes_after += new_info["bytes"]
    return offsets


def run_compact(out: Path) -> CompactReport:
    """Rewrite the shards of build ``out`` to hold only manifest tiles (see the module doc for the order)."""
    layout = OutputLayout(Path(out))
    if not layout.manifest.exists():
        raise OutputError(f"{out} has no manifest.parquet; run `rs4m build` (or `rs4m catalog {out}`) first")
    report = CompactReport(resumed=finish_swaps(layout))
    remove_staged(layout)
    manifest = mf.read_table(layout.manifest, mf.MANIFEST_SCHEMA)
    kept: dict[str, dict[str, dict]] = {}
    for r in manifest.select(["tile_id", "shard", "offset", "length", "format", "sha256"]).to_pylist():
        kept.setdefault(r["shard"], {})[r["tile_id"]] = r
    renames: list[tuple[Path, Path]] = []
    shard_rows: list[dict] = []
    offsets: dict[str, int] = {}
    for part in layout.tile_parts():
        offsets.update(_stage_unit(layout, part, kept, renames, shard_rows, report))
    if not renames:
        return report
    rewritten = {dst.name for src, dst in renames if dst.parent == layout.shards_dir}
    manifest = _new_locations(manifest, rewritten, offsets)
    mf.write_table(manifest, staged(layout.manifest), mf.MANIFEST_SCHEMA)
    mf.write_table(mf.table_from_rows(shard_rows, mf.SHARDS_SCHEMA), staged(layout.shards_table))
    renames += [(staged(layout.manifest), layout.manifest), (staged(layout.shards_table), layout.shards_table)]
    rel = [[str(a.relative_to(layout.root)), str(b.relative_to(layout.root))] for a, b in renames]
    kill_point("compact:staged")
    mf.atomic_write_json(journal_path(layout), {"renames": rel})  # the commit point
    kill_point("compact:journal")
    finish_swaps(layout)
    return report
