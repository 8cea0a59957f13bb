"""Configuration: frozen dataclasses and the recipe TOML that maps onto them.

A recipe (``manifests/rs4m.toml``) has the tables ``[build]`` (tiling defaults), ``[filters]``, ``[dedup]``,
``[output]`` and an array ``[[sources]]``; any ``[build]`` key may be overridden per source. Unknown keys are
an error that names the key and the valid ones. Field names equal CLI flag names (``tile_size`` ↔ ``--tile-size``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
#: peak bytes the tile stage may take decoding one scene of a whole-decode format, estimated before decoding: a
#: whole decode holds the file's bytes + the decoded pixels (3 bytes a pixel for JPEG, 4-5 for PNG, GIF, BMP, WebP;
#: :data:`rs4m.whole_decode.DECODED_BYTES_PER_PIXEL`); a large PNG decoded row by row holds a band of rows
#: (:func:`rs4m.png_stream.stream_peak_bytes`). 4 GiB fits one worker per core on a machine of 4 GiB a core.
DEFAULT_MAX_SCENE_BYTES = 4 << 30
#: largest tile, crop or output edge a recipe may ask for (a 16384² RGB tile is 805 MB in memory)
MAX_EDGE_PX = 16384
#: most scenes in one work unit (one shard and one tiles part)
MAX_SCENES_PER_UNIT = 100_000
#: how ``[dedup] geo_iou`` measures overlap (see :mod:`rs4m.dedup`)
GEO_MEASURES = ("containment", "iou")


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def type_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of the annotated type ``kind`` (``int``, ``float``, ``str``, ``bool``,
    ``tuple[str, ...]``), or None. Exact: ``true`` is not an int, ``1`` is not a bool, NaN is no number."""
    if kind.startswith("tuple["):
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings"
        return None
    want = _TYPES.get(kind)
    if want is None:
        return None
    if isinstance(value, bool) and want is not bool:
        return f"must be {kind}, not a boolean"
    if want is float and isinstance(value, int):
        return None
    if not isinstance(value, want):
        return f"must be {kind}, not {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    return None


def check_types(obj: Any) -> None:
    """Raise :class:`ConfigError` on the first field of dataclass ``obj`` that is not of its annotated type."""
    for f in dataclasses.fields(obj):
        problem = type_problem(str(f.type), getattr(obj, f.name))
        if problem:
            raise ConfigError(f"{f.name} {problem}")


def _in_range(obj: Any, name: str, low: float, high: float | None, note: str = "") -> None:
    value = getattr(obj, name)
    if value < low or (high is not None and value > high):
        bounds = f"within {low}..{high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}{f' ({note})' if note else ''}, not {value}")


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
    shard_bytes: int = 0  # > 0: units close at this many estimated stored bytes instead (rs4m.units)
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    max_scene_pixels: int = DEFAULT_MAX_SCENE_PIXELS
    max_scene_bytes: int = DEFAULT_MAX_SCENE_BYTES
    grey: str | None = None  # GREY_POLICIES; None: the adapter's default (``SourceAdapter.grey``)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        check_types(self)
        for name in ("tile_size", "crop_min", "crop_max"):
            _in_range(self, name, 1, MAX_EDGE_PX)
        for name in ("stride", "out_size"):
            _in_range(self, name, 0, MAX_EDGE_PX, "0 means: same as the tile")
        _in_range(self, "scenes_per_unit", 1, MAX_SCENES_PER_UNIT)
        _in_range(self, "max_pixels", 1, None)
        _in_range(self, "max_scene_pixels", 1, None)
        _in_range(self, "max_scene_bytes", 1, None)
        _in_range(self, "seed", 0, None)
        _in_range(self, "shard_bytes", 0, None, "0: units by scenes_per_unit")
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

    def __post_init__(self) -> None:
        check_types(self)
        _in_range(self, "max_nodata_frac", 0.0, 1.0)
        _in_range(self, "min_richness", 0.0, None)


