"""Scale: work units sized by bytes, and the bounded-memory global steps equal the in-memory ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from rs4m import manifest as mf
from rs4m.config import DedupConfig, FilterConfig, TileConfig
from rs4m.layout import OutputLayout
from rs4m.plan import EngineSettings, plan_from_flags
from rs4m.shards import ShardReader
from rs4m.stages.build import run_build
from rs4m.units import assign_units, estimated_bytes


def _scenes(folder: Path, n: int = 9, seed: int = 0) -> Path:
    """Small textured PNG scenes of a few sizes (some one tile, some several)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(n):
        h, w = [(60, 70), (150, 130), (64, 200)][k % 3]
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w] + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"s{k:02d}.png")
    return folder


def _build(out: Path, src: Path, **tile: int) -> OutputLayout:
    plan = plan_from_flags([f"folder={src}"], {"tile_size": 64, "format": "png", **tile}, EngineSettings(workers=1))
    plan = replace(plan, filters=FilterConfig(max_nodata_frac=1.0, drop_blank=False))
    run_build(out, plan, ("scan", "tile", "dedup", "catalog"), force=True)
    return OutputLayout(out)


def _stored(layout: OutputLayout) -> dict[str, bytes]:
    """tile_id → the bytes stored for it, read from the shards by offset."""
    table = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns=["tile_id", "shard", "offset", "length"])
    with ShardReader(layout.shards_dir) as reader:
        return {r["tile_id"]: reader.read(r["shard"], r["offset"], r["length"]) for r in table.to_pylist()}


@pytest.fixture(scope="module")
def unit_builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("units")
    src = _scenes(tmp / "src")
    by_count = _build(tmp / "count", src, scenes_per_unit=2)
    by_bytes = _build(tmp / "bytes", src, scenes_per_unit=2, shard_bytes=60_000)
    return by_count, by_bytes


def test_byte_sized_units_store_the_same_tiles(unit_builds):
    by_count, by_bytes = unit_builds
    n_count, n_bytes = len(by_count.tile_parts()), len(by_bytes.tile_parts())
    assert n_count == 5 and 1 < n_bytes < n_count  # the byte target really changed the cut
    a, b = _stored(by_count), _stored(by_bytes)
    assert len(a) > 9 and a == b  # same tile ids, same bytes per tile
    ma = mf.read_table(by_count.manifest, mf.MANIFEST_SCHEMA).drop_columns(["shard", "offset"])
    mb = mf.read_table(by_bytes.manifest, mf.MANIFEST_SCHEMA).drop_columns(["shard", "offset"])
    assert ma.equals(mb)


def test_byte_sized_units_reach_the_target_except_the_last(unit_builds):
    _, by_bytes = unit_builds
    sizes = [int(r["bytes"]) for r in mf.read_table(by_bytes.shards_table, mf.SHARDS_SCHEMA).to_pylist()]
    assert sum(sizes[:-1]) / len(sizes[:-1]) > 40_000  # estimated 60 kB; real PNG bytes of noisy tiles are near
    assert max(sizes) < 4 * 60_000


def test_assign_units_by_bytes():
    one = estimated_bytes({"width": 100, "height": 100}, TileConfig(tile_size=100))
    cfg = TileConfig(tile_size=100, shard_bytes=3 * one)
    rows = [{"source": s, "scene_path": f"{k:02d}", "width": 100, "height": 100} for s in "ab" for k in range(7)]
    units = [r["unit"] for r in assign_units(rows[::-1], {"a": cfg, "b": cfg})]
    assert units == [0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 5]  # 3 scenes a unit, never across sources
    big = [{"source": "a", "scene_path": "x", "width": 5000, "height": 5000}]
    assert [r["unit"] for r in assign_units(big, {"a": cfg})] == [0]  # an oversized scene is a unit of its own
    by_count = {"a": TileConfig(scenes_per_unit=4), "b": TileConfig(scenes_per_unit=4)}
    counted = assign_units([dict(r) for r in rows], by_count)
    assert [r["unit"] for r in counted] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]


def _geotiff(path: Path, img: np.ndarray, west: float, north: float) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=img.shape[1], height=img.shape[0], count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(west, north, 1.0, 1.0)) as ds:
        ds.write(np.moveaxis(img, -1, 0))


