"""``rs4m verify``: check that a build's output folder is whole and consistent.

Checks, each problem naming the shard or tile it concerns:

* every shard in ``shards.parquet`` exists, has the recorded size, sample count and sha256;
* no stray ``.tar`` under ``shards/`` is missing from ``shards.parquet``;
* every row of the manifest (or, before cataloguing, of the tiles parts) points with (shard, offset, length)
  at the tar member ``<tile_id>.<format>`` of exactly that length;
* with ``decode=True`` every row's bytes decode as an image of the recorded output size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.layout import OutputLayout
from rs4m.shards import ShardReader, file_sha256, list_members

ROW_COLUMNS = ["tile_id", "shard", "offset", "length", "format", "width", "height", "out_width", "out_height"]


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


def check_shards(layout: OutputLayout, report: VerifyReport) -> set[str]:
    """Re-hash every listed shard against ``shards.parquet``; return the names of the shards that are sound."""
    if not layout.shards_table.exists():
        report.add("shards.parquet is missing; run `rs4m catalog` (or the build) first")
        return set()
    table = mf.read_table(layout.shards_table, mf.SHARDS_SCHEMA).to_pylist()
    listed = {row["shard"] for row in table}
    sound: set[str] = set()
    for row in table:
        report.shards_checked += 1
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


def stored_rows(layout: OutputLayout) -> pa.Table:
    """The rows that point into shards: the manifest when catalogued, else the tiles parts' stored tiles."""
    if layout.manifest.exists():
        return mf.read_table(layout.manifest, mf.MANIFEST_SCHEMA, columns=ROW_COLUMNS)
    table = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns=ROW_COLUMNS)
    return table.filter(pa.compute.is_valid(table["shard"]))


def check_rows(layout: OutputLayout, rows: pa.Table, report: VerifyReport,
               decode: Callable[[bytes, dict], str | None] | None = None) -> None:
    """Check that each row's (shard, offset, length) is the member ``<tile_id>.<format>``."""
    with ShardReader(layout.shards_dir) as reader:
        for row in rows.to_pylist():
            report.rows_checked += 1
            shard, tile_id = row["shard"], row["tile_id"]
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
            if decode is not None:
                problem = decode(reader.read(shard, row["offset"], row["length"]), row)
                if problem:
                    report.add(problem, shard=shard, tile_id=tile_id)


def verify_output(out: Path, decode: Callable[[bytes, dict], str | None] | None = None) -> VerifyReport:
    """Verify the output folder ``out``; see the module docstring for what is checked."""
    layout = OutputLayout(Path(out))
    if not layout.root.is_dir():
        raise OutputError(f"{out} is not a folder; give the OUT folder of a build")
    report = VerifyReport()
    check_shards(layout, report)
    check_rows(layout, stored_rows(layout), report, decode)
    return report
