"""Bounded-memory table IO for the global steps: compact columns of many Parquet parts, and a streaming writer.

* :func:`fixed_width` turns a string column (tile ids, digests, scene ids) into a numpy array of fixed-width
  bytes, so millions of rows cost tens of bytes each instead of a Python object each.
* :class:`ParquetStream` writes a table in pieces; its file is byte-identical to
  :func:`rs4m.manifest.write_table` of the whole table (same schema, metadata, compression and row groups of
  ``ROW_GROUP_ROWS`` rows), and it is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs4m import manifest as mf

#: pyarrow's default (and so ``write_table``'s) largest row group
ROW_GROUP_ROWS = 1 << 20


def fixed_width(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Strings → numpy ``S<w>`` bytes (UTF-8; nulls as ``b""``), ``w`` the longest value's byte length.

    Arrays of different ``w`` concatenate (numpy widens), and compare and sort as the strings do for ASCII.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.string())
    if len(arr) == 0:
        return np.zeros(0, "S1")
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    if arr.null_count == 0 and (lengths == width).all():  # the usual case: read the buffer as is
        data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        return data.view(f"S{width}").copy()
    return np.array([v.encode() if v is not None else b"" for v in arr.to_pylist()], dtype=f"S{width}")


def find_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each of ``keys`` in the sorted array ``sorted_keys``, and whether it is there."""
    pos = np.searchsorted(sorted_keys, keys)
    found = pos < len(sorted_keys)
    found[found] = sorted_keys[pos[found]] == keys[found]
    return np.minimum(pos, max(len(sorted_keys) - 1, 0)), found


def schema_metadata(schema: pa.Schema, metadata: Mapping[str, Any] | None = None) -> dict[bytes, bytes]:
    """The schema metadata :func:`rs4m.manifest.write_table` gives a table of ``schema``."""
    meta = dict(schema.metadata or {})
    if mf.GEOMETRY in schema.names:
        meta[b"geo"] = json.dumps(mf.geo_metadata(schema.empty_table())).encode()
    for key, value in (metadata or {}).items():
        meta[f"rs4m.{key}".encode()] = json.dumps(value).encode()
    return meta


class ParquetStream:
    """Write tables of ``schema`` one after another into one Parquet file at ``path`` (atomically).

    Rows are buffered and written in row groups of exactly :data:`ROW_GROUP_ROWS` rows (the last one fewer),
    so the file equals ``rs4m.manifest.write_table`` of all rows at once.
    """

    def __init__(self, path: Path, schema: pa.Schema, metadata: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.schema = schema.with_metadata(schema_metadata(schema, metadata))
        self._tmp = mf.atomic_path(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (conformed to the schema)."""
        table = mf.conform(table, self.schema).replace_schema_metadata(self.schema.metadata)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, rows: int) -> None:
        buffered = pa.concat_tables(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(buffered.slice(0, rows), row_group_size=ROW_GROUP_ROWS)
        rest = buffered.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        """Write what is buffered and move the file into place (an empty stream writes an empty table)."""
        if self.rows == 0:
            mf.write_table(self.schema.empty_table(), self.path)
            self._tmp.unlink(missing_ok=True)
            return
        if self._pending_rows:
            self._flush(self._pending_rows)
        assert self._writer is not None
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ParquetStream":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