@pytest.fixture(scope="module")
def dup_build(tmp_path_factory):
    """A build with exact, near (recompressed), geo-overlap, leaked and filtered tiles, dedup and catalog not
    yet run; dihedral on."""
    tmp = tmp_path_factory.mktemp("dups")
    src = _scenes(tmp / "src", n=6, seed=1)
    first = np.asarray(Image.open(src / "s00.png"))
    Image.fromarray(first).save(src / "copy.png")  # exact copies of s00's tiles
    Image.fromarray(np.asarray(Image.open(src / "s01.png"))).save(src / "recompressed.jpg", quality=90)
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(src / "flat.png")  # filtered: blank
    rng = np.random.default_rng(3)
    geo = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    _geotiff(src / "geo_a.tif", geo, 500_000.0, 5_000_000.0)
    _geotiff(src / "geo_b.tif", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), 500_010.0, 4_999_990.0)
    bench = tmp / "bench"
    bench.mkdir()
    Image.fromarray(np.asarray(Image.open(src / "s02.png"))).save(bench / "test.png")
    out = tmp / "out"
    plan = plan_from_flags([f"folder={src}"], {"tile_size": 64, "format": "png", "scenes_per_unit": 3},
                           EngineSettings(workers=1))
    plan = replace(plan, filters=FilterConfig(max_nodata_frac=1.0), dedup=DedupConfig(dihedral=True))
    run_build(out, plan, ("scan", "tile"), force=True)
    from rs4m.stages.leakage import run_leakage

    run_leakage(out, {"bench": bench}, exclude=True)
    return out


