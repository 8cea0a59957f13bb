"""Configuration: frozen dataclasses and the recipe TOML that maps onto them.

A recipe (``manifests/rs4m.toml``) has the tables ``[build]`` (tiling defaults), ``[filters]``, ``[dedup]`` and
an array ``[[sources]]``; any ``[build]`` key may be overridden per source. Unknown keys are an error that names
the key and the valid ones. Field names equal CLI flag names (``tile_size`` ↔ ``--tile-size``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rs4m.errors import ConfigError

FORMATS = ("jpg", "png", "webp")
MODES = ("grid", "random")
#: what a single grey band becomes: an error row ("refuse") or R = G = B ("replicate"); None: the adapter's default
GREY_POLICIES = ("refuse", "replicate")
#: formats that can only be decoded whole are refused above this many pixels (the decompression-bomb guard);
#: 400 MP is larger than any single RS image we know of (a 20000 x 20000 scene) and 1.2 GB as RGB uint8.
DEFAULT_MAX_PIXELS = 400_000_000
#: any raster (windowed formats too) is refused above this many pixels: 4e9 is a 63000 x 63000 scene
DEFAULT_MAX_SCENE_PIXELS = 4_000_000_000


@dataclass(frozen=True)
class TileConfig:
    """How the scenes of one source are cut into tiles and stored."""

    tile_size: int = 512
    stride: int = 0  # 0: equal to tile_size
    mode: str = "grid"
    crop_min: int = 64
    crop_max: int = 1024
    format: str = "jpg"
    quality: int = 95
    out_size: int = 0  # 0: keep the tile's size
    scenes_per_unit: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    max_scene_pixels: int = DEFAULT_MAX_SCENE_PIXELS
    grey: str | None = None  # GREY_POLICIES; None: the adapter's default (``SourceAdapter.grey``)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        for name in ("tile_size", "scenes_per_unit", "crop_min", "crop_max", "max_pixels",
                     "max_scene_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.stride < 0 or self.out_size < 0:
            raise ConfigError("stride and out_size must be >= 0 (0 means: same as the tile)")
        if self.crop_min > self.crop_max:
            raise ConfigError(f"crop_min ({self.crop_min}) is larger than crop_max ({self.crop_max})")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be within 1..100, not {self.quality}")
        if self.grey is not None and self.grey not in GREY_POLICIES:
            raise ConfigError(f"grey must be one of {', '.join(GREY_POLICIES)}, not {self.grey!r}")

    @property
    def stride_px(self) -> int:
        return self.stride or self.tile_size


@dataclass(frozen=True)
class FilterConfig:
    """Which tiles are filtered out (recorded with a reason, never silently)."""

    max_nodata_frac: float = 0.5
    min_richness: float = 0.0
    drop_blank: bool = True


@dataclass(frozen=True)
class SourceSpec:
    """One source of a build: an adapter name, where its data is, and how to tile it."""

    name: str
    path: str | None = None
    splits: tuple[str, ...] | None = None
    glob: str | None = None
    max_images: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    tile: TileConfig = field(default_factory=TileConfig)


@dataclass(frozen=True)
class Recipe:
    """A whole build: tiling defaults, filters, dedup settings (checked by the dedup stage) and sources."""

    build: TileConfig = field(default_factory=TileConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[SourceSpec, ...] = ()


def from_mapping(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are a :class:`ConfigError`."""
    valid = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
    data = dict(data)
    for key, value in data.items():
        default = valid[key].default
        if valid[key].default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = valid[key].default_factory()  # type: ignore[misc]
        if isinstance(default, tuple) and isinstance(value, list):
            data[key] = value = tuple(value)
        if default is not dataclasses.MISSING and default is not None and not isinstance(value, type(default)):
            if not (isinstance(default, float) and isinstance(value, int)):
                raise ConfigError(f"{where}: {key} must be {type(default).__name__}, not {value!r}")
    return cls(**data)


_SOURCE_KEYS = {"name", "path", "splits", "glob", "max_images", "options"}


def _source(entry: Mapping[str, Any], build: TileConfig, index: int) -> SourceSpec:
    where = f"[[sources]] #{index + 1}"
    if "name" not in entry:
        raise ConfigError(f"{where}: missing key 'name' (the adapter name; see `rs4m sources`)")
    tile_keys = {k: v for k, v in entry.items() if k not in _SOURCE_KEYS}
    tile_valid = {f.name for f in dataclasses.fields(TileConfig)}
    for key in tile_keys:
        if key not in tile_valid:
            valid = ", ".join(sorted(_SOURCE_KEYS | tile_valid))
            raise ConfigError(f"{where} ({entry['name']}): unknown key {key!r}; valid keys: {valid}")
    tile = from_mapping(TileConfig, {**dataclasses.asdict(build), **tile_keys}, where)
    splits = entry.get("splits")
    return SourceSpec(
        name=str(entry["name"]),
        path=entry.get("path"),
        splits=tuple(splits) if splits is not None else None,
        glob=entry.get("glob"),
        max_images=int(entry.get("max_images", 0)),
        options=dict(entry.get("options", {})),
        tile=tile,
    )


def recipe_from_mapping(data: Mapping[str, Any], where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from parsed TOML."""
    top = {"build", "filters", "dedup", "sources"}
    for key in data:
        if key not in top:
            raise ConfigError(f"{where}: unknown table {key!r}; valid: {', '.join(sorted(top))}")
    build = from_mapping(TileConfig, data.get("build", {}), f"{where} [build]")
    filters = from_mapping(FilterConfig, data.get("filters", {}), f"{where} [filters]")
    sources = tuple(_source(e, build, i) for i, e in enumerate(data.get("sources", [])))
    return Recipe(build=build, filters=filters, dedup=dict(data.get("dedup", {})), sources=sources)


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {path} is not valid TOML: {err}") from None
    return recipe_from_mapping(data, where=str(path))
