"""``rs4m export hf``: Parquet files the Hugging Face Hub and ``datasets`` read without configuration.

Layout of ``DEST``::

    README.md                               the dataset card (YAML header with configs / data_files)
    data/train-00000-of-00003.parquet       one file per ~``--shard-size`` of tile bytes

Each file has an ``image`` column of the ``datasets`` ``Image`` feature (a struct of the stored ``bytes``,
unchanged, and a ``path`` of ``<tile_id>.<format>``) and every manifest column beside it. The schema carries the
``huggingface`` metadata (so ``datasets`` decodes ``image`` to a PIL image with no ``features=`` argument) and
GeoParquet ``geo`` metadata for the WKB ``geometry`` column. A row group ends with the tile that brings it
to ``row_group_bytes`` of image bytes (the Hub's viewer and ``datasets`` read a row group at a time); image
bytes are stored uncompressed and without statistics (they are already compressed), the rest with zstd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.export.runner import ExportJob

IMAGE = "image"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROW_GROUP_BYTES = 64 * 2**20
_HF_DTYPES = {pa.string(): "string", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32",
              pa.int64(): "int64", pa.uint64(): "uint64", pa.float32(): "float32", pa.float64(): "float64",
              pa.binary(): "binary", pa.bool_(): "bool"}


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The ``datasets`` features dict of an export: ``image`` as ``Image``, the rest as ``Value`` columns."""
    features: dict[str, Any] = {IMAGE: {"_type": "Image"}}
    for field in schema:
        if field.type not in _HF_DTYPES:
            raise TypeError(f"manifest column {field.name} has type {field.type}, which has no datasets dtype")
        features[field.name] = {"dtype": _HF_DTYPES[field.type], "_type": "Value"}
    return features


def export_schema(manifest_schema: pa.Schema) -> pa.Schema:
    """``image`` then the manifest's columns (all nullable, as ``datasets`` expects), with HF and geo metadata."""
    fields = [pa.field(IMAGE, IMAGE_TYPE)] + [pa.field(f.name, f.type) for f in manifest_schema]
    meta = {b"huggingface": json.dumps({"info": {"features": hf_features(manifest_schema)}}).encode()}
    if mf.GEOMETRY in manifest_schema.names:
        meta[b"geo"] = json.dumps(mf.geo_metadata(manifest_schema.empty_table())).encode()
    return pa.schema(fields, metadata=meta)


class HFFileWriter:
    """One Parquet file: buffers rows until a row group's worth of image bytes, then writes the group."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_bytes: int) -> None:
        self.path, self.schema, self.row_group_bytes = path, schema, row_group_bytes
        others = [f.name for f in schema if f.name != IMAGE]
        self._writer = pq.ParquetWriter(
            path, schema, compression={f"{IMAGE}.bytes": "none", f"{IMAGE}.path": "zstd",
                                       **{name: "zstd" for name in others}},
            use_dictionary=[f"{IMAGE}.path"] + others, write_statistics=others)
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0

    def add(self, rows: pa.Table, data: list[bytes]) -> None:
        paths = [f"{t}.{f}" for t, f in zip(rows["tile_id"].to_pylist(), rows["format"].to_pylist())]
        image = pa.StructArray.from_arrays([pa.array(data, pa.binary()), pa.array(paths, pa.string())],
                                           fields=list(IMAGE_TYPE))
        table = pa.Table.from_arrays([image] + [rows[f.name].cast(f.type) for f in self.schema if f.name != IMAGE],
                                     schema=self.schema)
        start = 0
        for i, blob in enumerate(data):  # row groups cut by bytes, independent of how the rows arrive
            self._buffered += len(blob)
            if self._buffered >= self.row_group_bytes:
                self._buffer.append(table.slice(start, i + 1 - start))
                start = i + 1
                self._flush()
        if start < table.num_rows:
            self._buffer.append(table.slice(start))

    def _flush(self) -> None:
        if self._buffer:
            group = pa.concat_tables(self._buffer)  # chunked: the writer needs no contiguous copy
            self._writer.write_table(group, row_group_size=group.num_rows)
            self.rows += group.num_rows
        self._buffer, self._buffered = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        self._writer.close()
        return {"rows": self.rows, "bytes": self.path.stat().st_size}


class HFFormat:
    """The ``hf`` export format (see the module docstring)."""

    name = "hf"
    default_shard_size = "500MB"  # as datasets shards for push_to_hub

    def __init__(self, row_group_bytes: int = ROW_GROUP_BYTES, title: str | None = None) -> None:
        self.row_group_bytes = row_group_bytes
        self.title = title
        self._schema: pa.Schema | None = None

    def options(self) -> dict[str, Any]:
        return {"row_group_bytes": self.row_group_bytes}

    def file_name(self, index: int, total: int) -> str:
        return f"data/train-{index:05d}-of-{total:05d}.parquet"

    def open_file(self, path: Path, index: int) -> HFFileWriter:
        if self._schema is None:
            raise RuntimeError("HFFormat.prepare(schema) must run before files are opened")
        return HFFileWriter(path, self._schema, self.row_group_bytes)

    def prepare(self, manifest_schema: pa.Schema) -> None:
        """Fix the output schema from the manifest's."""
        self._schema = export_schema(manifest_schema)

    def write_index(self, job: ExportJob, infos: list[dict[str, Any]]) -> None:
        """Nothing to index: ``datasets`` finds the files by the card's ``data_files`` pattern."""

    def read_back(self, job: ExportJob) -> Iterator[tuple[int, str, bytes]]:
        for fp in job.plan.files:
            with pq.ParquetFile(job.final_path(fp.index)) as pf:
                for batch in pf.iter_batches(columns=["tile_id", IMAGE], batch_size=64):
                    images = batch.column(IMAGE).field("bytes").to_pylist()
                    for tile_id, blob in zip(batch.column("tile_id").to_pylist(), images):
                        yield fp.index, tile_id, blob

    def finish(self, job: ExportJob) -> None:
        """Write the dataset card (after the files are verified)."""
        from rs4m.export.card import render_card
        from rs4m.stages.build import read_record

        record = read_record(job.out) if (job.out / "build.json").exists() else {}
        title = self.title or f"{job.out.name} (an rs4m build)"
        mf.atomic_write_bytes(job.dest / "README.md", render_card(job, record, title).encode())


def make_format(**options: Any) -> HFFormat:
    """An :class:`HFFormat` (options: ``row_group_bytes``, ``title``)."""
    return HFFormat(**options)
