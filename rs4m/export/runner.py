"""The export loop shared by every format: select, plan the output files, write the missing ones, verify.

1. **Select**: the manifest rows that pass ``--where`` (the build's safe filter language), in manifest order
   (sorted by ``tile_id``), read in record batches.
2. **Plan**: cut the selection into output files of about ``shard_bytes`` of tile bytes each. The plan is a
   function of the manifest, the filter and the size only, so a rerun writes the same files.
3. **Write**: for each planned file not yet complete, stream its rows, read each tile with one ranged read
   (checked against the row's ``sha256``), hand rows and bytes to the format's writer under a temporary name,
   record what the format needs for its index in ``DEST/.rs4m-export/file-NNNNN.json``, then rename the file
   to its final name. A finished file is never rewritten; a kill leaves only temporary files, removed on rerun.
4. **Verify**: read every output file back with the format's reader and compare tile ids, counts and the
   sha256 of every tile with the manifest; only then write the format's index (and card) and mark it done.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.errors import ConfigError, OutputError
from rs4m.filters import parse_where
from rs4m.layout import OutputLayout
from rs4m.shards import ShardReader, file_sha256

STATE_DIR = ".rs4m-export"
STATE_FILE = "export.json"
BATCH_ROWS = 256
#: shard files held open at once while reading tiles (a manifest in tile-id order visits shards at random)
MAX_OPEN_SHARDS = 128
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``500MB`` / ``1.5GB`` / ``64MiB`` / ``1000`` (decimal units as the Hub counts them)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ConfigError(f"size {text!r} is not understood; write it like 500MB, 2GB, 64MiB or a byte count")
    value = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if value < 1:
        raise ConfigError(f"size {text!r} must be at least one byte")
    return value


@dataclass(frozen=True)
class FilePlan:
    """One output file: its position, how many selected rows it holds and their tile bytes."""

    index: int
    rows: int
    bytes: int


@dataclass
class Plan:
    """The output files of an export and the selected rows' counts by source and licence."""

    files: list[FilePlan]
    by_source: Counter = field(default_factory=Counter)
    by_licence: Counter = field(default_factory=Counter)
    by_source_licence: Counter = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


class FileWriter(Protocol):
    """Writes one output file: rows arrive in order with their tile bytes; ``close`` returns its index info."""

    def add(self, rows: pa.Table, data: list[bytes]) -> None: ...

    def close(self) -> dict[str, Any]: ...


class ExportFormat(Protocol):
    """What a format provides to :func:`run_export`."""

    name: str
    default_shard_size: str

    def options(self) -> dict[str, Any]: ...

    def prepare(self, manifest_schema: pa.Schema) -> None: ...

    def file_name(self, index: int, total: int) -> str: ...

    def open_file(self, path: Path, index: int) -> FileWriter: ...

    def write_index(self, job: ExportJob, infos: list[dict[str, Any]]) -> None: ...

    def read_back(self, job: ExportJob) -> Iterator[tuple[int, str, bytes]]: ...

    def finish(self, job: ExportJob) -> None: ...


