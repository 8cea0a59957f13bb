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
from dataclasses import asdict
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
from rs4m.plan import plan_from_record
from rs4m.raster import open_scene
from rs4m.record import BuildRecord
from rs4m.shards import ShardWriter, file_sha256, list_members
from rs4m.sources import SceneRef
from rs4m.stages import tile as tile_stage
from rs4m.whole_decode import read_bytes

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args], catch_exceptions=False)


def run_sub(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a subprocess: a hang fails the test instead of freezing it."""
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


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


def test_a_scene_failing_partway_leaves_no_rows_and_no_members(tmp_path):
    src = tmp_path / "src"
    write_tif(src / "good.tif", noise(128, 128, 1))
    truncated_tiled_tif(src / "trunc.tif")
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    tiles = tiles_of(out)
    assert {t["scene_path"] for t in tiles} == {"good.tif"}
    assert all(t["shard"] and t["offset"] is not None and t["length"] for t in tiles)
    errors = errors_by_name(out)["trunc.tif"]
    assert len(errors) == 1 and errors[0]["stage"] == "tile" and "truncated" in errors[0]["reason"]
    stored_rows_agree_with_shards(out)
    assert run_cli("verify", out).exit_code == 0


# ------------------------------------------------- 2. any per-scene failure is that scene's error row


def test_files_changed_between_scan_and_tile_are_error_rows_and_neighbours_survive(tmp_path):
    src = tmp_path / "src"
    for name in ("a_good", "shrunk", "grown", "replaced", "folder", "fifo", "z_good"):
        write_tif(src / f"{name}.tif", noise(128, 128, len(name)))
    out = tmp_path / "out"
    assert run_sub("scan", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1, "-q").returncode == 0
    (src / "shrunk.tif").write_bytes((src / "shrunk.tif").read_bytes()[:2000])
    with open(src / "grown.tif", "ab") as fh:
        fh.write(b"\0" * 4096)
    (src / "replaced.tif").unlink()
    write_png(src / "replaced.tif", 96, 80)  # another format and another size
    (src / "folder.tif").unlink()
    (src / "folder.tif").mkdir()
    (src / "fifo.tif").unlink()
    os.mkfifo(src / "fifo.tif")
    result = run_sub("tile", out, "--workers", 1)
    assert result.returncode == 0, result.stderr
    errors = errors_by_name(out)
    for name in ("shrunk", "grown", "replaced", "folder", "fifo"):
        rows = errors[f"{name}.tif"]
        assert len(rows) == 1 and rows[0]["stage"] == "tile" and rows[0]["reason"], (name, rows)
    assert "FIFO" in errors["fifo.tif"][0]["reason"] and "folder" in errors["folder.tif"][0]["reason"]
    assert "changed since the scan" in errors["grown.tif"][0]["reason"]
    assert not [e for e in errors_of(out) if e["stage"] == "unit"]
    assert {t["scene_path"] for t in tiles_of(out) if t["shard"]} == {"a_good.tif", "z_good.tif"}


@pytest.mark.parametrize("exc", [ValueError("window check"), MemoryError(), OSError("disk")])
def test_any_exception_of_a_scene_is_its_error_row(tmp_path, monkeypatch, exc):
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        write_tif(src / f"{name}.tif", noise(64, 64, ord(name)))
    out = tmp_path / "out"
    assert run_cli("scan", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1, "-q").exit_code == 0
    real = tile_stage.open_scene

    def flaky(root, ref, **kw):
        if ref.scene_path == "b.tif":
            raise exc
        return real(root, ref, **kw)

    monkeypatch.setattr(tile_stage, "open_scene", flaky)
    counts = tile_alone(out, get_engine("local", workers=1))
    assert counts["units_failed"] == []
    errors = errors_of(out)
    assert [(e["path"], e["stage"]) for e in errors] == [("b.tif", "tile")] and errors[0]["reason"]
    assert {t["scene_path"] for t in tiles_of(out)} == {"a.tif", "c.tif"}


def tile_alone(out, engine) -> dict:
    """The tile stage of a scanned build run by itself, with the settings its build.json records."""
    plan = plan_from_record(BuildRecord.load(out))
    return tile_stage.run_tile(out, {s: asdict(t) for s, t in plan.tile_configs().items()}, plan.filters, engine)


def test_a_unit_that_fails_is_an_error_row_naming_its_part(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_tif(src / "a.tif", noise(64, 64))
    out = tmp_path / "out"
    assert run_cli("scan", out, "--source", f"folder={src}", "--workers", 1, "-q").exit_code == 0

    class Broken(ShardWriter):
        def close(self):
            raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(tile_stage, "ShardWriter", Broken)
    def run():
        return tile_alone(out, get_engine("local", workers=1))
    assert len(run()["units_failed"]) == 1
    rows = [e for e in errors_of(out) if e["stage"] == "unit"]
    assert len(rows) == 1 and rows[0]["path"] == "tiles/part-00000.parquet"
    assert "work unit 0" in rows[0]["reason"] and "RuntimeError" in rows[0]["reason"]
    monkeypatch.setattr(tile_stage, "ShardWriter", ShardWriter)
    assert run()["units_failed"] == []
    assert not [e for e in errors_of(out) if e["stage"] == "unit"] and len(tiles_of(out)) == 1


class SegfaultingEngine:
    """In-process engine whose worker "dies" on any unit that reads crash.tif (as a crashing reader would)."""

    name = "segfaulting"

    def map_units(self, fn, units, retries=2):
        from rs4m.engines import UnitFailure

        for unit in units:
            reads = [s["scene_path"] for s in unit.scenes if s["scene_path"] not in unit.crashed]
            yield unit, UnitFailure("worker process died") if "crash.tif" in reads else fn(unit)

    def close(self):
        pass


def test_a_scene_that_kills_its_worker_takes_only_itself_down(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "crash", "z"):
        write_tif(src / f"{name}.tif", noise(64, 64, len(name)))
    out = tmp_path / "out"
    assert run_cli("scan", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1, "-q").exit_code == 0
    counts = tile_alone(out, SegfaultingEngine())
    assert counts["units_failed"] == []
    errors = errors_of(out)
    assert [(e["path"], e["stage"]) for e in errors] == [("crash.tif", "tile")] and "crashed" in errors[0]["reason"]
    assert {t["scene_path"] for t in tiles_of(out) if t["shard"]} == {"a.tif", "z.tif"}
    stored_rows_agree_with_shards(out)


def test_any_exception_while_probing_is_a_scan_error_row(tmp_path, monkeypatch):
    from rs4m.stages import scan as scan_stage

    src = tmp_path / "src"
    for name in ("a", "b"):
        write_tif(src / f"{name}.tif", noise(64, 64))
    real = scan_stage.open_scene

    def flaky(root, ref, **kw):
        if ref.scene_path == "a.tif":
            raise ZeroDivisionError("bug in a reader")
        return real(root, ref, **kw)

    monkeypatch.setattr(scan_stage, "open_scene", flaky)
    out = tmp_path / "out"
    assert run_cli("scan", out, "--source", f"folder={src}", "--workers", 1, "-q").exit_code == 0
    errors = errors_of(out)
    assert [(e["path"], e["stage"]) for e in errors] == [("a.tif", "scan")]
    assert "ZeroDivisionError" in errors[0]["reason"]
    assert mf.read_table(OutputLayout(out).scenes).column("scene_path").to_pylist() == ["b.tif"]


class CrashingEngine:
    """In-process engine whose "worker dies" on any unit holding crash.png (as a segfaulting reader would)."""

    name = "crashing"

    def map_units(self, fn, units, retries=2):
        from rs4m.engines import UnitFailure

        for unit in units:
            if any(r.scene_path == "crash.png" for r in unit.refs):
                yield unit, UnitFailure("worker process died")
            else:
                yield unit, fn(unit)

    def close(self):
        pass


def test_a_file_that_kills_its_probe_worker_takes_only_itself_down(tmp_path):
    from rs4m.config import TileConfig
    from rs4m.stages import scan as scan_stage
    from rs4m.stages.sources import sources_from_flags

    src = tmp_path / "src"
    for name in ("a.png", "crash.png", "z.png"):
        write_png(src / name)
    out = tmp_path / "out"
    out.mkdir()
    counts = scan_stage.run_scan(out, sources_from_flags([f"folder={src}"], TileConfig()), CrashingEngine())
    assert counts["scenes"] == 2
    assert mf.read_table(OutputLayout(out).scenes).column("scene_path").to_pylist() == ["a.png", "z.png"]
    errors = errors_of(out)
    assert [(e["path"], e["stage"]) for e in errors] == [("crash.png", "scan")] and "crashed" in errors[0]["reason"]


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


def test_fifo_socket_and_device_at_scan_time_are_error_rows(tmp_path):
    src = tmp_path / "src"
    write_png(src / "good.png")
    special_files(src)
    out = tmp_path / "out"
    result = run_sub("build", out, "--source", f"folder={src}", "--workers", 1, "-q", timeout=120)
    assert result.returncode == 0, result.stderr
    errors = errors_by_name(out)
    expect = {"fifo.png": "FIFO", "sock.png": "socket", "zero.tif": "character device", "loop_a.tif": "symlink loop",
              "loop_b.tif": "symlink loop"}
    for name, kind in expect.items():
        assert len(errors[name]) == 1 and kind in errors[name][0]["reason"], (name, errors[name])
    assert "broken" not in errors["zero.tif"][0]["reason"]
    assert {t["scene_path"] for t in tiles_of(out)} == {"good.png"}


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


# ------------------------------------------------------------------------------- 4. size bounds


def test_a_tiny_file_declaring_a_huge_raster_gives_no_blank_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with rasterio.open(src / "huge.tif", "w", driver="GTiff", width=60000, height=60000, count=3, dtype="uint8",
                       tiled=True, blockxsize=512, blockysize=512, sparse_ok=True):
        pass
    write_tif(src / "good.tif", noise(64, 64))
    out = tmp_path / "out"
    start = time.monotonic()
    result = run_sub("build", out, "--source", f"folder={src}", "--workers", 1, "-q", timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60
    assert {t["scene_path"] for t in tiles_of(out)} == {"good.tif"}
    rows = errors_by_name(out)["huge.tif"]
    assert len(rows) == 1 and "stores none" in rows[0]["reason"]


def test_sparse_blocks_are_skipped_and_stored_blocks_tiled(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with rasterio.open(src / "part.tif", "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                       tiled=True, blockxsize=128, blockysize=128, sparse_ok=True) as ds:
        ds.write(noise(128, 128), window=Window(128, 256, 128, 128))
    out = tmp_path / "out"
    assert run_cli("build", out, "--source", f"folder={src}", "--tile-size", 128, "--workers", 1, "-q").exit_code == 0
    assert [(t["x"], t["y"], bool(t["shard"])) for t in tiles_of(out)] == [(128, 256, True)]


def test_rasters_over_max_scene_pixels_are_refused_before_tiling(tmp_path):
    src = tmp_path / "src"
    write_tif(src / "big.tif", noise(200, 100), tiled=True, blockxsize=64, blockysize=64)
    write_tif(src / "small.tif", noise(100, 100))
    out = tmp_path / "out"
    rec = recipe(tmp_path, src, max_scene_pixels=10_000)
    assert run_cli("build", out, "--recipe", rec, "--workers", 1, "-q").exit_code == 0
    rows = errors_by_name(out)["big.tif"]
    assert len(rows) == 1 and rows[0]["stage"] == "scan" and "max_scene_pixels" in rows[0]["reason"]
    assert {t["scene_path"] for t in tiles_of(out)} == {"small.tif"}


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
    with pytest.raises(BadInput, match="more than an image of its declared size can need"), \
            open_scene(tmp_path, SceneRef("bomb.zip/a.png")) as reader:
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


def test_duplicate_member_names_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "dup.zip", "w") as zf:
        zf.writestr("images/a.jpg", jpeg_bytes(64, 64, 1))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("images/a.jpg", jpeg_bytes(32, 32, 2))
    (src / "images").mkdir()
    (src / "images" / "good.jpg").write_bytes(jpeg_bytes(64, 64, 3))
    out = tmp_path / "out"
    assert run_cli("build", out, "--source", f"patternnet={src}", "--workers", 1, "-q").exit_code == 0
    errors = [e for e in errors_of(out) if e["path"].startswith("dup.zip")]
    assert len(errors) == 1 and "two entries named 'images/a.jpg'" in errors[0]["reason"], errors
    assert {t["scene_path"] for t in tiles_of(out)} == {"images/good.jpg"}


# ------------------------------------------------------------------- 6. the scan is one commit


def test_a_kill_between_the_scan_outputs_loses_no_scan_error(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_png(src / "good.png")
    (src / "bad.png").write_text("not an image")
    out = tmp_path / "out"
    real, written = mf.write_table, []

    class Killed(BaseException):
        pass

    def dying(table, path, *a, **kw):
        if Path(path).name in ("scenes.parquet", "errors.parquet"):
            written.append(Path(path).name)
            if len(written) == 2:
                raise Killed
        return real(table, path, *a, **kw)

    monkeypatch.setattr(mf, "write_table", dying)
    with pytest.raises(Killed):
        run_cli("build", out, "--source", f"folder={src}", "--workers", 1, "-q")
    assert len(written) == 2  # killed at the second of the two scan writes
    monkeypatch.setattr(mf, "write_table", real)
    assert run_cli("build", out, "--source", f"folder={src}", "--workers", 1, "-q").exit_code == 0
    assert [(e["path"], e["stage"]) for e in errors_of(out)] == [("bad.png", "scan")]


# -------------------------------------------------------------------------- 7. rebuild on damage


def test_damaged_units_are_redone_and_give_the_same_build(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_tif(src / f"s{i}.tif", noise(128, 128, i))
    rec = recipe(tmp_path, src, scenes_per_unit=1)
    out = tmp_path / "out"
    assert run_cli("build", out, "--recipe", rec, "--workers", 1, "-q").exit_code == 0
    layout = OutputLayout(out)
    before = {p.name: file_sha256(p) for p in sorted(layout.shards_dir.glob("*.tar"))}
    parts = {p.name: p.read_bytes() for p in layout.tile_parts()}
    with open(layout.shard(0), "r+b") as fh:  # truncated
        fh.truncate(layout.shard(0).stat().st_size - 1024)
    with open(layout.shard(1), "r+b") as fh:  # same size, a tar header garbled
        fh.write(b"\xff" * 512)
    layout.tile_part(2).write_bytes(b"garbage, not parquet")
    result = run_cli("build", out, "--recipe", rec, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert {p.name: file_sha256(p) for p in sorted(layout.shards_dir.glob("*.tar"))} == before
    assert {p.name: p.read_bytes() for p in layout.tile_parts()} == parts
    assert run_cli("verify", out).exit_code == 0


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


def test_multi_page_tiff_and_animated_gif_say_only_the_first_page_is_used(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = [Image.fromarray(noise(64, 64, i).transpose(1, 2, 0)) for i in range(3)]
    frames[0].save(src / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].convert("P").save(src / "anim.gif", save_all=True, append_images=[f.convert("P") for f in frames[1:]])
    write_png(src / "one.png")
    out = tmp_path / "out"
    assert run_cli("build", out, "--source", f"folder={src}", "--workers", 1, "-q", "--keep-dropped").exit_code == 0
    errors = errors_by_name(out)
    assert set(errors) == {"pages.tif", "anim.gif"}
    for name in errors:
        assert len(errors[name]) == 1 and "3 pages: only the first page is used" in errors[name][0]["reason"]
    assert {t["scene_path"] for t in tiles_of(out) if t["shard"]} == {"pages.tif", "anim.gif", "one.png"}
