"""The same build on Ray: byte-identical to the local engine, retried units, resume after a dead driver.

Marked ``ray`` (a local Ray with 2 CPUs takes seconds to start): run with ``pytest -m ray``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'rs4m[ray]'")

from rs4m.engines import get_engine  # noqa: E402
from rs4m.layout import OutputLayout  # noqa: E402

from .test_engines import fail_once  # noqa: E402

CLI = [sys.executable, "-c", "from rs4m.cli import main; main()"]


def build(out: Path, src: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = CLI + ["build", str(out), "--source", f"folder={src}", "--tile-size", "128", "-q", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def same_output(a: Path, b: Path) -> None:
    assert (a / "manifest.parquet").read_bytes() == (b / "manifest.parquet").read_bytes()
    assert (a / "dedup.parquet").read_bytes() == (b / "dedup.parquet").read_bytes()
    names = sorted(p.name for p in (a / "shards").glob("*.tar"))
    assert names == sorted(p.name for p in (b / "shards").glob("*.tar")) and names
    for name in names:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes()


@pytest.fixture(scope="module")
def src(tmp_path_factory, shared_data) -> Path:
    folder = tmp_path_factory.mktemp("src")
    for name in ("rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif", "RGB.byte.tif"):
        os.symlink(shared_data / "real" / "landsat7-rasterio" / name, folder / name)
    # a recompressed copy of a textured part: near duplicates for the Hamming search on Ray
    from PIL import Image

    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P0706.png") as im:
        part = im.convert("RGB").crop((0, 0, 256, 256))
    part.save(folder / "part.png")
    part.save(folder / "part-again.jpg", quality=80)
    return folder


def test_ray_build_identical_to_local(tmp_path, src):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert build(local, src, "--workers", "2").returncode == 0
    result = build(on_ray, src, "--engine", "ray", "--workers", "2")
    assert result.returncode == 0, result.stderr
    same_output(local, on_ray)  # dedup.parquet included: its Hamming search ran as Ray tasks
    import pyarrow.parquet as pq

    assert "near" in pq.read_table(on_ray / "dedup.parquet").column("dup_reason").to_pylist()


def test_ray_retries_a_killed_worker(tmp_path):
    engine = get_engine("ray", workers=2)
    try:
        results = dict(engine.map_units(fail_once, [(x, str(tmp_path)) for x in range(4)], retries=2))
    finally:
        engine.close()
    assert {u[0]: r for u, r in results.items()} == {0: 0, 1: 1, 2: 2, 3: 3}


def test_resume_after_killing_the_driver(tmp_path, src):
    ref = tmp_path / "ref"
    assert build(ref, src, "--workers", "2").returncode == 0
    out = tmp_path / "out"
    cmd = CLI + ["build", str(out), "--source", f"folder={src}", "--tile-size", "128", "-q", "--engine", "ray",
                 "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not OutputLayout(out).tile_parts() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result = build(out, src, "--engine", "ray", "--workers", "2")
    assert result.returncode == 0, result.stderr
    same_output(ref, out)


def test_ray_partitioned_hamming_search_equals_local():
    from rs4m.hamming import hamming_pairs, hamming_pairs_on

    from .test_scale import _planted_hashes

    h = _planted_hashes(seed=1)
    engine = get_engine("ray", workers=2)
    try:
        got = hamming_pairs_on(engine, h, [5, 5], partitions=3)
    finally:
        engine.close()
    want = hamming_pairs(h, [5, 5])
    assert len(want[0]) > 400  # the planted pairs
    for w, g in zip(want, got, strict=True):
        assert w.dtype == g.dtype and np.array_equal(w, g)


def test_ray_sliced_overlap_candidate_search_equals_local():
    from rs4m.overlap.candidates import candidate_pairs_by_table, lsh_keys

    rng = np.random.default_rng(6)
    desc = rng.integers(0, 256, (300, 240, 16), dtype=np.uint8)  # 72,000 keypoints: each table cut into slices
    desc[:, 200:] = rng.integers(0, 4, (300, 40, 16), dtype=np.uint8)  # low bytes: many voting runs
    owner = np.repeat(np.arange(300, dtype=np.int32), 240)
    keys = lsh_keys(desc.reshape(-1, 16))
    engine = get_engine("ray", workers=2)
    try:
        got = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 300, min_votes=2,
                                       max_bucket=64, engine=engine)
    finally:
        engine.close()
    want = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 300, min_votes=2,
                                    max_bucket=64)
    assert len(want[0]) > 100
    for w, g in zip(want, got, strict=True):
        assert w.dtype == g.dtype and np.array_equal(w, g)


def test_ray_overlap_search_equals_one_process(tmp_path, monkeypatch):
    import shutil

    from rs4m import manifest as mf
    from rs4m.config import DedupConfig
    from rs4m.demo import synthetic_scene
    from rs4m.overlap import search
    from rs4m.stages.dedup import run_dedup

    from .test_overlap import B_GROUND, _build, _crop, _recipe, _save

    canvas = np.asarray(synthetic_scene(np.random.default_rng(4), 1024, 1024, "buildings"))
    src = tmp_path / "src"
    _save(src / "a.png", canvas[:512, :512])
    x, y, side = B_GROUND
    _save(src / "b.png", np.rot90(_crop(canvas, x, y, side, 256)))
    here = tmp_path / "here"
    _build(here, _recipe(tmp_path, src, True))
    spread = shutil.copytree(here, tmp_path / "spread")
    monkeypatch.setattr(search, "VERIFY_UNIT_PAIRS", 2)  # many small units (cut on the driver); the candidate
    # search runs on Ray too, a table a unit (this build has fewer keypoints than a table is sliced at)
    config = DedupConfig(overlap=True)
    engine = get_engine("ray", workers=2)
    try:
        run_dedup(spread, config, engine=engine)
    finally:
        engine.close()
    rows = (spread / "dedup.parquet").read_bytes()
    run_dedup(here, config)
    assert rows == (here / "dedup.parquet").read_bytes()
    reasons = mf.read_table(here / "dedup.parquet", mf.DEDUP_OVERLAP_SCHEMA).column("dup_reason").to_pylist()
    assert "overlap" in reasons