class Selection:
    """The manifest rows of a build that pass a filter, streamed in record batches in manifest order."""

    def __init__(self, out: Path, where: str | None = None, batch_rows: int = BATCH_ROWS) -> None:
        self.layout = OutputLayout(Path(out))
        if not self.layout.manifest.exists():
            raise OutputError(f"{out} has no manifest.parquet; run `rs4m build {out} ...` first")
        self.where = where or None
        self.batch_rows = batch_rows
        self.columns = pq.read_schema(self.layout.manifest).names
        self._where = parse_where(self.where, self.columns) if self.where else None
        self._where_columns = [c for c in self.columns if self._where and c in self._where.columns]

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Selected rows as tables of at most ``batch_rows`` rows with ``columns`` (default: all)."""
        wanted = list(columns or self.columns)
        read = wanted + [c for c in self._where_columns if c not in wanted]
        with pq.ParquetFile(self.layout.manifest) as pf:
            for batch in pf.iter_batches(batch_size=self.batch_rows, columns=read):
                table = pa.Table.from_batches([batch])
                if self._where is not None:
                    table = self._where.filter(table)
                if table.num_rows:
                    yield table.select(wanted)


def plan_files(selection: Selection, shard_bytes: int) -> Plan:
    """Cut the selection into files of about ``shard_bytes`` tile bytes (a file holds at least one tile)."""
    files: list[FilePlan] = []
    plan = Plan(files)
    rows = size = 0
    for table in selection.batches(["length", "source", "licence"]):
        columns = (table[c].to_pylist() for c in ("length", "source", "licence"))
        for length, source, licence in zip(*columns, strict=True):
            if length is None:
                raise OutputError("a manifest row has no stored bytes (null length); run `rs4m verify` on the build")
            if rows and size + length > shard_bytes:
                files.append(FilePlan(len(files), rows, size))
                rows = size = 0
            rows, size = rows + 1, size + length
            plan.by_source[source] += 1
            plan.by_licence[licence or "unknown"] += 1
            plan.by_source_licence[(source, licence or "unknown")] += 1
    if rows:
        files.append(FilePlan(len(files), rows, size))
    return plan


@dataclass
class ExportJob:
    """Everything one export run knows: where from, where to, the selection, the plan and the format."""

    out: Path
    dest: Path
    fmt: ExportFormat
    selection: Selection
    plan: Plan
    shard_bytes: int

    @property
    def state_dir(self) -> Path:
        return self.dest / STATE_DIR

    def final_path(self, index: int) -> Path:
        return self.dest / self.fmt.file_name(index, len(self.plan.files))

    def info_path(self, index: int) -> Path:
        return self.state_dir / f"file-{index:05d}.json"

    def record(self) -> dict[str, Any]:
        """What identifies this export: a rerun with a different record refuses to mix files."""
        return {"format": self.fmt.name, "options": self.fmt.options(), "where": self.selection.where,
                "shard_bytes": self.shard_bytes, "manifest_sha256": file_sha256(self.selection.layout.manifest),
                "files": len(self.plan.files), "rows": self.plan.rows, "bytes": self.plan.bytes}


@dataclass
class ExportReport:
    """The outcome of :func:`run_export`."""

    format: str
    dest: str
    files: int
    files_written: int
    rows: int
    bytes: int
    verified_rows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_state(job: ExportJob) -> dict[str, Any]:
    """Create ``DEST`` or check that it holds (part of) this same export; return the state record."""
    record = job.record()
    state = job.state_dir / STATE_FILE
    if state.exists():
        old = json.loads(state.read_text())
        if {k: old.get(k) for k in record} != record:
            raise ConfigError(f"{job.dest} holds an export of a different build, selection or format; "
                              "use another DEST, or delete it to start over")
    elif job.dest.exists() and any(job.dest.iterdir()):
        raise ConfigError(f"{job.dest} is not empty and holds no rs4m export; give an empty or new folder")
    job.state_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(job.dest.rglob(".*.tmp"), reverse=True):  # a killed run's; never under a final name
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    mf.atomic_write_json(state, {**record, "done": False})
    return record


def _read_tiles(reader: ShardReader, rows: pa.Table) -> list[bytes]:
    """The stored bytes of each row (one ranged read each), checked against the row's ``sha256``."""
    data = []
    for tile_id, shard, offset, length, sha in zip(*(rows[c].to_pylist() for c in
                                                     ("tile_id", "shard", "offset", "length", "sha256")), strict=True):
        if shard is None:
            raise OutputError(f"tile {tile_id} has no stored bytes; run `rs4m verify` on the build")
        blob = reader.read(shard, offset, length)
        if hashlib.sha256(blob).hexdigest() != sha:
            raise OutputError(f"tile {tile_id} in {shard} does not match its sha256; run `rs4m verify` on the build")
        data.append(blob)
    return data


def _pieces(job: ExportJob) -> Iterator[tuple[int, pa.Table]]:
    """(file index, rows) slices of the selection, in order, each slice within one planned file."""
    bounds = iter(job.plan.files)
    current = next(bounds, None)
    left = current.rows if current else 0
    for table in job.selection.batches():
        start = 0
        while start < table.num_rows and current is not None:
            take = min(left, table.num_rows - start)
            yield current.index, table.slice(start, take)
            start, left = start + take, left - take
            if left == 0:
                current = next(bounds, None)
                left = current.rows if current else 0


