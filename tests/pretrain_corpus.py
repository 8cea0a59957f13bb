"""A training corpus for the pretrain tests, made by the test itself: ``rs4m build`` over aerial-like scenes that
``rs4m.demo.synthetic_scene`` draws (fields, roads, buildings, a river), so no shared imagery is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from rs4m.cli import get_cli
from rs4m.demo import synthetic_scene

#: (file name, width, height) of the generated scenes; 256 px tiles give 9 + 6 + 4 = 19 tiles
SCENES = (("scene0.png", 768, 768), ("scene1.png", 768, 512), ("scene2.png", 512, 512))


def write_scenes(folder: Path, seed: int = 0) -> Path:
    """Write ``SCENES`` under ``folder`` as PNG; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, width, height in SCENES:
        synthetic_scene(rng, width, height).save(folder / name)
    return folder


def build_corpus(out: Path, seed: int = 0) -> Path:
    """Build ``out`` (256 px jpg tiles) from freshly generated scenes; return its manifest.parquet."""
    images = write_scenes(out.parent / f"{out.name}-scenes", seed)
    args = ["build", str(out), "--source", f"folder={images}", "--tile-size", "256", "--workers", "1", "-q"]
    result = CliRunner().invoke(get_cli(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "manifest.parquet"
