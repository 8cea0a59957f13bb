"""Table schemas of a build (scenes, tiles / manifest, dedup, shards, errors, leakage), typed IO, atomic writes.

This module is the one place that defines column names and types. Every table is written with
:func:`write_table` (temp file + rename) and read back with :func:`read_table`, which checks the schema.
Tables with a ``geometry`` column carry GeoParquet 1.1 ``geo`` metadata (WKB, lon/lat, OGC:CRS84 = EPSG:4326
axis order x=lon, y=lat), so GeoPandas reads them as a GeoDataFrame and DuckDB as plain Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rs4m.errors import OutputError

GEOMETRY = "geometry"

SCENES_SCHEMA = pa.schema(
    [
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_root", pa.string(), nullable=False),
        pa.field("scene_path", pa.string(), nullable=False),
        pa.field("band_paths", pa.list_(pa.string())),
        pa.field("rgb_bands", pa.list_(pa.int16())),
        pa.field("split", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("driver", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("bands", pa.int8()),
        pa.field("dtype", pa.string()),
        pa.field("crs", pa.string()),
        pa.field("transform", pa.list_(pa.float64())),
        pa.field("gsd_m", pa.float32()),
        pa.field(GEOMETRY, pa.binary()),
        pa.field("unit", pa.int32()),
    ]
)

TILES_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("scene_path", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("x", pa.int32()),
        pa.field("y", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("out_width", pa.int32()),
        pa.field("out_height", pa.int32()),
        pa.field("bands", pa.int8()),
        pa.field("dtype", pa.string()),
        pa.field("gsd_m", pa.float32()),
        pa.field("crs", pa.string()),
        pa.field(GEOMETRY, pa.binary()),
        pa.field("sha256", pa.string()),
        pa.field("pixel_sha256", pa.string()),
        pa.field("phash", pa.uint64()),
        pa.field("dhash", pa.uint64()),
        pa.field("phash_canonical", pa.uint64()),
        pa.field("dhash_canonical", pa.uint64()),
        pa.field("richness", pa.float32()),
        pa.field("nodata_frac", pa.float32()),
        pa.field("filter_reason", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("offset", pa.int64()),
        pa.field("length", pa.int64()),
        pa.field("format", pa.string()),
    ]
)

DEDUP_FIELDS = [
    pa.field("dup_group", pa.int64()),
    pa.field("dup_of", pa.string()),
    pa.field("dup_reason", pa.string()),
]

MANIFEST_SCHEMA = pa.schema(list(TILES_SCHEMA) + DEDUP_FIELDS)

DEDUP_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("scene_path", pa.string(), nullable=False),
        *DEDUP_FIELDS,
        pa.field("distance", pa.float32()),
    ]
)

#: what an overlap match adds to ``dedup.parquet`` (written only by builds with overlap search on, so that the
#: files of builds without it stay as they were): the shared ground over the smaller tile's area, this tile's
#: pixel size in the matched tile's pixels, and the rotation (degrees, counter-clockwise) onto the matched tile
OVERLAP_FIELDS = [
    pa.field("overlap_frac", pa.float32()),
    pa.field("overlap_scale", pa.float32()),
    pa.field("overlap_rotation", pa.float32()),
]

DEDUP_OVERLAP_SCHEMA = pa.schema(list(DEDUP_SCHEMA) + OVERLAP_FIELDS)

#: per-tile local features written by the tile stage with overlap search on (``OUT/features/part-NNNNN``):
#: one row per stored tile; ``desc`` is ``K × 16`` bytes of binary descriptors, ``xy`` ``K × 2`` bytes of
#: positions (fractions of ``width`` / ``height`` times 255), ``mirror_*`` the same of the tile mirrored
#: left-right; a tile whose features failed has null features and a ``feature_error``
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("desc", pa.binary()),
        pa.field("xy", pa.binary()),
        pa.field("mirror_desc", pa.binary()),
        pa.field("mirror_xy", pa.binary()),
        pa.field("feature_error", pa.string()),
    ]
)

SHARDS_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("source", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)

LEAKAGE_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("scene_path", pa.string()),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("benchmark_image", pa.string(), nullable=False),
        pa.field("distance", pa.float32()),
        pa.field("kind", pa.string(), nullable=False),
    ]
)

#: ``leakage.parquet`` of a run with overlap search: kind ``overlap`` rows carry the share of the benchmark
#: image's area the tile shows (``overlap_frac``), the benchmark image's pixel size in the tile's pixels
#: (``overlap_scale``) and the rotation onto the tile; the other kinds have nulls there
LEAKAGE_OVERLAP_SCHEMA = pa.schema(list(LEAKAGE_SCHEMA) + OVERLAP_FIELDS)

SCHEMAS: dict[str, pa.Schema] = {
    "scenes": SCENES_SCHEMA,
    "tiles": TILES_SCHEMA,
    "manifest": MANIFEST_SCHEMA,
    "dedup": DEDUP_SCHEMA,
    "shards": SHARDS_SCHEMA,
    "errors": ERRORS_SCHEMA,
    "leakage": LEAKAGE_SCHEMA,
    "features": FEATURES_SCHEMA,
}


def make_tile_id(source: str, scene_path: str, x: int, y: int, width: int, height: int) -> str:
    """Deterministic tile id: 32 hex chars of BLAKE2b over (source, relative path, window). No dots."""
    key = f"{source}\x00{scene_path}\x00{x}\x00{y}\x00{width}\x00{height}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def make_scene_id(source: str, scene_path: str) -> str:
    """Deterministic scene id: 24 hex chars of BLAKE2b over (source, relative path)."""
    key = f"{source}\x00{scene_path}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=12).hexdigest()


def geo_metadata(table: pa.Table) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata for a table whose ``geometry`` column holds WKB in lon/lat."""
    return {
        "version": "1.1.0",
        "primary_column": GEOMETRY,
        "columns": {
            GEOMETRY: {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                # "crs" omitted: GeoParquet then means OGC:CRS84, i.e. EPSG:4326 with lon/lat axis order.
                "edges": "planar",
            }
        },
    }