def write_files(job: ExportJob, progress=None) -> int:
    """Write every planned file that is not complete yet; return how many were written."""
    written, writer, open_index, tmp = 0, None, -1, Path()
    reader, seen = ShardReader(job.selection.layout.shards_dir), set()
    try:
        for index, rows in _pieces(job):
            if index != open_index:
                if writer is not None:
                    _publish(job, open_index, writer, tmp)
                    written += 1
                writer, open_index = None, index
                if not (job.final_path(index).exists() and job.info_path(index).exists()):
                    tmp = mf.atomic_path(job.final_path(index))
                    writer = job.fmt.open_file(tmp, index)
            if writer is not None:
                seen.update(rows["shard"].to_pylist())
                if len(seen) > MAX_OPEN_SHARDS:  # bound the open file handles
                    reader.close()
                    seen = set(rows["shard"].to_pylist())
                writer.add(rows, _read_tiles(reader, rows))
            if progress is not None:
                progress(rows.num_rows)
        if writer is not None:
            _publish(job, open_index, writer, tmp)
            written += 1
    finally:
        reader.close()
    return written


def _publish(job: ExportJob, index: int, writer: FileWriter, tmp: Path) -> None:
    """Close a finished file, record its info, then give it its final name (the completion step)."""
    info = writer.close()
    mf.atomic_write_json(job.info_path(index), info)
    tmp.replace(job.final_path(index))


def verify_files(job: ExportJob) -> int:
    """Read the export back (the format's reader); compare tile ids, per-file counts and sha256 with the manifest."""
    expected = ((t, s) for table in job.selection.batches(["tile_id", "sha256"])
                for t, s in zip(table["tile_id"].to_pylist(), table["sha256"].to_pylist(), strict=True))
    counts: Counter = Counter()
    for index, tile_id, blob in job.fmt.read_back(job):
        want = next(expected, None)
        name = job.fmt.file_name(index, len(job.plan.files))
        if want is None or want[0] != tile_id:
            raise OutputError(f"{name}: tile {tile_id} is not the next selected manifest row; delete it and rerun")
        if hashlib.sha256(blob).hexdigest() != want[1]:
            raise OutputError(f"{name}: tile {tile_id}'s bytes differ from the manifest's sha256; delete it and rerun")
        counts[index] += 1
    for fp in job.plan.files:
        if counts[fp.index] != fp.rows:
            raise OutputError(f"{job.fmt.file_name(fp.index, len(job.plan.files))} holds {counts[fp.index]} tiles, "
                              f"the plan says {fp.rows}; delete it and rerun")
    return sum(counts.values())


def run_export(out: Path, dest: Path, fmt: ExportFormat, where: str | None = None,
               shard_size: str | int | None = None, progress=None) -> ExportReport:
    """Export the build in ``out`` to ``dest`` in ``fmt``; resumable, verified. See the module docstring."""
    started = time.perf_counter()
    selection = Selection(Path(out), where)
    shard_bytes = parse_size(shard_size or fmt.default_shard_size)
    plan = plan_files(selection, shard_bytes)
    if not plan.files:
        raise ConfigError(f"the filter {where!r} selects no tile of {out}" if where else f"{out} has no tiles")
    fmt.prepare(pq.read_schema(selection.layout.manifest))
    job = ExportJob(Path(out), Path(dest), fmt, selection, plan, shard_bytes)
    record = start_state(job)
    written = write_files(job, progress)
    fmt.write_index(job, [json.loads(job.info_path(f.index).read_text()) for f in plan.files])
    verified = verify_files(job)
    fmt.finish(job)
    for path in job.dest.rglob("*"):  # temporary files are created private; a finished export is for sharing
        if path.is_file() and STATE_DIR not in path.relative_to(job.dest).parts:
            path.chmod(0o644)
    mf.atomic_write_json(job.state_dir / STATE_FILE, {**record, "done": True})
    return ExportReport(fmt.name, str(dest), len(plan.files), written, plan.rows, plan.bytes, verified,
                        round(time.perf_counter() - started, 3))
