"""Whole-decode scenes (PNG, JPEG, GIF, BMP, WebP): windows read without a full-size copy give exactly the pixels
of a whole decode, the per-scene memory budget refuses before decoding, and a 16000² PNG, decoded row by row,
builds within a stated peak RSS (slow)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import simplejpeg
from click.testing import CliRunner
from PIL import Image

from rs4m.cli import get_cli
from rs4m.errors import BadInput
from rs4m.raster import open_scene
from rs4m.sources import SceneRef
from rs4m.whole_decode import DECODED_BYTES_PER_PIXEL

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = [(0, 0, 64, 64), (37, 11, 100, 53), (136, 87, 64, 33), (0, 0, 200, 120)]


def noise(h: int, w: int, channels: int = 3, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def windows_of(root: Path, rel: str) -> list[tuple[np.ndarray, np.ndarray]]:
    with open_scene(root, SceneRef(rel)) as r:
        return [r.read_window(*win) for win in WINDOWS]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_windows_equal_slices_of_a_whole_pillow_decode(tmp_path, mode):
    arr = noise(120, 200, 4 if mode == "RGBA" else 3)
    if mode == "RGBA":
        arr[..., 3] = np.where(arr[..., 3] < 60, 0, arr[..., 3])  # about a quarter transparent
    Image.fromarray(arr, mode).save(tmp_path / "s.png")
    whole = np.asarray(Image.open(tmp_path / "s.png").convert(mode))  # independently: one whole decode
    for (x, y, w, h), (rgb, valid) in zip(WINDOWS, windows_of(tmp_path, "s.png"), strict=True):
        part = whole[y:y + h, x:x + w]
        assert np.array_equal(rgb, part[..., :3])
        expected = part[..., 3] > 0 if mode == "RGBA" else np.ones((h, w), bool)
        assert np.array_equal(valid, expected) and valid.flags.c_contiguous and rgb.flags.c_contiguous


def test_palette_png_with_transparency_keeps_its_mask(tmp_path):
    idx = np.random.default_rng(5).integers(0, 4, (120, 200), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    img.save(tmp_path / "p.png", transparency=3)
    for (x, y, w, h), (rgb, valid) in zip(WINDOWS, windows_of(tmp_path, "p.png"), strict=True):
        part = idx[y:y + h, x:x + w]
        assert np.array_equal(valid, part != 3)
        assert np.array_equal(rgb[part == 0], np.tile([255, 0, 0], ((part == 0).sum(), 1)))


def test_jpeg_windows_equal_slices_of_a_whole_simplejpeg_decode(tmp_path):
    data = simplejpeg.encode_jpeg(noise(120, 200), quality=85)
    (tmp_path / "s.jpg").write_bytes(data)
    whole = simplejpeg.decode_jpeg(data, colorspace="RGB")
    for (x, y, w, h), (rgb, valid) in zip(WINDOWS, windows_of(tmp_path, "s.jpg"), strict=True):
        assert np.array_equal(rgb, whole[y:y + h, x:x + w]) and valid.all() and valid.shape == (h, w)


@pytest.mark.parametrize("name,fmt", [("t.png", "PNG"), ("t.jpg", "JPEG")])
def test_truncated_whole_decode_image_is_still_an_error(tmp_path, name, fmt):
    buf = io.BytesIO()
    Image.fromarray(noise(300, 300)).save(buf, format=fmt)
    (tmp_path / name).write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    with open_scene(tmp_path, SceneRef(name)) as r, pytest.raises(BadInput, match="truncated or corrupt"):
        r.read_window(0, 0, 64, 64)


@pytest.mark.parametrize("name,fmt", [("b.png", "PNG"), ("b.jpg", "JPEG")])
def test_memory_budget_refuses_before_decoding(tmp_path, name, fmt):
    Image.fromarray(noise(100, 100)).save(tmp_path / name, format=fmt)
    need = (tmp_path / name).stat().st_size + DECODED_BYTES_PER_PIXEL[fmt] * 100 * 100
    with pytest.raises(BadInput, match=r"max_scene_bytes \(0 MiB\)") as err:
        open_scene(tmp_path, SceneRef(name), max_scene_bytes=need - 1)
    assert err.value.detail.startswith(f"{need - DECODED_BYTES_PER_PIXEL[fmt] * 10000} file bytes + ")
    with open_scene(tmp_path, SceneRef(name), max_scene_bytes=need) as r:  # exactly the budget: read
        assert r.read_window(0, 0, 100, 100)[0].shape == (100, 100, 3)


def test_windowed_formats_are_not_held_to_the_budget(tmp_path):
    import rasterio
    with rasterio.open(tmp_path / "t.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(noise(64, 64).transpose(2, 0, 1))
    with open_scene(tmp_path, SceneRef("t.tif"), max_scene_bytes=1) as r:
        assert r.read_window(0, 0, 64, 64)[0].shape == (64, 64, 3)


#: 16000² RGB PNG, decoded row by row (rs4m.png_stream): the band of rows (2 x (512 + 256) rows x 48000 bytes, 70 MiB)
#: + the interpreter and libraries (~300 MiB); decoded whole it took 1657 MiB (the file + Pillow's 977 MiB)
LARGE_EDGE, LARGE_PEAK_MIB = 16000, 600


@pytest.mark.slow
def test_a_16000_square_png_builds_within_its_memory_bound(tmp_path):
    # the image is made in a child: a parent's peak RSS is carried into its children's ru_maxrss (fork + exec)
    src = tmp_path / "src"
    code = ("import sys; from pathlib import Path; from benchmarks.large_scene import write_scenes; "
            "write_scenes(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(LARGE_EDGE), str(src / "big.png"), str(tmp_path / "big.jpg")],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", "build", str(tmp_path / "out"),
           "--source", f"folder={src}", "--workers", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    done = re.search(r"done: scenes (\d+), tiles (\d+),.* errors (\d+)", out)
    assert done and done.groups() == ("1", str(32 * 32), "0"), out  # 512-px grid, the last row/column shifted in
    print(f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    assert usage.ru_maxrss / 1024 < LARGE_PEAK_MIB, f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB"


def test_max_scene_bytes_flag_makes_an_over_budget_scene_a_tile_error_row(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(noise(100, 100)).save(src / "a.png")
    Image.fromarray(noise(60, 60)).save(src / "b.jpg")
    need_b = (src / "b.jpg").stat().st_size + DECODED_BYTES_PER_PIXEL["JPEG"] * 60 * 60
    result = CliRunner().invoke(get_cli(), ["build", str(tmp_path / "out"), "--source", f"folder={src}", "--workers",
                                            "1", "-q", "--max-scene-bytes", str(need_b)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [(e["path"], e["stage"]) for e in errors] == [("a.png", "tile")]  # the scan decodes nothing: no check
    assert "max_scene_bytes" in errors[0]["reason"]
    tiles = pq.read_table(tmp_path / "out" / "manifest.parquet", columns=["scene_path"]).to_pylist()
    assert {t["scene_path"] for t in tiles} == {"b.jpg"}
