"""A real training corpus for the pretrain tests: ``rs4m build`` over the two DOTA images (34 jpg tiles)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rs4m.cli import get_cli

DOTA_IMAGES = "real/dota-devkit/images"


def build_real_corpus(shared_data: Path, out: Path) -> Path:
    """Build ``out`` from the shared DOTA images with 256 px tiles; return its manifest.parquet."""
    images = shared_data / DOTA_IMAGES
    if not images.is_dir():
        pytest.skip(f"{images} is not present (the project's shared test imagery)")
    args = ["build", str(out), "--source", f"folder={images}", "--tile-size", "256", "--workers", "1", "-q"]
    result = CliRunner().invoke(get_cli(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "manifest.parquet"
