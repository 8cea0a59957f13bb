"""``rs4m export litdata``: a LitData optimized dataset that ``litdata.StreamingDataset(DEST)`` reads unchanged.

Each item is a dict: ``image`` (the stored tile bytes, unchanged), ``tile_id``, ``source``, ``format``,
``sha256`` (strings) and ``meta``, a JSON string of every manifest column of the tile (nulls kept; the WKB
``geometry`` as hex). Each output chunk (``chunk-0-NNNNN.bin``, about ``--shard-size`` of tile bytes) is
written by LitData's own ``BinaryWriter`` in a temporary folder and renamed into place when whole, and
``index.json`` lists the chunks once all of them are there and verified. Needs ``pip install litdata``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from rs4m import manifest as mf
from rs4m.errors import DependencyError
from rs4m.export.runner import ExportJob

FIELDS = ("tile_id", "source", "format", "sha256")


def row_meta(row: dict[str, Any]) -> str:
    """A manifest row as JSON text (binary values as hex), the ``meta`` field of LitData and MDS samples."""
    return json.dumps({k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items()}, sort_keys=True)


def sample_dicts(rows: pa.Table, data: list[bytes]) -> Iterator[dict[str, Any]]:
    """One sample dict per row: the image bytes, the identifying strings and the full metadata."""
    for row, blob in zip(rows.to_pylist(), data):
        yield {"image": blob, **{k: row[k] for k in FIELDS}, "meta": row_meta(row)}


def _binary_writer():
    try:
        from litdata.streaming.writer import BinaryWriter
    except ImportError as err:
        raise DependencyError("rs4m export litdata needs LitData: pip install litdata") from err
    return BinaryWriter


class LitDataFileWriter:
    """One chunk, written by LitData's ``BinaryWriter`` into a private folder next to its final name."""

    def __init__(self, path: Path, index: int) -> None:
        self.path, self.index = path, index
        self.folder = path.with_name(path.name.removesuffix(".tmp") + ".d.tmp")  # removed if a run is killed
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        # one chunk per writer: the chunk boundaries are the export plan's, not LitData's size rule
        self._writer = _binary_writer()(str(self.folder), chunk_bytes=1 << 50)
        self._count = 0

    def add(self, rows: pa.Table, data: list[bytes]) -> None:
        for sample in sample_dicts(rows, data):
            self._writer[self._count] = sample
            self._count += 1

    def close(self) -> dict[str, Any]:
        self._writer.done()
        index = json.loads(next(self.folder.glob("*index.json")).read_text())
        (chunk,) = index["chunks"]
        (self.folder / chunk["filename"]).replace(self.path)
        shutil.rmtree(self.folder)
        return {"chunk": chunk, "config": index["config"]}


class LitDataFormat:
    """The ``litdata`` export format (see the module docstring)."""

    name = "litdata"
    default_shard_size = "64MB"  # its writer holds one chunk in memory

    def options(self) -> dict[str, Any]:
        return {}

    def prepare(self, manifest_schema: pa.Schema) -> None:
        _binary_writer()  # fail before any work when LitData is missing

    def file_name(self, index: int, total: int) -> str:
        return f"chunk-0-{index:05d}.bin"

    def open_file(self, path: Path, index: int) -> LitDataFileWriter:
        return LitDataFileWriter(path, index)

    def write_index(self, job: ExportJob, infos: list[dict[str, Any]]) -> None:
        """``index.json``: the chunks in plan order (renamed from the writers' names) and LitData's config."""
        chunks = [dict(info["chunk"], filename=self.file_name(i, len(infos))) for i, info in enumerate(infos)]
        mf.atomic_write_json(job.dest / "index.json", {"chunks": chunks, "config": dict(infos[0]["config"])})

    def read_back(self, job: ExportJob) -> Iterator[tuple[int, str, bytes]]:
        """Every item through ``litdata.StreamingDataset`` itself, in order, with the chunk it lies in."""
        from litdata import StreamingDataset

        dataset = StreamingDataset(str(job.dest), shuffle=False)
        bounds = iter(job.plan.files)
        current, left = next(bounds), 0
        left = current.rows
        for i in range(len(dataset)):
            if left == 0:
                current = next(bounds)
                left = current.rows
            item = dataset[i]
            left -= 1
            yield current.index, item["tile_id"], item["image"]

    def finish(self, job: ExportJob) -> None:
        """Nothing more: ``index.json`` is the dataset's entry point."""


def make_format(**options: Any) -> LitDataFormat:
    """A :class:`LitDataFormat` (no options)."""
    return LitDataFormat(**options)
