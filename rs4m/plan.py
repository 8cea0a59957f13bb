"""The build plan: what a build reads and how, made once from flags, a recipe or ``build.json``, checked whole.

A :class:`BuildPlan` is frozen and fully validated before any work: every source with its root, per-source
tiling and grey policy, the filters, the dedup settings and the engine. :func:`rs4m.stages.build.run_build`
runs the stages of a plan; the click commands only parse, plan, run and print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rs4m.config import (
    DedupConfig,
    FilterConfig,
    OutputConfig,
    Recipe,
    SourceSpec,
    TileConfig,
    from_mapping,
    load_recipe,
)
from rs4m.errors import ConfigError
from rs4m.record import BuildRecord
from rs4m.stages.sources import SourceInput


@dataclass(frozen=True)
class EngineSettings:
    """Which engine runs the units (:data:`rs4m.engines.ENGINES`) and with how many workers."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        from rs4m.engines import ENGINES

        if self.name not in ENGINES:
            raise ConfigError(f"unknown engine {self.name!r}; valid: {', '.join(ENGINES)}")


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs, validated: sources (each with its tiling), filters, dedup, engine."""

    sources: tuple[SourceInput, ...] = ()
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    engine: EngineSettings = field(default_factory=EngineSettings)
    recipe: Path | None = None
    #: one line per recipe source that was not found and skipped
    warnings: tuple[str, ...] = ()
    output: OutputConfig = field(default_factory=OutputConfig)

    def stages(self) -> tuple[str, ...]:
        """The stages of ``rs4m build`` for this plan: compaction last unless the dropped tiles are kept."""
        return ("scan", "tile", "dedup", "catalog") + (() if self.output.keep_dropped else ("compact",))

    def tile_configs(self) -> dict[str, TileConfig]:
        """source → its :class:`TileConfig`."""
        return {inp.source: inp.spec.tile for inp in self.sources}

    def source_entries(self) -> list[dict[str, Any]]:
        """The sources as ``build.json`` records them (their identity: see :func:`source_identity`)."""
        return [source_entry(inp) for inp in self.sources]

    def record_fields(self) -> dict[str, Any]:
        """The plan as stored in ``build.json``."""
        return {"recipe": str(self.recipe) if self.recipe else None, "sources": self.source_entries(),
                "filters": dataclasses.asdict(self.filters), "dedup": dataclasses.asdict(self.dedup),
                "output": dataclasses.asdict(self.output)}


#: the keys of a ``build.json`` source entry that make its identity (a change needs ``--force``)
IDENTITY_KEYS = ("adapter", "source", "root", "licence", "splits", "max_images", "glob", "options", "tile")


def source_entry(inp: SourceInput) -> dict[str, Any]:
    """One source as ``build.json`` records it."""
    splits = inp.splits()
    return {"adapter": inp.spec.name, "source": inp.source, "root": str(inp.root), "licence": inp.licence,
            "splits": list(splits) if splits is not None else None, "max_images": inp.spec.max_images,
            "glob": inp.spec.glob, "options": dict(inp.spec.options), "tile": dataclasses.asdict(inp.spec.tile)}


def source_identity(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a source entry that must not change in an existing build (older records lack some keys)."""
    return {k: entry.get(k) for k in IDENTITY_KEYS if k in entry}


def _tile_overrides(tile_flags: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (tile_flags or {}).items() if v is not None}


def plan_from_recipe(recipe_path: Path, root: Path | None = None, strict: bool = False,
                     tile_flags: Mapping[str, Any] | None = None,
                     engine: EngineSettings = EngineSettings()) -> BuildPlan:
    """The plan of a recipe TOML whose sources lie under ``root`` (missing ones skipped with a warning, an
    error with ``strict``); ``tile_flags`` override every source's tiling."""
    from rs4m.stages.sources import sources_from_recipe

    recipe = load_recipe(recipe_path)
    inputs, warnings = sources_from_recipe(recipe, root, strict, _tile_overrides(tile_flags))
    dedup = from_mapping(DedupConfig, recipe.dedup, f"{recipe_path} [dedup]")
    return BuildPlan(tuple(inputs), recipe.filters, dedup, engine, Path(recipe_path), tuple(warnings), recipe.output)


