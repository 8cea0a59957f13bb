"""``rs4m verify``: check that a build's output folder is whole and consistent.

Checks, each problem naming the shard or tile it concerns:

* every shard in ``shards.parquet`` exists, has the recorded size, sample count and sha256;
* no stray ``.tar`` under ``shards/`` is missing from ``shards.parquet``;
* every row of the manifest (or, before cataloguing, of the tiles parts) points with (shard, offset, length)
  at the tar member ``<tile_id>.<format>`` of exactly that length;
* every row's bytes have the row's ``sha256`` and decode as an image of the recorded size (``out_width`` /
  ``out_height`` where set, else ``width`` / ``height``); ``decode_tiles=False`` skips this, the slow part;
* every manifest row equals its tiles-part row on the columns they share (the tiles parts are the record of
  the tile stage; the manifest is a filtered copy of them);
* no manifest tile is filtered, a duplicate of another tile, or leaked (by its own columns and by
  ``dedup.parquet``), and no tile id appears twice;
* every tile the catalog rule keeps is in the manifest (none lost between the tiles parts and the manifest);
* ``build.json``'s ``stages.catalog.tiles_kept`` equals the manifest's row count;
* no ``rs4m compact`` was interrupted between its commit point and its last rename (``compact.json``);
* ``manifest.parquet`` exists once tiles parts do (or ``build.json`` records a catalog run);
* no work unit failed: none has an ``errors.parquet`` row of stage ``unit``, and every unit of
  ``scenes.parquet`` has its tiles part;
* every table can be read: a damaged Parquet file is one problem naming the file, never a crash;
* shard names read from the tables are of the form ``rs4m-NNNNN.tar`` (nothing outside ``OUT/shards/`` is
  read); in a damaged shard each affected tile is named (its bytes are checked even with ``--no-decode``).

Checks whose input is absent (a hand-made folder without tiles parts or ``build.json``) are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.keep import left_by_dedup
from rs4m.layout import SHARD_NAME, OutputLayout
from rs4m.shards import ShardReader, file_sha256, list_members

ROW_COLUMNS = ["tile_id", "shard", "offset", "length", "format", "width", "height", "out_width", "out_height",
               "sha256"]


@dataclass
class VerifyReport:
    """Result of :func:`verify_output`; ``ok`` is true iff there are no problems."""

    shards_checked: int = 0
    rows_checked: int = 0
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str, shard: str | None = None, tile_id: str | None = None) -> None:
        self.problems.append({"shard": shard, "tile_id": tile_id, "problem": problem})

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "shards_checked": self.shards_checked,
            "rows_checked": self.rows_checked,
            "problems": self.problems,
        }


def read_or_report(report: VerifyReport, path: Path, schema: pa.Schema,
                   columns: list[str] | None = None) -> pa.Table | None:
    """``path`` read as a table of ``schema``, or None with one problem naming the file (damaged or altered
    Parquet is a finding of verify, never a traceback)."""
    try:
        return mf.read_table(path, schema, columns)
    except (pa.ArrowException, OSError, ValueError, OutputError) as err:
        cause = " ".join(str(err).split())[:200] or type(err).__name__
        report.add(f"{path.name} cannot be read ({cause}); rebuild it with the stage that writes it "
                   "(`rs4m build OUT` redoes what is damaged, or `--force`)", shard=None)
        return None


def read_tiles_parts(layout: OutputLayout, report: VerifyReport) -> pa.Table | None:
    """Every readable tiles part, concatenated (None if there is none); each unreadable one is a problem."""
    parts = layout.tile_parts()
    if not parts:
        return None
    tables = [t for t in (read_or_report(report, p, mf.TILES_SCHEMA) for p in parts) if t is not None]
    return pa.concat_tables(tables) if tables else mf.TILES_SCHEMA.empty_table()


def check_shards(layout: OutputLayout, report: VerifyReport) -> set[str]:
    """Re-hash every listed shard against ``shards.parquet``; return the names of the shards that are sound."""
    if not layout.shards_table.exists():
        report.add("shards.parquet is missing; run `rs4m catalog` (or the build) first")
        return set()
    shards = read_or_report(report, layout.shards_table, mf.SHARDS_SCHEMA)
    table = shards.to_pylist() if shards is not None else []
    listed = {row["shard"] for row in table}
    sound: set[str] = set()
    for row in table:
        report.shards_checked += 1
        if not isinstance(row["shard"], str) or SHARD_NAME.fullmatch(row["shard"]) is None:
            report.add(f"shards.parquet lists {row['shard']!r}, not a shard name (rs4m-NNNNN.tar); not followed")
            continue
        name, path = row["shard"], layout.shards_dir / row["shard"]
        if not path.exists():
            report.add("shard file is missing", shard=name)
            continue
        size = path.stat().st_size
        if size != row["bytes"]:
            report.add(f"size {size} bytes, expected {row['bytes']} (truncated or appended to)", shard=name)
            continue
        if file_sha256(path) != row["sha256"]:
            report.add("sha256 differs from shards.parquet (the shard's bytes changed)", shard=name)
            continue
        samples = sum(1 for m in list_members(path) if not m[0].endswith(".json"))
        if samples != row["samples"]:
            report.add(f"{samples} samples, expected {row['samples']}", shard=name)
            continue
        sound.add(name)
    if layout.shards_dir.is_dir():
        for path in sorted(layout.shards_dir.glob("*.tar")):
            if path.name not in listed:
                report.add("shard is not listed in shards.parquet", shard=path.name)
    return sound


def stored_rows(manifest: pa.Table | None, tiles: pa.Table | None) -> pa.Table:
    """The rows that point into shards: the manifest when catalogued, else the tiles parts' stored tiles."""
    if manifest is not None:
        return manifest.select(ROW_COLUMNS)
    if tiles is None:
        return mf.TILES_SCHEMA.empty_table().select(ROW_COLUMNS)
    return tiles.select(ROW_COLUMNS).filter(pa.compute.is_valid(tiles["shard"]))