@dataclass(frozen=True)
class DedupConfig:
    """How duplicates are found (recipe table ``[dedup]``; names equal the CLI flags of ``rs4m dedup``).

    Radii come from ``benchmarks/dedup_quality.py``: 5 bits on both hashes keeps precision at 1.0 there while
    finding all recompressed, resized and brightness-shifted copies, and keeps 4 M tiles within a minute.
    ``geo_iou`` is the overlap threshold, measured as ``geo_measure`` says (see :mod:`rs4m.dedup`).
    ``dihedral`` is on: overhead imagery has no "up", so a flipped or rotated copy is a copy; the canonical
    hashes it searches are stored for every tile anyway, and precision stays 1.0 at 5 bits in that benchmark.

    ``overlap`` turns on the search for partial overlaps without georeference (crops at any offset, 0.5–2×
    scale, any flip or rotation; :mod:`rs4m.overlap`): the tile stage stores local features of every tile and
    dedup groups tiles of different scenes sharing at least ``overlap_frac`` of the smaller one's ground;
    leakage reports benchmark images sharing at least ``leak_overlap`` of their area with a tile. Off by
    default: extracting the features costs almost as much as the rest of the tile stage
    (``benchmarks/RESULTS.md``, overlap_speed, overlap_extraction_cost). The thresholds are the defaults
    chosen on ``benchmarks/overlap_quality.py``.
    """

    radius_bits: int = 5
    dhash_radius_bits: int = 5
    dihedral: bool = True
    geo: bool = True
    geo_iou: float = 0.5
    geo_measure: str = "containment"
    gsd_ratio: float = 2.0
    min_richness: float = 0.0
    source_priority: tuple[str, ...] = ()
    overlap: bool = False
    overlap_frac: float = 0.5
    leak_overlap: float = 0.2

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("overlap_frac", "leak_overlap"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within (0, 1] (a fraction of the smaller image's area), "
                                  f"not {getattr(self, name)}")
        for name in ("radius_bits", "dhash_radius_bits"):
            if not 0 <= getattr(self, name) <= 16:
                raise ConfigError(f"{name} must be within 0..16 bits, not {getattr(self, name)}")
        if not 0.0 < self.geo_iou <= 1.0:
            raise ConfigError(f"geo_iou must be within (0, 1], not {self.geo_iou}")
        if self.geo_measure not in GEO_MEASURES:
            raise ConfigError(f"geo_measure must be one of {', '.join(GEO_MEASURES)}, not {self.geo_measure!r}")
        _in_range(self, "gsd_ratio", 1.0, None)
        _in_range(self, "min_richness", 0.0, None)


@dataclass(frozen=True)
class OutputConfig:
    """What a build leaves in OUT (recipe table ``[output]``).

    ``keep_dropped``: leave the shards holding every stored tile, duplicates and leaked ones included (the
    manifest still lists only the kept ones); by default a build ends by compacting them (:mod:`rs4m.compact`)
    so that the shards hold exactly the manifest's tiles.
    """

    keep_dropped: bool = False

    def __post_init__(self) -> None:
        check_types(self)


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
    """A whole build: tiling defaults, filters, dedup settings (checked against :class:`DedupConfig` when the
    recipe is read, kept as given so that ``build.json`` records them as written) and sources."""

    build: TileConfig = field(default_factory=TileConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[SourceSpec, ...] = ()
    output: OutputConfig = field(default_factory=OutputConfig)


def from_mapping(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and values out of range are a
    :class:`ConfigError` that names ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table of keys, not {data!r}")
    valid = {f.name: f for f in dataclasses.fields(cls)}
    data = dict(data)
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
        kind = str(valid[key].type)
        if kind.startswith("tuple[") and isinstance(value, list):
            data[key] = value = tuple(value)
        problem = type_problem(kind, value)
        if problem:
            raise ConfigError(f"{where}: {key} {problem}")
    try:
        return cls(**data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


_SOURCE_KEYS = {"name", "path", "splits", "glob", "max_images", "options"}


def _source_field(entry: Mapping[str, Any], key: str, where: str, kind: type) -> Any:
    """``entry[key]`` if absent or of type ``kind`` (never a boolean for a number), else a :class:`ConfigError`."""
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names: dict[type, str] = {str: "a string", int: "an integer", dict: "a table", list: "a list of strings"}
        raise ConfigError(f"{where}: {key} must be {names.get(kind, kind.__name__)}, not {value!r}")
    return value


def _source(entry: Mapping[str, Any], build: TileConfig, index: int) -> SourceSpec:
    where = f"[[sources]] #{index + 1}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table, not {entry!r}")
    if "name" not in entry:
        raise ConfigError(f"{where}: missing key 'name' (the adapter name; see `rs4m sources`)")
    name = _source_field(entry, "name", where, str)
    where = f"{where} ({name})"
    tile_keys = {k: v for k, v in entry.items() if k not in _SOURCE_KEYS}
    tile_valid = {f.name for f in dataclasses.fields(TileConfig)}
    for key in tile_keys:
        if key not in tile_valid:
            valid = ", ".join(sorted(_SOURCE_KEYS | tile_valid))
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")
    tile = from_mapping(TileConfig, {**dataclasses.asdict(build), **tile_keys}, where)
    splits = _source_field(entry, "splits", where, list)
    if splits is not None and not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"{where}: splits must be a list of strings, not {splits!r}")
    max_images = _source_field(entry, "max_images", where, int) or 0
    if max_images < 0:
        raise ConfigError(f"{where}: max_images must be at least 0 (0: no cap), not {max_images}")
    return SourceSpec(
        name=name,
        path=_source_field(entry, "path", where, str),
        splits=tuple(splits) if splits is not None else None,
        glob=_source_field(entry, "glob", where, str),
        max_images=max_images,
        options=dict(_source_field(entry, "options", where, dict) or {}),
        tile=tile,
    )


def recipe_from_mapping(data: Mapping[str, Any], where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from parsed TOML."""
    top = {"build", "filters", "dedup", "sources", "output"}
    for key in data:
        if key not in top:
            raise ConfigError(f"{where}: unknown table {key!r}; valid: {', '.join(sorted(top))}")
    build = from_mapping(TileConfig, data.get("build", {}), f"{where} [build]")
    filters = from_mapping(FilterConfig, data.get("filters", {}), f"{where} [filters]")
    dedup = data.get("dedup", {})
    from_mapping(DedupConfig, dedup, f"{where} [dedup]")  # checked now, before any work; stored as given
    entries = data.get("sources", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: sources must be an array of tables ([[sources]]), not {entries!r}")
    sources = tuple(_source(e, build, i) for i, e in enumerate(entries))
    output = from_mapping(OutputConfig, data.get("output", {}), f"{where} [output]")
    return Recipe(build=build, filters=filters, dedup=dict(dedup), sources=sources, output=output)


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
