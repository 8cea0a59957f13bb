"""A build killed with SIGKILL at several points, then resumed, equals an uninterrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from tests.adversarial import write_tif


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


def aerial_scenes(src: Path) -> None:
    """Five aerial-looking GeoTIFF scenes (one 16-bit, one single-byte-range) and a PNG, made here."""
    from rs4m.demo import synthetic_scene

    rng = np.random.default_rng(7)
    src.mkdir()
    for i, (w, h, kind) in enumerate([(520, 400, "mixed"), (384, 384, "buildings"), (450, 610, "agricultural"),
                                      (300, 520, "river"), (640, 256, "forest")]):
        rgb = np.asarray(synthetic_scene(rng, w, h, kind)).transpose(2, 0, 1)
        data = (rgb.astype(np.uint16) * 40) if i == 0 else (rgb // 10 if i == 3 else rgb)
        write_tif(src / f"scene{i}.tif", data)
    synthetic_scene(rng, 700, 560).save(src / "P0001.png")


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    src = tmp_path / "src"
    aerial_scenes(src)
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
    kill_when(build_cmd(out, rec), lambda: layout.shards_dir.exists() and any(layout.shards_dir.glob(".*.tmp")))
    kill_when(build_cmd(out, rec), lambda: parts() >= 4)
    subprocess.run(build_cmd(out, rec), check=True, timeout=300)

    assert fingerprint(out) == expected
    for name in sorted(p.name for p in (ref / "shards").glob("*.tar")):
        assert (out / "shards" / name).read_bytes() == (ref / "shards" / name).read_bytes()
    assert not list(layout.shards_dir.glob(".*"))
    verify = subprocess.run([sys.executable, "-c", "from rs4m.cli import main; main()", "verify", str(out)])
    assert verify.returncode == 0


# --- kill -9 at named points of every stage (RS4M_KILL_AT), then resume: byte-identical outputs ------------------

import json  # noqa: E402

import pytest  # noqa: E402

from tests.tiny import CLI, make_images  # noqa: E402

#: files whose bytes legitimately differ between runs: timings, pids
VOLATILE = {"build.json", "dedup.json", ".rs4m.lock"}


def tiny_sources(tmp_path: Path) -> Path:
    """Seven noise PNGs (one an exact copy, so dedup and compaction have work) and two bad files."""
    src = tmp_path / "src"
    make_images(src, n=6, size=64)
    (src / "empty.png").write_bytes(b"")
    (src / "truncated.png").write_bytes((src / "img01.png").read_bytes()[:200])
    return src


def tiny_recipe(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f'[build]\ntile_size = 32\nscenes_per_unit = 2\nformat = "png"\n'
                    f'[[sources]]\nname = "folder"\npath = "{src}"\n')
    return path


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, with the volatile fields of build.json and dedup.json left out."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.name not in VOLATILE}
    dedup = json.loads((out / "dedup.json").read_text())
    dedup.pop("seconds")
    files["dedup.json"] = json.dumps(dedup, sort_keys=True).encode()
    record = json.loads((out / "build.json").read_text())
    files["build.json:catalog"] = json.dumps(record["stages"]["catalog"], sort_keys=True).encode()
    return files


def run_at(args: list, kill_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RS4M_KILL_AT"}
    if kill_at:
        env["RS4M_KILL_AT"] = kill_at
    return subprocess.run([*CLI, *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=300).returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    """(sources, recipe, outputs) of an uninterrupted build + compact."""
    base = tmp_path_factory.mktemp("ref")
    src = tiny_sources(base)
    rec = tiny_recipe(base, src)
    out = base / "out"
    assert run_at(["build", out, "--recipe", rec, "--workers", 1, "-q", "--keep-dropped"], None) == 0
    assert run_at(["compact", out], None) == 0
    ref = outputs(out)
    assert sum(1 for name in ref if name.startswith("shards/rs4m-")) == 4
    return src, rec, ref


def killed_then_resumed(tmp_path: Path, src: Path, rec: Path, build_kills: list[str], compact_kills: list[str],
                        ) -> dict[str, bytes]:
    """Run build once per kill point (each killed there, resuming the last), then to the end; the same for
    compact. Returns the final outputs."""
    out = tmp_path / "out"
    build = ["build", out, "--recipe", rec, "--workers", 1, "-q", "--keep-dropped"]
    for point in build_kills:
        assert run_at(build, point) == -9, f"kill point {point} was not reached"
    assert run_at(build, None) == 0
    for point in compact_kills:
        assert run_at(["compact", out], point) == -9, f"kill point {point} was not reached"
    assert run_at(["compact", out], None) == 0
    assert run_at(["verify", out], None) == 0
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".compact")) or p.name == "compact.json"]
    return outputs(out)


def test_kill_in_tile_dedup_catalog_compact_resumes_identical(reference, tmp_path):
    src, rec, ref = reference
    got = killed_then_resumed(tmp_path, src, rec, ["engine:unit#2", "catalog:manifest"], ["compact:journal"])
    assert got == ref


def test_build_killed_in_its_compaction_resumes_identical(reference, tmp_path):
    src, rec, ref = reference
    out = tmp_path / "out"
    build = ["build", out, "--recipe", rec, "--workers", 1, "-q"]  # compacts at the end
    for point in ("compact:staged", "compact:journal", "compact:rename"):
        assert run_at(build, point) == -9, f"kill point {point} was not reached"
    assert run_at(build, None) == 0 and run_at(["verify", out], None) == 0
    assert outputs(out) == ref


@pytest.mark.slow
def test_kill_at_every_point_of_every_stage_resumes_identical(reference, tmp_path):
    src, rec, ref = reference
    build_kills = ["engine:unit#1",      # scan: after the probe batch, before scenes.parquet
                   "build:scanned",      # scan: its files written, build.json not yet
                   "engine:unit#1",      # tile: after the first unit (scan is skipped now)
                   "engine:unit#2",      # tile: after the next one
                   "dedup:written",      # dedup: dedup.parquet written, dedup.json not
                   "catalog:manifest",   # catalog: manifest written, shards.parquet not
                   "build:catalogued"]   # catalog: all written, build.json not
    compact_kills = ["compact:staged",   # every staged file written, no journal
                     "compact:journal",  # the commit point passed, no rename done
                     "compact:rename"]   # one rename done
    assert killed_then_resumed(tmp_path, src, rec, build_kills, compact_kills) == ref