def check_rows(layout: OutputLayout, rows: pa.Table, report: VerifyReport,
               decode: Callable[[bytes, dict], str | None] | None = None, sound: set[str] | None = None) -> None:
    """Check that each row's (shard, offset, length) is the member ``<tile_id>.<format>``; with ``decode``, also
    its bytes and image. In a shard outside ``sound`` (reported as damaged by :func:`check_shards`) every row's
    bytes are checked against its sha256, so the problems name the tiles the damage reaches."""
    with ShardReader(layout.shards_dir) as reader:
        for row in rows.to_pylist():
            report.rows_checked += 1
            shard, tile_id = row["shard"], row["tile_id"]
            if shard is None or row["offset"] is None or row["length"] is None:
                report.add("row has no stored bytes (null shard / offset / length)", tile_id=tile_id)
                continue
            if SHARD_NAME.fullmatch(shard) is None:
                report.add(f"shard {shard!r} is not a shard name (rs4m-NNNNN.tar); not followed", tile_id=tile_id)
                continue
            try:
                member = reader.member_name(shard, row["offset"])
            except OSError as err:
                report.add(f"cannot read shard: {err.strerror or err}", shard=shard, tile_id=tile_id)
                continue
            expected = f"{tile_id}.{row['format']}"
            if member is None or member[0] != expected:
                found = member[0] if member else "no tar header"
                report.add(f"offset {row['offset']} holds {found!r}, not {expected!r}", shard=shard, tile_id=tile_id)
                continue
            if member[1] != row["length"]:
                report.add(f"length {row['length']} but member has {member[1]} bytes", shard=shard, tile_id=tile_id)
                continue
            damaged = sound is not None and shard not in sound
            if decode is not None or damaged:
                problem = _bytes_problem(reader, row, None if damaged else decode)
                if problem:
                    report.add(problem + (" (in a damaged shard)" if damaged else ""), shard=shard, tile_id=tile_id)


def _bytes_problem(reader: ShardReader, row: dict, decode: Callable[[bytes, dict], str | None] | None) -> str | None:
    """A problem line if the row's stored bytes are short, differ from its sha256 or (with ``decode``) do not
    decode as recorded."""
    try:
        data = reader.read_row(row)
    except (OSError, EOFError) as err:
        return f"stored bytes cannot be read: {err}"
    return sha256_problem(data, row) or (decode(data, row) if decode is not None else None)


def sha256_problem(data: bytes, row: dict) -> str | None:
    """A problem line if the stored bytes do not hash to the row's ``sha256`` (rows without one pass)."""
    if row.get("sha256") and hashlib.sha256(data).hexdigest() != row["sha256"]:
        return "stored bytes differ from the row's sha256"
    return None


