"""Where every file of a build's output folder lives (see the design's "Output folder of a build")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputLayout:
    """Paths inside one build output folder ``OUT``."""

    root: Path

    @property
    def build_json(self) -> Path:
        return self.root / "build.json"

    @property
    def scenes(self) -> Path:
        return self.root / "scenes.parquet"

    @property
    def tiles_dir(self) -> Path:
        return self.root / "tiles"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def shards_table(self) -> Path:
        return self.root / "shards.parquet"

    @property
    def dedup(self) -> Path:
        return self.root / "dedup.parquet"

    @property
    def dedup_report(self) -> Path:
        return self.root / "dedup.json"

    @property
    def leakage(self) -> Path:
        return self.root / "leakage.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def errors(self) -> Path:
        return self.root / "errors.parquet"

    @property
    def unit_errors_dir(self) -> Path:
        """Per-unit error parts written by the tile stage; merged into ``errors.parquet``."""
        return self.root / "tiles" / "errors"

    def tile_part(self, unit: int) -> Path:
        return self.tiles_dir / f"part-{unit:05d}.parquet"

    def unit_errors(self, unit: int) -> Path:
        return self.unit_errors_dir / f"part-{unit:05d}.parquet"

    @staticmethod
    def shard_name(unit: int) -> str:
        """Shard file name of a work unit, relative to ``OUT/shards/`` (the ``shard`` column)."""
        return f"rs4m-{unit:05d}.tar"

    def shard(self, unit: int) -> Path:
        return self.shards_dir / self.shard_name(unit)

    def tile_parts(self) -> list[Path]:
        """Completed tiles parts, sorted by unit."""
        if not self.tiles_dir.is_dir():
            return []
        return sorted(self.tiles_dir.glob("part-*.parquet"))
