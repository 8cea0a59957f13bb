"""The Python API: make a build from the same plan as ``rs4m build``, open a finished build and read its
manifest and tiles.

    import rs4m

    plan = rs4m.make_plan(sources=["folder=/data/scenes"], tile_size=512)   # or make_plan("recipe.toml")
    report = rs4m.build("demo-out", plan)            # report.ok, report.counts (as build.json records them)

    build = rs4m.open("demo-out")
    table = build.manifest()                         # pyarrow.Table of the kept tiles
    frame = build.to_pandas(columns=["tile_id", "source", "richness"])
    for tile in build.tiles(where="richness > 30", decode=True):
        tile.row["tile_id"], tile.rgb.shape          # uint8 [H, W, 3]
    data = build.read("3fa4c2")                      # the stored bytes of one tile (any unique id prefix)
    report = build.verify()                          # report.ok, report.problems
    counts = build.stats()

Tiles are read with one ranged read each from their shard (``shard`` / ``offset`` / ``length``); the manifest
is read in record batches, so iterating over a corpus of any size holds one batch in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs4m import codec
from rs4m import manifest as mf
from rs4m.errors import ConfigError, OutputError
from rs4m.filters import filter_table, parse_where
from rs4m.layout import OutputLayout
from rs4m.shards import ShardReader

if TYPE_CHECKING:
    from rs4m.plan import BuildPlan
    from rs4m.stages.build import BuildReport

#: the columns a tile's bytes are found by
LOCATION = ("shard", "offset", "length", "format")


@dataclass(frozen=True)
class Tile:
    """One manifest row with its stored bytes (``data``) and, when decoded, its RGB pixels ``[H, W, 3]``."""

    row: dict[str, Any]
    data: bytes
    rgb: np.ndarray | None = None


class Build:
    """A finished rs4m build folder, read-only. Use :func:`open` to get one."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.layout = OutputLayout(self.out)
        if not self.layout.manifest.is_file():
            raise OutputError(f"{self.out} has no manifest.parquet; finish the build with `rs4m build` first")
        self.columns: list[str] = pq.read_schema(self.layout.manifest).names

    def __repr__(self) -> str:
        return f"rs4m.Build({str(self.out)!r}, {len(self)} tiles)"

    def __len__(self) -> int:
        return pq.ParquetFile(self.layout.manifest).metadata.num_rows

    def manifest(self, columns: Sequence[str] | None = None, where: str | None = None) -> pa.Table:
        """The kept tiles as an Arrow table (``columns``: a subset; ``where``: a filter, see :mod:`rs4m.filters`)."""
        wanted = self._columns(columns, where)
        table = mf.read_table(self.layout.manifest, mf.MANIFEST_SCHEMA, columns=wanted)
        if where:
            table = filter_table(table, where)
        return table.select(list(columns)) if columns is not None else table

    def to_pandas(self, columns: Sequence[str] | None = None, where: str | None = None) -> Any:
        """The kept tiles as a pandas DataFrame (``geometry`` stays WKB bytes; see :meth:`to_geopandas`)."""
        return self.manifest(columns, where).to_pandas()

    def to_geopandas(self, where: str | None = None) -> Any:
        """The kept tiles as a GeoDataFrame with the footprints in EPSG:4326 (needs geopandas)."""
        try:
            import geopandas
        except ImportError:
            raise ConfigError("to_geopandas needs geopandas: pip install geopandas") from None
        frame = geopandas.read_parquet(self.layout.manifest)
        if where:
            keep = set(self.manifest(["tile_id"], where).column("tile_id").to_pylist())
            frame = frame[frame["tile_id"].isin(keep)]
        return frame

    def tiles(self, where: str | None = None, columns: Sequence[str] | None = None, decode: bool = False,
              batch_rows: int = 4096) -> Iterator[Tile]:
        """Every kept tile matching ``where``, in manifest order, with its bytes (and pixels if ``decode``)."""
        compiled = parse_where(where, self.columns) if where else None
        wanted = self._columns(columns, where, extra=LOCATION)
        source = pq.ParquetFile(self.layout.manifest)
        with ShardReader(self.layout.shards_dir) as reader:
            for batch in source.iter_batches(batch_size=batch_rows, columns=wanted):
                table = pa.Table.from_batches([batch])
                if compiled is not None:
                    table = compiled.filter(table)
                for row in table.to_pylist():
                    yield self._tile(reader, row, columns, decode)

    def read(self, tile_id: str, decode: bool = False) -> bytes | np.ndarray:
        """The stored bytes of the tile whose id is or starts with ``tile_id`` (or its RGB pixels if ``decode``)."""
        row = self.row(tile_id)
        with ShardReader(self.layout.shards_dir) as reader:
            tile = self._tile(reader, row, None, decode)
        return tile.rgb if decode and tile.rgb is not None else tile.data

    def row(self, tile_id: str) -> dict[str, Any]:
        """The manifest row of the tile whose id is or starts with ``tile_id`` (a prefix must be unique)."""
        ids = mf.read_table(self.layout.manifest, mf.MANIFEST_SCHEMA, columns=["tile_id"]).column("tile_id")
        hits = [t for t in ids.to_pylist() if t.startswith(tile_id)]
        if len(hits) != 1:
            what = "no kept tile" if not hits else f"{len(hits)} kept tiles"
            raise ConfigError(f"{what} of {self.out} {'has' if not hits else 'have'} an id starting with {tile_id!r}")
        table = pq.read_table(self.layout.manifest, filters=[("tile_id", "==", hits[0])])
        return mf.conform(table, mf.MANIFEST_SCHEMA).to_pylist()[0]

    def verify(self, decode: bool = True) -> Any:
        """Check every shard and row (as ``rs4m verify``); returns a report with ``ok`` and ``problems``."""
        from rs4m.verify import verify_output

        return verify_output(self.out, decode_tiles=decode)

    def stats(self, by: str = "source") -> dict[str, Any]:
        """The counts of ``rs4m stats --json``: scenes, tiles kept / filtered / duplicate, errors, per ``by``."""
        from rs4m.report import compute_stats

        return compute_stats(self.out, by=by)

    def _columns(self, columns: Sequence[str] | None, where: str | None, extra: Sequence[str] = ()) -> list[str]:
        if columns is None:
            return list(self.columns)
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise ConfigError(f"no column {unknown[0]!r} in the manifest; columns: {', '.join(self.columns)}")
        named = list(parse_where(where, self.columns).columns) if where else []
        wanted = set(columns) | set(named) | set(extra)
        return [c for c in self.columns if c in wanted]

    @staticmethod
    def _tile(reader: ShardReader, row: dict[str, Any], columns: Sequence[str] | None, decode: bool) -> Tile:
        data = reader.read_row(row)
        rgb = codec.decode(data, row["format"]) if decode else None
        if columns is not None:
            row = {c: row[c] for c in columns}
        return Tile(row, data, rgb)