def table_from_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from dict rows; missing keys become nulls, unknown keys are an error."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"unknown column(s) {sorted(extra)}; valid: {schema.names}")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)


def empty_table(schema: pa.Schema) -> pa.Table:
    """A zero-row table of ``schema``."""
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema`` (column order and types); raise if one is missing."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise OutputError(f"table lacks column(s) {missing}")
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def atomic_path(path: Path) -> Path:
    """A unique temporary path beside ``path`` (same folder, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file + rename: readers never see a half-written file."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_table(table: pa.Table, path: Path, schema: pa.Schema | None = None,
                metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``table`` (conformed to ``schema`` if given) to Parquet atomically, with GeoParquet metadata
    when it has a ``geometry`` column and ``metadata`` (JSON-encoded) under ``rs4m.<key>`` keys."""
    path = Path(path)
    if schema is not None:
        table = conform(table, schema)
    meta = dict(table.schema.metadata or {})
    if GEOMETRY in table.column_names:
        meta[b"geo"] = json.dumps(geo_metadata(table)).encode()
    for key, value in (metadata or {}).items():
        meta[f"rs4m.{key}".encode()] = json.dumps(value).encode()
    table = table.replace_schema_metadata(meta)
    tmp = atomic_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unreadable(path: Path, err: Exception) -> OutputError:
    """One line for a Parquet file that cannot be read (garbled, truncated, missing), saying what to run."""
    if isinstance(err, FileNotFoundError):
        return OutputError(f"{path} does not exist; run the stage that writes it first")
    first = (str(err).splitlines() or [type(err).__name__])[0]
    return OutputError(f"{path} is not a readable Parquet file ({first}); delete it and run the stage that "
                       "writes it again (or `rs4m build OUT --force`)")


def read_metadata(path: Path, key: str) -> Any:
    """The JSON value stored by :func:`write_table` under ``metadata[key]``, or None."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None
    raw = meta.get(f"rs4m.{key}".encode())
    return json.loads(raw) if raw is not None else None


def validate(table: pa.Table, schema: pa.Schema, what: str = "table") -> None:
    """Raise :class:`OutputError` naming the first column that is missing or has the wrong type."""
    for field in schema:
        if field.name not in table.column_names:
            raise OutputError(f"{what} lacks column '{field.name}'")
        got = table.schema.field(field.name).type
        if got != field.type:
            raise OutputError(f"{what} column '{field.name}' has type {got}, expected {field.type}")


def read_table(path: Path, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet table; with ``schema``, check it (on the read columns) and return it in schema order."""
    path = Path(path)
    if not path.exists():
        raise OutputError(f"{path} does not exist; run the stage that writes it first")
    try:
        if columns is not None:
            missing = [c for c in columns if c not in pq.read_schema(path).names]
            if missing:
                raise OutputError(f"{path} lacks column '{missing[0]}'")
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None
    if schema is not None:
        wanted = pa.schema([schema.field(c) for c in (columns or schema.names)])
        validate(table, wanted, what=str(path))
        table = table.select(wanted.names)
    return table


def read_parts(paths: Iterable[Path], schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read and concatenate Parquet parts of one schema (zero parts give an empty table)."""
    tables = [read_table(p, schema, columns) for p in paths]
    if not tables:
        wanted = pa.schema([schema.field(c) for c in (columns or schema.names)])
        return wanted.empty_table()
    return pa.concat_tables(tables)
