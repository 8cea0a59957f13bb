"""Where every file of a build's output folder lives (see the design's "Output folder of a build")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rs4m.errors import OutputError


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

    @property
    def features_dir(self) -> Path:
        """Per-unit local features of the stored tiles (written with overlap search on)."""
        return self.root / "features"

    def feature_part(self, unit: int) -> Path:
        return self.features_dir / f"part-{unit:05d}.parquet"

    def feature_parts(self) -> list[Path]:
        """Features parts, sorted by unit."""
        if not self.features_dir.is_dir():
            return []
        return sorted(self.features_dir.glob("part-[0-9][0-9][0-9][0-9][0-9].parquet"))

    def unit_files(self, unit: int) -> tuple[Path, ...]:
        """Every file of one work unit, its tiles part first: removing them in this order undoes the unit
        before anything else of it goes."""
        return self.tile_part(unit), self.shard(unit), self.unit_errors(unit), self.feature_part(unit)

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


#: names of the files a build writes, by folder relative to ``OUT`` (the only files ``--force`` deletes)
OWNED_NAMES: dict[str, re.Pattern[str]] = {
    ".": re.compile(r"(build\.json|scenes\.parquet|shards\.parquet|dedup\.parquet|dedup\.json|leakage\.parquet"
                    r"|manifest\.parquet|errors\.parquet|compact\.json)"),
    "tiles": re.compile(r"part-\d{5}\.parquet"),
    "tiles/errors": re.compile(r"part-\d{5}\.parquet"),
    "features": re.compile(r"part-\d{5}\.parquet"),
    "shards": re.compile(r"rs4m-\d{5}\.tar|wids-index\.json"),
}
SHARD_NAME = re.compile(r"rs4m-\d{5}\.tar")
#: what :func:`rs4m.manifest.atomic_path` and the shard writer name their temp files: ``.<final>.<8 chars>.tmp``
TEMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")
#: staged names of an unfinished ``rs4m compact`` (``<final name>.compact``)
STAGED_SUFFIX = ".compact"
LOCK_NAME = ".rs4m.lock"


def is_owned_name(folder: str, name: str) -> bool:
    """True if ``name`` in ``folder`` (relative to OUT) is a file a build writes, under its final name."""
    pattern = OWNED_NAMES.get(folder)
    return pattern is not None and pattern.fullmatch(name) is not None


def is_leftover_name(folder: str, name: str) -> bool:
    """True for a temp file or staged compaction file of a file a build writes (left by a killed write)."""
    if name.endswith(STAGED_SUFFIX) and is_owned_name(folder, name.removesuffix(STAGED_SUFFIX)):
        return True
    match = TEMP_NAME.fullmatch(name)
    if match is None:
        return False
    final = match.group(1).removesuffix(STAGED_SUFFIX)
    return is_owned_name(folder, final)


def check_shard_name(name: object) -> str:
    """``name`` if it is a shard name a build writes (``rs4m-NNNNN.tar``), else an :class:`OutputError`.

    Shard names are read from files inside OUT; a crafted name (``../x``, an absolute path) is refused, so a
    path read from OUT never leads outside ``OUT/shards/``.
    """
    if not isinstance(name, str) or SHARD_NAME.fullmatch(name) is None:
        raise OutputError(f"shard name {name!r} read from the build is not of the form rs4m-NNNNN.tar; "
                          "refusing to follow it (the build's tables were altered)")
    return name


def inside(root: Path, path: Path) -> bool:
    """True if ``path``, with symlinks resolved, is ``root`` itself or lies under it (``root`` resolved too)."""
    root, path = Path(root).resolve(), Path(path).resolve()
    return path == root or root in path.parents


def _files(root: Path) -> list[tuple[str, Path]]:
    """(folder relative to ``root``, path) of every regular file in the folders a build writes; a symlinked
    folder is not entered and symlinks are not listed, so nothing outside ``root`` ever is."""
    root = Path(root)
    found = []
    for folder in OWNED_NAMES:
        where = root / folder
        if not where.is_dir() or (folder != "." and where.is_symlink()) or not inside(root, where):
            continue
        found += [(folder, p) for p in sorted(where.iterdir()) if not p.is_symlink() and p.is_file()]
    return found


def owned_files(root: Path) -> list[Path]:
    """The files a build wrote in ``root``: final names of :data:`OWNED_NAMES`, temp files of killed writes
    and staged files of an unfinished compaction. The only files ``build --force`` deletes."""
    return [p for folder, p in _files(root)
            if is_owned_name(folder, p.name) or is_leftover_name(folder, p.name)]


def leftover_files(root: Path) -> list[Path]:
    """Temp files of killed writes and staged files of an unfinished compaction in ``root``."""
    return [p for folder, p in _files(root) if is_leftover_name(folder, p.name)]
