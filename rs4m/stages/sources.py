"""Resolve what a build reads: adapters, their roots and tiling, from a recipe or ``--source`` flags."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from rs4m.config import Recipe, SourceSpec, TileConfig
from rs4m.errors import ConfigError, SourceError
from rs4m.sources import SourceAdapter, get_source

log = logging.getLogger("rs4m")


@dataclass(frozen=True)
class SourceInput:
    """One source ready to scan: its spec, the folder it lives in and its ``source`` column value."""

    spec: SourceSpec
    root: Path
    source: str
    licence: str

    def adapter(self) -> SourceAdapter:
        return get_source(self.spec.name)(glob=self.spec.glob, options=dict(self.spec.options))

    def splits(self) -> tuple[str, ...] | None:
        """The splits to read: the spec's, else every known split except the adapter's benchmark test splits."""
        if self.spec.splits is not None:
            return self.spec.splits
        return get_source(self.spec.name).default_splits()


def _make_input(spec: SourceSpec, root: Path) -> SourceInput:
    cls = get_source(spec.name)
    spec = replace(spec, tile=replace(spec.tile, grey=spec.tile.grey or cls.grey))  # the policy in force, recorded
    adapter = cls(glob=spec.glob, options=dict(spec.options))
    licence = str(spec.options.get("licence", cls.licence))
    return SourceInput(spec=spec, root=root.resolve(), source=adapter.source_name(root.resolve()), licence=licence)


#: per-source keys a ``--source`` flag may carry after its path (``ADAPTER=PATH,grey=replicate``)
FLAG_KEYS = ("grey",)


def parse_source_flag(value: str) -> tuple[str, Path]:
    """``ADAPTER=PATH`` → (adapter, path); a clear error otherwise."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--source {value!r}: expected ADAPTER=PATH, e.g. --source folder=/data/tiles")
    return name.strip(), Path(path)


def split_flag_keys(path: Path) -> tuple[Path, dict[str, str]]:
    """``PATH,grey=replicate`` → (PATH, {"grey": "replicate"}); only :data:`FLAG_KEYS` are split off."""
    text, keys = str(path), {}
    while (m := re.search(rf",({'|'.join(FLAG_KEYS)})=([^,=]*)$", text)) and not Path(text).is_dir():
        keys.setdefault(m.group(1), m.group(2))
        text = text[: m.start()]
    return Path(text), keys


def sources_from_flags(flags: list[str], tile: TileConfig) -> list[SourceInput]:
    """Sources given as ``--source ADAPTER=PATH``; every folder must exist."""
    inputs = []
    for flag in flags:
        name, path = parse_source_flag(flag)
        path, keys = split_flag_keys(path)
        get_source(name)  # unknown adapter: stop before any work
        if not path.is_dir():
            raise SourceError(f"source folder {path} does not exist (from --source {flag})")
        inputs.append(_make_input(SourceSpec(name=name, path=str(path), tile=replace(tile, **keys)), path))
    _check_unique(inputs)
    return inputs


def sources_from_recipe(recipe: Recipe, root: Path | None, strict: bool,
                        tile_override: dict | None = None) -> tuple[list[SourceInput], list[str]]:
    """Sources of a recipe under ``root``; missing ones are skipped with a warning (an error with ``strict``).

    Returns the inputs and one warning line per missing source.
    """
    inputs, warnings = [], []
    for spec in recipe.sources:
        get_source(spec.name)
        if tile_override:
            spec = replace(spec, tile=replace(spec.tile, **tile_override))
        rel = Path(spec.path) if spec.path else Path(spec.name)
        path = rel if rel.is_absolute() else (root or Path(".")) / rel
        if not path.is_dir():
            msg = f"source {spec.name}: {path} not found, skipped"
            if strict:
                raise SourceError(f"source {spec.name}: folder {path} does not exist (--strict)")
            warnings.append(msg)
            continue
        inputs.append(_make_input(spec, path))
    if not inputs:
        where = f" under {root}" if root else ""
        raise SourceError(f"none of the recipe's {len(recipe.sources)} sources was found{where}; "
                          "give --root DIR holding one folder per source name")
    _check_unique(inputs)
    return inputs, warnings


def _check_unique(inputs: list[SourceInput]) -> None:
    seen: dict[str, Path] = {}
    for inp in inputs:
        if inp.source in seen:
            raise ConfigError(f"two sources are both called {inp.source!r} ({seen[inp.source]} and {inp.root}); "
                              "rename one folder or drop one --source")
        seen[inp.source] = inp.root
