"""Shared fixtures: paths to the shared real imagery, generated aerial-like sources and a hand-made miniature
build output."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from rs4m.shards import ShardWriter

if TYPE_CHECKING:
    from tests.scenes import Scene

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def read_real(rel: str) -> np.ndarray:
    """RGB uint8 pixels of a file of ../shared/data/real (first three bands of a GeoTIFF)."""
    path = SHARED_DATA / "real" / rel
    if not path.exists():
        pytest.skip(f"{path} is not present (the project's shared test imagery)")
    if path.suffix == ".tif":
        import rasterio

        with rasterio.open(path) as ds:
            return np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3]), 0, -1))
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real imagery and dataset layouts); tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (the project's shared test imagery)")
    return SHARED_DATA


@dataclass(frozen=True)
class AerialSources:
    """Generated source folders (shared by a session's tests: read them, never change them)."""

    landsat: Path
    landsat_scenes: tuple[Scene, ...]
    dota: Path
    dota_scenes: tuple[Scene, ...]

    def scene(self, name: str) -> Scene:
        return next(s for s in self.landsat_scenes + self.dota_scenes if s.name == name)


@pytest.fixture(scope="session")
def aerial_sources(tmp_path_factory) -> AerialSources:
    """A Landsat-like GeoTIFF folder and a DOTA-like PNG folder (``images``), written here (see tests/scenes.py)."""
    from tests.scenes import write_dota_like, write_landsat_like

    root = tmp_path_factory.mktemp("aerial")
    landsat = tuple(write_landsat_like(root / "landsat"))
    dota = tuple(write_dota_like(root / "images"))
    return AerialSources(root / "landsat", landsat, root / "images", dota)


def _png(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_mini_build(out: Path, shards: int = 2, per_shard: int = 3, seed: int = 0) -> list[dict]:
    """Write a small but complete output folder by hand (shards, shards.parquet, manifest.parquet).

    Returns the manifest rows with the stored bytes under the extra key ``_data``.
    """
    layout = OutputLayout(out)
    rng = np.random.default_rng(seed)
    rows, infos = [], []
    for unit in range(shards):
        with ShardWriter(layout.shard(unit)) as writer:
            for i in range(per_shard):
                tile_id = mf.make_tile_id("synthetic", f"scene{unit}.png", i * 32, 0, 32, 32)
                data = _png(rng, 32)
                loc = writer.add(tile_id, "png", data, {"tile_id": tile_id})
                rows.append({
                    "tile_id": tile_id, "scene_id": mf.make_scene_id("synthetic", f"scene{unit}.png"),
                    "source": "synthetic", "scene_path": f"scene{unit}.png", "licence": "CC0-1.0",
                    "x": i * 32, "y": 0, "width": 32, "height": 32, "bands": 3, "dtype": "uint8",
                    "format": "png", "shard": layout.shard_name(unit), "offset": loc.offset,
                    "length": loc.length, "_data": data,
                })
        infos.append(writer.info.__dict__)
    mf.write_table(mf.table_from_rows(infos, mf.SHARDS_SCHEMA), layout.shards_table)
    table = mf.table_from_rows([{k: v for k, v in r.items() if k != "_data"} for r in rows], mf.MANIFEST_SCHEMA)
    mf.write_table(table, layout.manifest, mf.MANIFEST_SCHEMA)
    return rows


@pytest.fixture()
def mini_build(tmp_path: Path) -> tuple[Path, list[dict]]:
    out = tmp_path / "out"
    return out, make_mini_build(out)
