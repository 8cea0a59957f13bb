"""A build killed with SIGKILL at several points, then resumed, equals an uninterrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from rs4m import manifest as mf
from rs4m.layout import OutputLayout


def recipe(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f"""
[build]
tile_size = 128
scenes_per_unit = 1
[[sources]]
name = "folder"
path = "{src}"
""")
    return path


def build_cmd(out: Path, rec: Path) -> list[str]:
    return [sys.executable, "-c", "from rs4m.cli import main; main()", "build", str(out), "--recipe", str(rec),
            "--workers", "1", "-q"]


def fingerprint(out: Path) -> set[tuple]:
    table = mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA)
    return {(r["tile_id"], r["sha256"], r["shard"], r["offset"]) for r in table.to_pylist()}


def kill_when(cmd: list[str], ready, timeout: float = 60.0) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_and_resume_equals_uninterrupted(tmp_path, shared_data):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif", "rgb-byte-tenth.tif"):
        os.symlink(shared_data / "real" / "landsat7-rasterio" / name, src / name)
    os.symlink(shared_data / "real" / "dota-devkit" / "images" / "P1888.png", src / "P1888.png")
    rec = recipe(tmp_path, src)

    ref = tmp_path / "ref"
    subprocess.run(build_cmd(ref, rec), check=True, timeout=300)
    expected = fingerprint(ref)
    assert len(expected) > 20

    out = tmp_path / "out"
    layout = OutputLayout(out)
    parts = lambda: len(layout.tile_parts())  # noqa: E731
    kill_when(build_cmd(out, rec), lambda: (out / "build.json").exists())        # during scan
    kill_when(build_cmd(out, rec), lambda: parts() >= 1)                          # after the first unit
    kill_when(build_cmd(out, rec), lambda: any(layout.shards_dir.glob(".*.tmp")) if layout.shards_dir.exists() else False)
    kill_when(build_cmd(out, rec), lambda: parts() >= 4)
    subprocess.run(build_cmd(out, rec), check=True, timeout=300)

    assert fingerprint(out) == expected
    for name in sorted(p.name for p in (ref / "shards").glob("*.tar")):
        assert (out / "shards" / name).read_bytes() == (ref / "shards" / name).read_bytes()
    assert not list(layout.shards_dir.glob(".*"))
    verify = subprocess.run([sys.executable, "-c", "from rs4m.cli import main; main()", "verify", str(out)])
    assert verify.returncode == 0