def open(out: str | Path) -> Build:  # noqa: A001 - rs4m.open reads like the builtin, on a build folder
    """Open the finished build in ``out`` for reading."""
    return Build(Path(out))


def make_plan(recipe: str | Path | None = None, *, sources: Sequence[str] = (), root: str | Path | None = None,
              strict: bool = False, engine: str = "local", workers: int | None = None, address: str | None = None,
              keep_dropped: bool = False, overlap: bool | None = None, dihedral: bool | None = None,
              **tiling: Any) -> BuildPlan:
    """The validated plan of a build, made as ``rs4m build`` makes it from its flags: a ``recipe`` TOML (its
    sources under ``root``) or ``sources`` as ``ADAPTER=PATH[,grey=...]`` strings, never both; ``tiling`` keys
    (``tile_size=512``, ``mode="random"``, ...: the recipe's ``[build]`` keys) override every source's tiling;
    ``overlap`` (``--overlap/--no-overlap``) and ``dihedral`` (``--dihedral/--no-dihedral``) override the recipe's
    ``[dedup]`` keys of those names.
    Every key is checked here, before any work: a bad one is a :class:`~rs4m.errors.ConfigError`."""
    from rs4m.config import TileConfig, from_mapping
    from rs4m.plan import EngineSettings, plan_from_cli

    from_mapping(TileConfig, tiling, "tiling")
    return plan_from_cli(Path(recipe) if recipe else None, Path(root) if root else None, tuple(sources), strict,
                         tiling, EngineSettings(engine, workers, address), keep_dropped,
                         {"overlap": overlap, "dihedral": dihedral})


def build(out: str | Path, plan: BuildPlan, *, force: bool = False,
          stages: Sequence[str] | None = None) -> BuildReport:
    """Run ``plan`` (:func:`make_plan`) into the folder ``out``, as ``rs4m build`` does: a killed build resumes,
    a plan that adds sources grows the build, ``force`` first deletes the files the build wrote; ``stages``
    runs only those (``scan``, ``tile``, ``dedup``, ``catalog``, ``compact``). Read the result with :func:`open`."""
    from rs4m.stages.build import run_build

    return run_build(Path(out), plan, tuple(stages) if stages is not None else None, force=force)
