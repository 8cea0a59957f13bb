"""Schemas round-trip and the manifest is readable by pandas, DuckDB and GeoPandas."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from rs4m import manifest as mf
from rs4m.errors import OutputError


def _tile_row(i: int, with_geometry: bool = True) -> dict:
    poly = shapely.box(-77.0 + i, 24.0, -76.5 + i, 24.5)
    return {
        "tile_id": mf.make_tile_id("src", "a/b.tif", i * 10, 0, 10, 10), "scene_id": "s", "source": "src",
        "scene_path": "a/b.tif", "x": i * 10, "y": 0, "width": 10, "height": 10, "bands": 3, "dtype": "uint8",
        "gsd_m": 0.5, "crs": "EPSG:32618", "geometry": shapely.to_wkb(poly) if with_geometry else None,
        "sha256": "ab" * 32, "phash": 2**64 - 1 - i, "dhash": i, "richness": 1.5, "shard": "rs4m-00000.tar",
        "offset": 512 * (i + 1), "length": 100, "format": "jpg", "dup_group": None, "dup_reason": None,
    }


@pytest.mark.parametrize("name", sorted(mf.SCHEMAS))
def test_empty_schema_round_trip(tmp_path, name):
    schema = mf.SCHEMAS[name]
    mf.write_table(mf.empty_table(schema), tmp_path / "t.parquet", schema)
    back = mf.read_table(tmp_path / "t.parquet", schema)
    assert back.schema.remove_metadata().equals(schema)


def test_manifest_round_trip_values_and_types(tmp_path):
    rows = [_tile_row(i) for i in range(3)] + [_tile_row(3, with_geometry=False)]
    table = mf.table_from_rows(rows, mf.MANIFEST_SCHEMA)
    mf.write_table(table, tmp_path / "m.parquet", mf.MANIFEST_SCHEMA)
    back = mf.read_table(tmp_path / "m.parquet", mf.MANIFEST_SCHEMA)
    assert back.schema.remove_metadata().equals(mf.MANIFEST_SCHEMA)
    assert back.to_pylist() == table.to_pylist()
    assert back["phash"].to_pylist()[0] == 2**64 - 1  # full uint64 range survives


def test_geo_metadata_is_geoparquet(tmp_path):
    mf.write_table(mf.table_from_rows([_tile_row(0)], mf.MANIFEST_SCHEMA), tmp_path / "m.parquet")
    geo = json.loads(pq.read_schema(tmp_path / "m.parquet").metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"


def test_manifest_read_by_pandas_duckdb_geopandas(tmp_path):
    path = tmp_path / "m.parquet"
    rows = [_tile_row(i) for i in range(3)]
    mf.write_table(mf.table_from_rows(rows, mf.MANIFEST_SCHEMA), path, mf.MANIFEST_SCHEMA)

    import duckdb
    import geopandas
    import pandas as pd

    df = pd.read_parquet(path)
    assert list(df["tile_id"]) == [r["tile_id"] for r in rows]
    n, xmax = duckdb.sql(f"select count(*), max(x) from read_parquet('{path}')").fetchall()[0]
    assert (n, xmax) == (3, 20)
    gdf = geopandas.read_parquet(path)
    assert isinstance(gdf, geopandas.GeoDataFrame)
    assert gdf.geometry.name == "geometry" and str(gdf.geometry.dtype) == "geometry"
    assert gdf.crs.to_string() == "OGC:CRS84"  # EPSG:4326 in lon/lat axis order
    assert gdf.geometry.iloc[1].bounds == pytest.approx((-76.0, 24.0, -75.5, 24.5))


def test_read_rejects_wrong_type_and_missing_column(tmp_path):
    bad = pa.table({"tile_id": ["a"], "source": ["s"], "scene_path": ["p"], "dup_group": ["not-an-int"]})
    pq.write_table(bad, tmp_path / "d.parquet")
    with pytest.raises(OutputError, match="lacks column 'dup_of'"):
        mf.read_table(tmp_path / "d.parquet", mf.DEDUP_SCHEMA, columns=["tile_id", "dup_of"])
    with pytest.raises(OutputError, match="'dup_group' has type string"):
        mf.read_table(tmp_path / "d.parquet", mf.DEDUP_SCHEMA, columns=["tile_id", "dup_group"])


def test_unknown_column_is_an_error():
    with pytest.raises(ValueError, match="unknown column"):
        mf.table_from_rows([{"tile_id": "a", "bogus": 1}], mf.TILES_SCHEMA)


def test_tile_id_is_deterministic_and_dot_free():
    a = mf.make_tile_id("dota_v1", "train/images/P0001.png", 0, 512, 512, 512)
    assert a == mf.make_tile_id("dota_v1", "train/images/P0001.png", 0, 512, 512, 512)
    assert a != mf.make_tile_id("dota_v1", "train/images/P0001.png", 512, 0, 512, 512)
    assert "." not in a and "/" not in a and len(a) == 32


def test_atomic_write_leaves_no_temp_files(tmp_path):
    mf.write_table(mf.empty_table(mf.ERRORS_SCHEMA), tmp_path / "errors.parquet")
    mf.atomic_write_json(tmp_path / "b.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "errors.parquet"]
