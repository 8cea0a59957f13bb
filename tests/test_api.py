"""The Python API (rs4m.open): rows and bytes equal what the manifest and shards hold, filters use the safe
language, id prefixes resolve uniquely, and `import rs4m` stays light."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import rs4m
from rs4m import codec
from rs4m.cli import get_cli
from rs4m.errors import ConfigError, OutputError


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real build of four generated scenes (smooth gradients plus noise, so tiles are not flat)."""
    root = tmp_path_factory.mktemp("api")
    src = root / "images"
    src.mkdir()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(4):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + i * 40) % 256, (xx + yy) % 256], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(src / f"scene{i}.png")
    out = root / "out"
    result = CliRunner().invoke(get_cli(), ["build", str(out), "--source", f"folder={src}", "--tile-size", "128",
                                            "--workers", "1", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_manifest_and_tiles_equal_the_parquet_and_shards(built):
    build = rs4m.open(built)
    table = pq.read_table(built / "manifest.parquet")
    assert len(build) == table.num_rows == 16
    assert build.manifest().column("tile_id").to_pylist() == table.column("tile_id").to_pylist()
    tiles = list(build.tiles(decode=True, batch_rows=5))
    assert [t.row["tile_id"] for t in tiles] == table.column("tile_id").to_pylist()
    for tile in tiles:
        assert hashlib.sha256(tile.data).hexdigest() == tile.row["sha256"]
        with open(built / "shards" / tile.row["shard"], "rb") as f:
            f.seek(tile.row["offset"])
            assert f.read(tile.row["length"]) == tile.data
        assert tile.rgb.shape == (tile.row["height"], tile.row["width"], 3)
        assert np.array_equal(tile.rgb, codec.decode(tile.data, tile.row["format"]))


def test_where_and_columns(built):
    build = rs4m.open(built)
    frame = build.to_pandas()
    cut = float(frame["richness"].median())
    got = [t.row for t in build.tiles(where=f"richness > {cut} and x >= 64", columns=["tile_id", "x"])]
    want = frame[(frame.richness > cut) & (frame.x >= 64)]
    assert [r["tile_id"] for r in got] == want.tile_id.tolist() and 0 < len(got) < len(frame)
    assert all(set(r) == {"tile_id", "x"} for r in got)
    assert build.manifest(["tile_id"], where=f"richness > {cut}").column_names == ["tile_id"]
    with pytest.raises(ConfigError):
        next(build.tiles(where="__import__('os').system('true')"))
    with pytest.raises(ConfigError):
        build.manifest(columns=["nope"])


def test_read_by_unique_prefix(built):
    build = rs4m.open(built)
    ids = build.manifest(["tile_id"]).column("tile_id").to_pylist()
    target = ids[5]
    prefix = next(target[:n] for n in range(1, len(target)) if sum(i.startswith(target[:n]) for i in ids) == 1)
    row = build.row(target)
    assert build.read(prefix) == build.read(target)
    assert hashlib.sha256(build.read(prefix)).hexdigest() == row["sha256"]
    assert build.read(target, decode=True).shape == (row["height"], row["width"], 3)
    with pytest.raises(ConfigError, match="16 kept tiles"):
        build.read("")
    with pytest.raises(ConfigError, match="no kept tile"):
        build.read("zzzz")


def test_verify_and_stats(built):
    build = rs4m.open(built)
    assert build.verify().ok
    stats = build.stats()
    assert stats["tiles_kept"] == len(build) and stats["scenes"] == 4 and stats["tiles_total"] == 16


def test_open_a_folder_without_manifest(tmp_path):
    with pytest.raises(OutputError, match="no manifest.parquet"):
        rs4m.open(tmp_path)


def test_import_rs4m_is_light():
    code = ("import sys, rs4m; heavy = [m for m in ('torch', 'pyarrow', 'pandas', 'numpy', 'rasterio', 'rs4m_tools',"
            " 'pretrain', 'rs4m.api') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_python_dash_m_rs4m():
    result = subprocess.run([sys.executable, "-m", "rs4m", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout


def test_build_from_python_equals_the_cli_build(built, tmp_path):
    plan = rs4m.make_plan(sources=[f"folder={built.parent / 'images'}"], tile_size=128, workers=1)
    report = rs4m.build(tmp_path / "py", plan)
    assert report.ok and report.counts["catalog"]["tiles_kept"] == 16
    for name in ("manifest.parquet", "dedup.parquet"):
        assert (tmp_path / "py" / name).read_bytes() == (built / name).read_bytes()
    assert rs4m.open(tmp_path / "py").manifest().equals(rs4m.open(built).manifest())


def test_make_plan_checks_every_key_before_any_work(built, tmp_path):
    images = f"folder={built.parent / 'images'}"
    with pytest.raises(ConfigError, match="unknown key 'tile_sise'.*tile_size"):
        rs4m.make_plan(sources=[images], tile_sise=128)
    with pytest.raises(ConfigError, match="tile_size"):
        rs4m.make_plan(sources=[images], tile_size="big")
    with pytest.raises(ConfigError, match="not both"):
        rs4m.make_plan(tmp_path / "r.toml", sources=[images])
    with pytest.raises(ConfigError, match="unknown engine"):
        rs4m.make_plan(sources=[images], engine="spark")
    assert not (tmp_path / "out").exists()
