"""Scan + tile end to end on generated aerial-like GeoTIFFs: tile counts, footprints, GSD, filters, determinism,
bad input."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.warp import transform_bounds

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.config import FilterConfig
from rs4m.layout import OutputLayout
from rs4m.shards import ShardReader


def run_cli(*args: str):
    return CliRunner().invoke(get_cli(), [str(a) for a in args], catch_exceptions=False)


def tiles_of(out: Path):
    return mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA)


def errors_of(out: Path) -> list[dict]:
    return mf.read_table(OutputLayout(out).errors, mf.ERRORS_SCHEMA).to_pylist()


@pytest.fixture(scope="module")
def landsat_build(tmp_path_factory, aerial_sources):
    out = tmp_path_factory.mktemp("b") / "out"
    src = aerial_sources.landsat
    result = run_cli("build", out, "--source", f"folder={src}", "--tile-size", 256, "--workers", 1, "-q",
                     "--keep-dropped")
    assert result.exit_code == 0, result.output
    return out, aerial_sources


def grid_count(n: int, tile: int) -> int:
    return 1 if n <= tile else -(-n // tile)


def test_tile_counts_per_scene(landsat_build):
    out, sources = landsat_build
    tiles = tiles_of(out).to_pylist()
    per_scene: dict[str, int] = {}
    for t in tiles:
        per_scene[t["scene_path"]] = per_scene.get(t["scene_path"], 0) + 1
    expected = {}
    for path in sorted(sources.landsat.glob("*.tif")):
        with rasterio.open(path) as ds:
            expected[path.name] = grid_count(ds.width, 256) * grid_count(ds.height, 256)
    assert per_scene == expected
    main, tenth = sources.scene("scene.tif"), sources.scene("scene-tenth.tif")
    assert main.width % 256 and main.height % 256  # edge tiles shifted inward on both axes
    assert expected["scene.tif"] == (main.width // 256 + 1) * (main.height // 256 + 1)
    assert max(tenth.width, tenth.height) < 256 and expected["scene-tenth.tif"] == 1


def test_windows_stay_inside_and_full_size(landsat_build):
    out, sources = landsat_build
    for t in tiles_of(out).to_pylist():
        with rasterio.open(sources.landsat / t["scene_path"]) as ds:
            assert 0 <= t["x"] and t["x"] + t["width"] <= ds.width
            assert 0 <= t["y"] and t["y"] + t["height"] <= ds.height
            assert t["width"] == min(256, ds.width) and t["height"] == min(256, ds.height)


def test_gsd_and_footprints(landsat_build):
    out, sources = landsat_build
    main = sources.scene("scene.tif")
    tiles = [t for t in tiles_of(out).to_pylist() if t["scene_path"] == main.name]
    assert all(t["gsd_m"] == pytest.approx(abs(main.transform.a), rel=0.01) for t in tiles)
    assert all(t["crs"] == main.crs for t in tiles)
    with rasterio.open(main.path) as ds:
        scene = shapely.box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    tol = 2 * abs(main.transform.a) / 100_000  # two pixels in degrees (a degree is over 100 km there)
    union = shapely.union_all([shapely.from_wkb(t["geometry"]) for t in tiles])
    # the tiles cover the scene: their union spans the scene's bounds ...
    assert union.bounds == pytest.approx(scene.bounds, abs=tol)
    assert scene.buffer(tol).contains(union)
    # ... and each tile's footprint contains the centre of its window, mapped independently
    with rasterio.open(main.path) as ds:
        for t in tiles:
            cx, cy = ds.xy(t["y"] + t["height"] / 2, t["x"] + t["width"] / 2)
            lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", [cx], [cy])
            assert shapely.from_wkb(t["geometry"]).contains(shapely.Point(lon[0], lat[0]))
    scenes = {s["scene_path"]: s for s in mf.read_table(OutputLayout(out).scenes, mf.SCENES_SCHEMA).to_pylist()}
    assert shapely.from_wkb(scenes[main.name]["geometry"]).bounds == pytest.approx(scene.bounds, abs=tol)
    for s in sources.landsat_scenes:  # uint8 and 16-bit scenes alike
        row = scenes[s.name]
        assert (row["width"], row["height"], row["bands"], row["dtype"]) == (s.width, s.height, *s.data.shape[:1],
                                                                             s.data.dtype.name)


def test_nodata_tiles_filtered_with_reason(landsat_build):
    out, sources = landsat_build
    limit = FilterConfig().max_nodata_frac
    tiles = tiles_of(out).to_pylist()
    filtered = [t for t in tiles if t["filter_reason"]]
    assert filtered, "the scene has nodata corners: some tiles must be filtered"
    for t in tiles:  # the nodata fraction of each window, from the pixels written
        frac = sources.scene(t["scene_path"]).nodata_frac(t["x"], t["y"], t["width"], t["height"])
        assert t["nodata_frac"] == pytest.approx(frac, abs=1e-6)  # stored as float32
        assert bool(t["filter_reason"]) == (frac > limit)
    for t in filtered:
        assert t["filter_reason"].startswith("mostly nodata") and t["nodata_frac"] > limit
        assert t["shard"] is None and t["sha256"] is None
    kept = [t for t in tiles if not t["filter_reason"]]
    assert all(t["nodata_frac"] <= limit and t["shard"] for t in kept)
    assert any(0 < t["nodata_frac"] for t in kept)  # some nodata is tolerated


def test_stored_bytes_and_hashes(landsat_build):
    import hashlib


    out, _ = landsat_build
    kept = [t for t in tiles_of(out).to_pylist() if t["shard"]]
    with ShardReader(OutputLayout(out).shards_dir) as reader:
        for t in kept[:6]:
            data = reader.read(t["shard"], t["offset"], t["length"])
            assert hashlib.sha256(data).hexdigest() == t["sha256"]
            assert data[:3] == b"\xff\xd8\xff" and t["format"] == "jpg"
    assert all(0 <= t["phash"] < 2**64 and t["richness"] > 0 for t in kept)
    assert len({t["tile_id"] for t in kept}) == len(kept)


def test_verify_passes_and_build_json(landsat_build):
    out, sources = landsat_build
    assert run_cli("verify", out).exit_code == 0
    record = json.loads((out / "build.json").read_text())
    assert record["stages"]["scan"]["scenes"] == len(sources.landsat_scenes)
    assert record["finished"] and record["versions"]["gdal"]
    assert record["sources"][0]["source"] == f"folder/{sources.landsat.name}"


def test_workers_do_not_change_output(landsat_build, tmp_path):
    out1, sources = landsat_build
    out2 = tmp_path / "out2"
    assert run_cli("build", out2, "--source", f"folder={sources.landsat}", "--tile-size", 256, "--workers", 2, "-q",
                   "--keep-dropped").exit_code == 0
    for name in sorted(p.name for p in (out1 / "shards").glob("*.tar")):
        assert (out1 / "shards" / name).read_bytes() == (out2 / "shards" / name).read_bytes()
    assert tiles_of(out1).equals(tiles_of(out2))


def _png_bomb(path: Path, side: int = 100_000) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_bad_folder(folder: Path, good: Path) -> dict[str, str]:
    """Copies of the GeoTIFF ``good`` and bad files side by side; returns {bad file name: expected reason fragment}."""
    folder.mkdir(parents=True)
    shutil.copy(good, folder / "good.tif")
    shutil.copy(good, folder / "gööd-ünïcode.tif")
    data = good.read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    (folder / "empty.tif").write_bytes(b"")
    (folder / "random.tif").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "text.png").write_bytes(b"this is not an image\n" * 10)
    _png_bomb(folder / "bomb.png")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:3000])
    single = folder / "oneband.tif"
    with rasterio.open(single, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8") as ds:
        ds.write(np.full((1, 64, 64), 7, np.uint8))
    return {"truncated.tif": "", "empty.tif": "", "random.tif": "", "text.png": "", "bomb.png": "",
            "truncated.jpg": "", "oneband.tif": "band"}


def test_bad_input_becomes_error_rows(tmp_path, aerial_sources):
    folder = tmp_path / "mixed"
    bad = make_bad_folder(folder, aerial_sources.scene("scene-tenth.tif").path)
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"folder={folder}", "--workers", 1, "-q", "--keep-dropped")
    assert result.exit_code == 0, result.output
    errors = {Path(e["path"]).name: e for e in errors_of(out)}
    assert set(bad) <= set(errors), sorted(errors)
    for name, fragment in bad.items():
        assert errors[name]["reason"] and fragment in errors[name]["reason"]
        assert errors[name]["stage"] in ("scan", "tile")
    tiles = tiles_of(out).to_pylist()
    assert {t["scene_path"] for t in tiles if t["shard"]} == {"good.tif", "gööd-ünïcode.tif"}
    assert f"errors {len(errors)}" in result.stderr
    assert run_cli("verify", out).exit_code == 0


def test_missing_folder_stops_before_work(tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"folder={tmp_path / 'nope'}")
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_unknown_adapter_stops_before_work(tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"nosuchadapter={tmp_path}")
    assert result.exit_code == 2 and not out.exists()
    assert "unknown source adapter 'nosuchadapter'" in result.stderr and "folder" in result.stderr


def test_max_images_samples_across_folders(tmp_path, aerial_sources):
    src = tmp_path / "classes"
    for cls in ("a", "b", "c", "d"):
        (src / cls).mkdir(parents=True)
        for i in range(6):
            os.symlink(aerial_sources.scene("scene-tenth.tif").path, src / cls / f"{i}.tif")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[sources]]\nname = "folder"\npath = "{src}"\nmax_images = 8\n')
    out = tmp_path / "out"
    assert run_cli("build", out, "--recipe", recipe, "--workers", 1, "-q").exit_code == 0
    scenes = mf.read_table(OutputLayout(out).scenes, mf.SCENES_SCHEMA).to_pylist()
    assert len(scenes) == 8
    assert len({s["scene_path"].split("/")[0] for s in scenes}) >= 3  # not the first two classes only
    assert [s["scene_path"] for s in scenes] == sorted(s["scene_path"] for s in scenes)
