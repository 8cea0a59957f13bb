"""``rs4m export mds``: a Mosaic Streaming (MDS) dataset that ``streaming.StreamingDataset(local=DEST)`` reads.

Written from the MDS format as the ``mosaicml-streaming`` documentation and writer define it (version 2,
uncompressed joint shards), so writing needs no extra package:

* ``shard.NNNNN.mds``: ``uint32`` sample count *n*, ``uint32`` offsets[*n* + 1] (from the start of the file),
  the shard's configuration as JSON text, then the samples; a sample is the ``uint32`` sizes of its
  variable-size columns followed by the column bytes, columns in name order;
* ``index.json``: ``{"version": 2, "shards": [...]}`` with each shard's column names, encodings and sizes,
  sample count and file size.

Columns: ``image`` (``bytes``: the stored tile bytes, unchanged), ``tile_id``, ``source``, ``format``,
``sha256`` (``str``) and ``meta`` (``json``: every manifest column, nulls kept, WKB ``geometry`` as hex).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from rs4m import manifest as mf
from rs4m.export.litdata import sample_dicts
from rs4m.export.runner import ExportJob

COLUMNS = {"image": "bytes", "meta": "json", "tile_id": "str", "source": "str", "format": "str", "sha256": "str"}
NAMES = sorted(COLUMNS)


def shard_config() -> dict[str, Any]:
    """The per-shard configuration MDS stores in ``index.json`` and inside each shard (``size_limit`` None:
    the export plan, not MDS, decides where a shard ends)."""
    return {"column_encodings": [COLUMNS[n] for n in NAMES], "column_names": NAMES,
            "column_sizes": [None] * len(NAMES), "compression": None, "format": "mds", "hashes": [],
            "size_limit": None, "version": 2}


def encode_sample(sample: dict[str, Any]) -> bytes:
    """One MDS sample: the sizes of its (all variable-size) columns, then their bytes, in name order."""
    parts = []
    for name in NAMES:
        value = sample[name]
        if COLUMNS[name] == "json":
            value = json.loads(value) if isinstance(value, str) else value
            parts.append(json.dumps(value, sort_keys=True).encode())
        elif COLUMNS[name] == "str":
            parts.append(value.encode())
        else:
            parts.append(bytes(value))
    return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


class MDSFileWriter:
    """One shard. Samples stream to a spool file; ``close`` writes header, config and samples in one pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = json.dumps(shard_config(), sort_keys=True).encode()
        # a hidden *.tmp name: a killed run's spool is removed with the other temporary files
        self._spool: BinaryIO = open(path.with_name(path.name.removesuffix(".tmp") + ".body.tmp"), "w+b")  # noqa: SIM115 - closed in close()
        self._sizes: list[int] = []

    def add(self, rows: pa.Table, data: list[bytes]) -> None:
        for sample in sample_dicts(rows, data):
            blob = encode_sample(sample)
            self._spool.write(blob)
            self._sizes.append(len(blob))

    def close(self) -> dict[str, Any]:
        n = len(self._sizes)
        start = 4 + 4 * (n + 1) + len(self.config)
        offsets = [start]
        for size in self._sizes:
            offsets.append(offsets[-1] + size)
        if offsets[-1] >= 2**32:
            raise ValueError("an MDS shard must stay under 4 GiB; use a smaller --shard-size")
        with open(self.path, "wb") as out:
            out.write(struct.pack(f"<{n + 2}I", n, *offsets) + self.config)
            self._spool.seek(0)
            while block := self._spool.read(1 << 22):
                out.write(block)
        self._spool.close()
        Path(self._spool.name).unlink()
        return {"samples": n, "bytes": offsets[-1]}


class MDSFormat:
    """The ``mds`` export format (see the module docstring)."""

    name = "mds"
    default_shard_size = "500MB"

    def options(self) -> dict[str, Any]:
        return {}

    def prepare(self, manifest_schema: pa.Schema) -> None:
        """Nothing to prepare: the columns are fixed."""

    def file_name(self, index: int, total: int) -> str:
        return f"shard.{index:05d}.mds"

    def open_file(self, path: Path, index: int) -> MDSFileWriter:
        return MDSFileWriter(path)

    def write_index(self, job: ExportJob, infos: list[dict[str, Any]]) -> None:
        shards = [{**shard_config(), "samples": info["samples"], "zip_data": None,
                   "raw_data": {"basename": self.file_name(i, len(infos)), "bytes": info["bytes"], "hashes": {}}}
                  for i, info in enumerate(infos)]
        mf.atomic_write_bytes(job.dest / "index.json", json.dumps({"shards": shards, "version": 2},
                                                                  sort_keys=True).encode())

    def read_back(self, job: ExportJob) -> Iterator[tuple[int, str, bytes]]:
        """Every sample, parsed from the shards by the offsets in their headers (ranged reads: no mmap, so
        memory stays small whatever the shard size)."""
        image, tile_id = NAMES.index("image"), NAMES.index("tile_id")
        for fp in job.plan.files:
            fd = os.open(job.final_path(fp.index), os.O_RDONLY)
            try:
                (n,) = struct.unpack("<I", os.pread(fd, 4, 0))
                offsets = struct.unpack(f"<{n + 1}I", os.pread(fd, 4 * (n + 1), 4))
                for begin, end in itertools.pairwise(offsets):
                    raw = os.pread(fd, end - begin, begin)
                    sizes = struct.unpack_from(f"<{len(NAMES)}I", raw, 0)
                    pos = [4 * len(NAMES)]
                    for size in sizes:
                        pos.append(pos[-1] + size)
                    yield fp.index, raw[pos[tile_id]:pos[tile_id + 1]].decode(), raw[pos[image]:pos[image + 1]]
            finally:
                os.close(fd)

    def finish(self, job: ExportJob) -> None:
        """Nothing more: ``index.json`` is the dataset's entry point."""


def make_format(**options: Any) -> MDSFormat:
    """An :class:`MDSFormat` (no options)."""
    return MDSFormat(**options)
