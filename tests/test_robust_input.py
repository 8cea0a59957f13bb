"""Bad input never loses data: scenes are all or nothing, any per-scene failure is one error row, nothing
blocks, sizes are bounded, archives are unambiguous, scan outputs are one commit and damaged units are redone.

Every fixture is made here, tiny; builds that could block run in a subprocess with a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.engines import get_engine
from rs4m.errors import BadInput
from rs4m.layout import OutputLayout
from rs4m.raster import open_scene
from rs4m.shards import ShardWriter, file_sha256, list_members
from rs4m.stages import tile as tile_stage
from rs4m.stages.build import filters_of, read_record, tile_configs
from rs4m.whole_decode import read_bytes
from rs4m_tools.adapters import SceneRef

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args], catch_exceptions=False)


def run_sub(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a subprocess: a hang fails the test instead of freezing it."""
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@contextmanager
def deadline(seconds: int):
    """Fail (TimeoutError) instead of blocking for ever."""
    def fire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def noise(h: int, w: int, seed: int = 0, dtype=np.uint8, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (bands, h, w)).astype(dtype)


def write_tif(path: Path, data: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, **kw)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def write_png(path: Path, h: int = 64, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(h, w, seed).transpose(1, 2, 0)).save(path)
    return path


def tiles_of(out: Path) -> list[dict]:
    return mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA).to_pylist()


def errors_of(out: Path) -> list[dict]:
    return mf.read_table(OutputLayout(out).errors, mf.ERRORS_SCHEMA).to_pylist()


def errors_by_name(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for e in errors_of(out):
        found.setdefault(Path(e["path"]).name, []).append(e)
    return found


def recipe(tmp_path: Path, src: Path, **build) -> Path:
    path = tmp_path / "recipe.toml"
    lines = "".join(f"{k} = {v}\n" for k, v in {"tile_size": 64, **build}.items())
    path.write_text(f'[build]\n{lines}[[sources]]\nname = "folder"\npath = "{src}"\n')
    return path


def truncated_tiled_tif(path: Path, size: int = 1024, keep: float = 0.7) -> Path:
    """A tiled GeoTIFF whose first blocks read and whose later ones are cut off."""
    write_tif(path, noise(size, size, 3), tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def stored_rows_agree_with_shards(out: Path) -> None:
    """Every row with bytes points at a member of that name and size; every member has its row."""
    layout = OutputLayout(out)
    rows = [t for t in tiles_of(out) if t["shard"]]
    members = {}
    for shard in layout.shards_dir.glob("rs4m-*.tar"):
        for name, offset, size in list_members(shard):
            members[(shard.name, offset)] = (name, size)
    assert {(r["shard"], r["offset"]): (f"{r['tile_id']}.{r['format']}", r["length"]) for r in rows} == \
        {k: v for k, v in members.items() if not v[0].endswith(".json")}


# ------------------------------------------------------------------ 1. a scene is all or nothing


def test_shard_rollback_drops_the_members_since_the_mark(tmp_path):
    with ShardWriter(tmp_path / "a.tar") as a:
        a.add("k1", "jpg", b"one" * 300)
        a.add("k3", "jpg", b"three")
    with ShardWriter(tmp_path / "b.tar") as b:
        b.add("k1", "jpg", b"one" * 300)
        mark = b.mark()
        b.add("k2", "jpg", b"two" * 1000, {"x": 1})
        b.rollback(mark)
        b.add("k3", "jpg", b"three")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (b.info.samples, b.info.bytes, b.info.sha256) == (2, a.info.bytes, a.info.sha256)


# ------------------------------------------------------------------------------------- 3. no hangs


def special_files(folder: Path) -> None:
    """A FIFO, a socket and a symlink to /dev/zero, each named like an image."""
    os.mkfifo(folder / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    sock.close()
    os.symlink("/dev/zero", folder / "zero.tif")
    os.symlink(folder / "loop_b.tif", folder / "loop_a.tif")
    os.symlink(folder / "loop_a.tif", folder / "loop_b.tif")


def test_readers_refuse_special_files_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    write_tif(tmp_path / "a.tif", noise(32, 32))
    os.mkfifo(tmp_path / "a.tif.msk")  # a sidecar GDAL would open
    with deadline(20):
        for rel in ("fifo.png", "a.tif"):
            with pytest.raises(BadInput, match="not a regular file"):
                open_scene(tmp_path, SceneRef(rel))
        with pytest.raises(BadInput, match="FIFO"):
            read_bytes(tmp_path, "fifo.png")


# ------------------------------------------------------------------------------ 5. archive members


def png_with_padding(path: Path, padding: int) -> bytes:
    write_png(path)
    return path.read_bytes() + b"\0" * padding


def test_an_archive_member_far_larger_than_its_image_is_refused_unread(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", png_with_padding(tmp_path / "a.png", 40 << 20))
    (tmp_path / "a.png").unlink()
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(BadInput, match="more than an image of its declared size can need"):
        with open_scene(tmp_path, SceneRef("bomb.zip/a.png")) as reader:
            reader.read_window(0, 0, 64, 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20


def test_a_file_with_gigabytes_of_trailing_data_is_refused(tmp_path):
    (tmp_path / "pad.png").write_bytes(png_with_padding(tmp_path / "x.png", 20 << 20))
    with pytest.raises(BadInput, match="more than an image"):
        read_bytes(tmp_path, "pad.png", limit=1 << 20)


def jpeg_bytes(h: int, w: int, seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(noise(h, w, seed).transpose(1, 2, 0)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# -------------------------------------------------------------------------- 7. rebuild on damage


def test_an_unreadable_scenes_table_is_one_line_naming_it(tmp_path):
    src = tmp_path / "src"
    write_tif(src / "a.tif", noise(64, 64))
    out = tmp_path / "out"
    assert run_cli("build", out, "--source", f"folder={src}", "--workers", 1, "-q").exit_code == 0
    OutputLayout(out).scenes.write_bytes(b"PAR1 garbled")
    result = run_sub("build", out, "--source", f"folder={src}", "--workers", 1, "-q")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and last.startswith("rs4m: error:"), result.stderr
    assert "scenes.parquet is not a readable Parquet file" in last and "--force" in last


# ----------------------------------------------------------------------- 9. float64 beyond float32


def test_float64_beyond_the_float32_range_is_stretched(tmp_path):
    data = (noise(64, 64, 5).astype(np.float64) + 1.0) * 1e300
    write_tif(tmp_path / "f64.tif", data)
    with open_scene(tmp_path, SceneRef("f64.tif")) as reader:
        rgb, valid = reader.read_window(0, 0, 64, 64)
    assert valid.all()
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 100
    expected = np.floor(np.clip((data - np.percentile(data, 2, axis=(1, 2), keepdims=True)) * 255
                                / np.ptp(np.percentile(data, [2, 98], axis=(1, 2)), axis=0)[:, None, None],
                                0, 255)).astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(rgb.astype(int) - expected).max() <= 1


# ------------------------------------------------------------------ 16. only the first page is used