def plan_from_flags(sources: list[str] | tuple[str, ...], tile_flags: Mapping[str, Any] | None = None,
                    engine: EngineSettings = EngineSettings(), filters: FilterConfig = FilterConfig(),
                    dedup: DedupConfig = DedupConfig()) -> BuildPlan:
    """The plan of ``--source ADAPTER=PATH[,grey=...]`` flags, tiled as ``tile_flags`` say."""
    from rs4m.stages.sources import sources_from_flags

    if not sources:
        raise ConfigError("nothing to read: give --recipe RECIPE.toml or --source ADAPTER=PATH")
    tile = replace(Recipe().build, **_tile_overrides(tile_flags))
    return BuildPlan(tuple(sources_from_flags(list(sources), tile)), filters, dedup, engine)


def plan_from_cli(recipe: Path | None, root: Path | None, sources: tuple[str, ...], strict: bool,
                  tile_flags: Mapping[str, Any], engine: EngineSettings, keep_dropped: bool = False,
                  dedup_flags: Mapping[str, Any] | None = None) -> BuildPlan:
    """A recipe or ``--source`` flags (never both) → the plan; ``keep_dropped`` (``--keep-dropped``) wins
    over the recipe's ``[output]``, the ``[dedup]`` settings given in ``dedup_flags`` (``--overlap``,
    ``--no-dihedral``, ...; None: not given) over its ``[dedup]``."""
    if recipe and sources:
        raise ConfigError("give either --recipe or --source, not both")
    plan = plan_from_recipe(recipe, root, strict, tile_flags, engine) if recipe else \
        plan_from_flags(sources, tile_flags, engine)
    given = {k: v for k, v in (dedup_flags or {}).items() if v is not None}
    if given:
        plan = replace(plan, dedup=replace(plan.dedup, **given))
    return replace(plan, output=OutputConfig(keep_dropped=True)) if keep_dropped else plan


def _input_of(entry: Mapping[str, Any]) -> SourceInput:
    """A source of ``build.json`` back as a :class:`SourceInput` (its splits as resolved when recorded)."""
    splits = entry.get("splits")
    spec = SourceSpec(name=entry["adapter"], path=entry["root"], splits=tuple(splits) if splits is not None else None,
                      glob=entry.get("glob"), max_images=entry.get("max_images") or 0,
                      options=dict(entry.get("options") or {}), tile=TileConfig(**entry.get("tile", {})))
    return SourceInput(spec=spec, root=Path(entry["root"]), source=entry["source"], licence=entry.get("licence", ""))


def plan_from_record(record: BuildRecord, dedup_flags: Mapping[str, Any] | None = None,
                     engine: EngineSettings = EngineSettings()) -> BuildPlan:
    """The plan a build in ``OUT`` was made with (``build.json``), for the single-stage commands; the dedup
    settings given in ``dedup_flags`` replace the recorded ones."""
    data = record.data
    sources = tuple(_input_of(e) for e in data.get("sources", []) if "adapter" in e and "root" in e)
    filters = from_mapping(FilterConfig, data.get("filters") or {}, f"{record.path} filters")
    dedup = from_mapping(DedupConfig, data.get("dedup") or {}, f"{record.path} dedup")
    dedup = replace(dedup, **{k: v for k, v in (dedup_flags or {}).items() if v is not None})
    output = from_mapping(OutputConfig, data.get("output") or {}, f"{record.path} output")
    recipe = Path(data["recipe"]) if data.get("recipe") else None
    return BuildPlan(sources, filters, dedup, engine, recipe, output=output)