def decode_at_size(data: bytes, row: dict) -> str | None:
    """A problem line unless ``data`` decodes to an RGB image of the row's recorded size."""
    from rs4m.codec import decode

    want_w = row.get("out_width") or row["width"]
    want_h = row.get("out_height") or row["height"]
    try:
        rgb = decode(data, row.get("format"))
    except Exception as err:  # every decoder failure is a finding about this tile, not a crash
        return f"does not decode as {row.get('format')}: {' '.join(str(err).split()) or type(err).__name__}"
    if rgb.ndim != 3 or (rgb.shape[1], rgb.shape[0]) != (want_w, want_h):
        return f"decodes to {rgb.shape[1]}x{rgb.shape[0]}, recorded size is {want_w}x{want_h}"
    return None


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """``bool [N]``: equal values, or both null, or both NaN."""
    same = pc.fill_null(pc.equal(a, b), False)
    same = pc.or_(same, pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(a.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)


def check_against_tiles(tiles: pa.Table | None, manifest: pa.Table, report: VerifyReport) -> None:
    """Each manifest row must equal its tiles-part row on every column of the tiles schema."""
    if tiles is None:
        return
    tiles = tiles.combine_chunks()
    index = pc.index_in(manifest["tile_id"], value_set=tiles["tile_id"])
    found = pc.is_valid(index)
    for row in manifest.filter(pc.invert(found)).select(["tile_id", "shard"]).to_pylist():
        report.add("manifest row is in no tiles part", shard=row["shard"], tile_id=row["tile_id"])
    present = manifest.filter(found).combine_chunks()
    theirs = tiles.take(pc.drop_null(index))
    differ: dict[int, list[str]] = {}
    for name in mf.TILES_SCHEMA.names:
        for pos in np.flatnonzero(~_same(present[name], theirs[name])):
            differ.setdefault(int(pos), []).append(name)
    ids, shards = present["tile_id"].to_pylist(), present["shard"].to_pylist()
    for k, names in sorted(differ.items()):
        report.add(f"manifest row differs from its tiles-part row in {', '.join(names)}",
                   shard=shards[k], tile_id=ids[k])


def _dropped_reason(row: dict, dedup: dict[str, dict]) -> str | None:
    """Why a manifest row should not be there, or None."""
    if row["filter_reason"] is not None:
        return f"is filtered ({row['filter_reason']}) but in the manifest"
    for where, r in (("its row", row), ("dedup.parquet", dedup.get(row["tile_id"]))):
        if r is None:
            continue
        if r["dup_reason"] == "leak":
            return f"is leaked ({where}) but in the manifest"
        if r["dup_of"] is not None:
            return f"is a duplicate of {r['dup_of']} ({where}, {r['dup_reason']}) but in the manifest"
    return None


def check_kept_only(dedup_table: pa.Table | None, manifest: pa.Table, report: VerifyReport) -> None:
    """No manifest tile is filtered, a duplicate of another, leaked, or listed twice."""
    dedup = {}
    if dedup_table is not None:
        table = dedup_table
        table = table.filter(pc.or_(pc.is_valid(table["dup_of"]), pc.is_valid(table["dup_reason"])))
        dedup = {r["tile_id"]: r for r in table.to_pylist()}
    seen: set[str] = set()
    columns = ["tile_id", "shard", "filter_reason", "dup_of", "dup_reason"]
    for row in manifest.select(columns).to_pylist():
        if row["tile_id"] in seen:
            report.add("tile id appears more than once in the manifest", shard=row["shard"], tile_id=row["tile_id"])
        seen.add(row["tile_id"])
        reason = _dropped_reason(row, dedup)
        if reason:
            report.add(reason, shard=row["shard"], tile_id=row["tile_id"])


def check_none_missing(layout: OutputLayout, tiles: pa.Table | None, dedup: pa.Table | None, manifest: pa.Table,
                       report: VerifyReport) -> None:
    """Every tile the catalog rule keeps (not filtered, not a duplicate of another, not leaked) is in the
    manifest: a tile lost between the tiles parts and the manifest is a problem too."""
    if tiles is None:
        return
    dropped: set[str] = set()
    if dedup is not None:
        dropped = set(dedup.filter(left_by_dedup(dedup))["tile_id"].to_pylist())
    listed = set(manifest["tile_id"].to_pylist())
    # rows without stored bytes (filtered, or dropped by `rs4m compact`) cannot be in the manifest
    stored = pc.and_(pc.is_null(tiles["filter_reason"]), pc.is_valid(tiles["shard"]))
    for row in tiles.filter(stored).to_pylist():
        if row["tile_id"] not in dropped and row["tile_id"] not in listed:
            report.add("kept tile (not filtered, not a duplicate, not leaked) is missing from the manifest; "
                       f"re-run `rs4m catalog {layout.root}`", shard=row["shard"], tile_id=row["tile_id"])


def check_build_record(layout: OutputLayout, record: dict, manifest: pa.Table, report: VerifyReport) -> None:
    """``build.json`` ``stages.catalog.tiles_kept`` must be the manifest's row count."""
    catalog = record.get("stages", {}).get("catalog", {})
    kept = catalog.get("tiles_kept") if isinstance(catalog, dict) else None
    if kept is not None and kept != manifest.num_rows:
        report.add(f"build.json stages.catalog.tiles_kept is {kept} but manifest.parquet has {manifest.num_rows} "
                   f"rows; re-run `rs4m catalog {layout.root}`")


def check_units(layout: OutputLayout, record: dict, has_tiles: bool, report: VerifyReport) -> None:
    """No work unit failed: none has an ``errors.parquet`` row of stage ``unit`` (a unit that failed as a
    whole), and every unit of ``scenes.parquet`` has its tiles part once tiling has run."""
    if layout.errors.exists():
        errors = read_or_report(report, layout.errors, mf.ERRORS_SCHEMA)
        if errors is not None:
            for row in errors.filter(pc.equal(errors["stage"], "unit")).to_pylist():
                report.add(f"work unit failed ({row['path']}): {row['reason']}; re-run `rs4m build {layout.root}` "
                           "to retry it")
    if not layout.scenes.exists() or not (has_tiles or "tile" in record.get("stages", {})):
        return
    scenes = read_or_report(report, layout.scenes, mf.SCENES_SCHEMA, columns=["unit"])
    if scenes is None:
        return
    have = {int(p.stem.split("-")[1]) for p in layout.tile_parts()}
    for unit in sorted(set(scenes["unit"].to_pylist()) - have):
        report.add(f"work unit {unit} has no tiles part (it failed or did not finish); "
                   f"re-run `rs4m build {layout.root}` (or `rs4m tile`)", shard=layout.shard_name(unit))


def read_record(layout: OutputLayout, report: VerifyReport) -> dict:
    """``build.json`` as a dict ({} where absent); an unreadable one is a problem."""
    if not layout.build_json.exists():
        return {}
    try:
        record = json.loads(layout.build_json.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record
    except (ValueError, UnicodeDecodeError) as err:
        report.add(f"build.json cannot be read: {err}")
        return {}


def verify_output(out: Path, decode: Callable[[bytes, dict], str | None] | None = None,
                  decode_tiles: bool = True) -> VerifyReport:
    """Verify the output folder ``out``; see the module docstring for what is checked.

    ``decode`` replaces the per-row image check (:func:`decode_at_size`); ``decode_tiles=False`` skips it.
    """
    layout = OutputLayout(Path(out))
    if not layout.root.is_dir():
        raise OutputError(f"{out} is not a folder; give the OUT folder of a build")
    if decode is None and decode_tiles:
        decode = decode_at_size
    report = VerifyReport()
    if (layout.root / "compact.json").exists():
        report.add(f"an interrupted `rs4m compact` left compact.json; run `rs4m compact {layout.root}` to finish")
    record = read_record(layout, report)
    tiles = read_tiles_parts(layout, report)
    check_units(layout, record, tiles is not None, report)
    manifest = read_or_report(report, layout.manifest, mf.MANIFEST_SCHEMA) if layout.manifest.exists() else None
    if not layout.manifest.exists() and (tiles is not None or "catalog" in record.get("stages", {})):
        report.add(f"manifest.parquet is missing; run `rs4m catalog {layout.root}` (or `rs4m build`)")
    dedup = None
    if layout.dedup.exists():
        dedup = read_or_report(report, layout.dedup, mf.DEDUP_SCHEMA, columns=["tile_id", "dup_of", "dup_reason"])
    sound = check_shards(layout, report)
    check_rows(layout, stored_rows(manifest, tiles), report, decode, sound)
    if manifest is not None:
        check_against_tiles(tiles, manifest, report)
        check_kept_only(dedup, manifest, report)
        check_none_missing(layout, tiles, dedup, manifest, report)
        check_build_record(layout, record, manifest, report)
    return report