def test_bounded_dedup_and_catalog_equal_in_memory(dup_build, tmp_path, monkeypatch):
    import json
    import shutil

    from rs4m.stages import bounded
    from rs4m.stages.catalog import run_catalog
    from rs4m.stages.dedup import DedupConfig, run_dedup

    config = DedupConfig(dihedral=True)
    outs = {}
    for name, flag in (("memory", False), ("bounded", True)):
        out = shutil.copytree(dup_build, tmp_path / name, symlinks=True)
        report = run_dedup(out, config, bounded=flag)
        if flag:  # several spill files: row groups are cut every 7 kept tiles for the spill
            monkeypatch.setattr(bounded, "ROW_GROUP_ROWS", 7)
        counts = run_catalog(out, bounded=flag)
        outs[name] = (out, report, counts)
    (a, ra, ca), (b, rb, cb) = outs["memory"], outs["bounded"]
    reasons = set(mf.read_table(a / "dedup.parquet", mf.DEDUP_SCHEMA)["dup_reason"].to_pylist())
    assert {"exact", "near", "geo", "leak"} <= reasons  # the build exercises every kind
    assert ca["filtered"] >= 1 and ca["tiles_kept"] > 7
    for name in ("dedup.parquet", "manifest.parquet", "shards.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ra.seconds = rb.seconds = 0.0
    assert ra == rb and ca == cb
    assert not list(b.glob(".catalog-*"))  # spill files removed
    assert json.loads((b / "dedup.json").read_text())["duplicates"] == rb.duplicates


def test_parquet_stream_equals_write_table(tmp_path):
    from rs4m.tablestream import ROW_GROUP_ROWS, ParquetStream

    n = ROW_GROUP_ROWS + 12_345
    rng = np.random.default_rng(0)
    table = pa.table({"tile_id": np.char.mod("%032x", np.arange(n)), "source": np.where(rng.random(n) < 0.5, "a", "b"),
                      "scene_path": np.char.mod("s%d", np.arange(n) // 7),
                      "dup_group": pa.array(rng.integers(0, 1 << 40, n), mask=rng.random(n) < 0.9),
                      "dup_of": pa.nulls(n, pa.string()), "dup_reason": pa.nulls(n, pa.string()),
                      "distance": pa.nulls(n, pa.float32())})
    mf.write_table(table, tmp_path / "whole.parquet", mf.DEDUP_SCHEMA, metadata={"k": 1})
    with ParquetStream(tmp_path / "stream.parquet", mf.DEDUP_SCHEMA, metadata={"k": 1}) as out:
        for lo, hi in ((0, 1000), (1000, 700_000), (700_000, n)):
            out.write(table.slice(lo, hi - lo))
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "stream.parquet").read_bytes()


def _planted_hashes(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, (n, 2), dtype=np.uint64)
    copy = rng.integers(0, n, n // 5)
    flips = np.uint64(1) << rng.integers(0, 64, (n // 5, 2)).astype(np.uint64)
    h[rng.integers(0, n, n // 5)] = h[copy] ^ flips
    return h


@pytest.mark.parametrize("engine_name,workers", [("inprocess", 1), ("local", 2)])
def test_partitioned_hamming_search_equals_local(engine_name, workers):
    from rs4m.engines import get_engine
    from rs4m.hamming import hamming_pairs, hamming_pairs_on

    h = _planted_hashes()
    want = hamming_pairs(h, [5, 5])
    engine = get_engine("local", workers=workers)
    try:
        got = hamming_pairs_on(engine, h, [5, 5], partitions=4)
    finally:
        engine.close()
    assert len(want[0]) > 400  # the planted pairs
    for w, g in zip(want, got, strict=True):
        assert w.dtype == g.dtype and np.array_equal(w, g)


def test_dedup_with_an_engine_equals_local(dup_build, tmp_path):
    import shutil

    from rs4m.engines.base import InProcessEngine
    from rs4m.stages.dedup import DedupConfig, run_dedup

    a = shutil.copytree(dup_build, tmp_path / "a", symlinks=True)
    b = shutil.copytree(dup_build, tmp_path / "b", symlinks=True)
    run_dedup(a, DedupConfig(dihedral=True))
    run_dedup(b, DedupConfig(dihedral=True), engine=InProcessEngine())
    assert (a / "dedup.parquet").read_bytes() == (b / "dedup.parquet").read_bytes()


class ClusterEngine:
    """Runs units in this process but says it is a cluster, and remembers which functions it ran."""

    name, cluster = "fake-cluster", True

    def __init__(self) -> None:
        from rs4m.engines.base import InProcessEngine

        self.inner, self.ran = InProcessEngine(), []

    def map_units(self, fn, units, retries=2):
        self.ran.append(fn.__name__)
        return self.inner.map_units(fn, units, retries)

    def close(self) -> None:
        pass


def test_the_build_hands_its_hamming_search_to_a_cluster_engine(dup_build, tmp_path):
    import shutil

    plan = plan_from_flags([f"folder={dup_build.parent / 'src'}"], {"tile_size": 64, "format": "png"},
                           EngineSettings(workers=1))
    plan = replace(plan, filters=FilterConfig(max_nodata_frac=1.0), dedup=DedupConfig(dihedral=True))
    local = shutil.copytree(dup_build, tmp_path / "local", symlinks=True)
    spread = shutil.copytree(dup_build, tmp_path / "cluster", symlinks=True)
    run_build(local, plan, ("dedup",))
    engine = ClusterEngine()
    run_build(spread, plan, ("dedup",), engine=engine)
    assert "search_partition" in engine.ran  # the candidate search went to the engine
    table = mf.read_table(local / "dedup.parquet", mf.DEDUP_SCHEMA)
    assert "near" in table.column("dup_reason").to_pylist()  # there were near pairs to find
    assert (local / "dedup.parquet").read_bytes() == (spread / "dedup.parquet").read_bytes()


def test_overlapping_boxes_equal_brute_force():
    from rs4m.stages.bounded import _overlapping_boxes

    rng = np.random.default_rng(0)
    for trial in range(6):
        n = 300
        lo = rng.uniform(-10, 10, (n, 2)) if trial % 2 else rng.integers(-5, 5, (n, 2)).astype(float)
        size = rng.uniform(0.01, 3, (n, 2)) if trial % 3 else np.ones((n, 2))  # touching edges included
        boxes = np.concatenate([lo, lo + size], 1)
        a, b = _overlapping_boxes(boxes)
        ix, iy = np.triu_indices(n, 1)
        hit = ((boxes[ix, 0] <= boxes[iy, 2]) & (boxes[iy, 0] <= boxes[ix, 2]) & (boxes[ix, 1] <= boxes[iy, 3])
               & (boxes[iy, 1] <= boxes[ix, 3]))
        want = list(zip(ix[hit].tolist(), iy[hit].tolist(), strict=True))
        assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == want


def test_a_spill_folder_left_by_a_killed_catalog_is_removed(tmp_path):
    from rs4m.stages.bounded import SPILL_DIR, fresh_spill_dir

    left = tmp_path / SPILL_DIR
    left.mkdir()
    (left / "group-00000.parquet").write_bytes(b"half written")
    outside = tmp_path.parent / f"{tmp_path.name}-keep"
    outside.mkdir()
    (outside / "x").write_bytes(b"x")
    spill = fresh_spill_dir(tmp_path)
    assert spill == left and list(spill.iterdir()) == []
    left.rmdir()
    left.symlink_to(outside)  # a symlink planted there is removed, never followed
    fresh_spill_dir(tmp_path)
    assert (outside / "x").read_bytes() == b"x" and not (tmp_path / SPILL_DIR).is_symlink()


@pytest.mark.slow
def test_scale_rehearsal_builds_its_generated_corpus_end_to_end():
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "scale_rehearsal.py"), "--tiles", "640", "--scene-px", "256",
           "--workers", "1", "--shard-mb", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    stages = {x["stage"]: x for x in lines if "stage" in x}
    facts = next(x["facts"] for x in lines if "facts" in x)
    assert list(stages) == ["scan", "tile", "dedup", "catalog", "compact"]
    assert stages["tile"]["counts"]["tiles"] == 640  # 40 scenes of 16 tiles
    dups = stages["dedup"]["counts"]["duplicates"]
    assert stages["dedup"]["counts"]["tiles_by_reason"].get("near", 0) >= 12  # scene 25 recompresses scene 14
    assert facts["manifest"] == 640 - dups
    assert facts["shards_mb"]["count"] > 1  # 1 MiB units cut the corpus into several shards
    assert "| tile |" in proc.stdout and "Projection" in proc.stdout
