"""The source-adapter interface and registry (the contract every adapter plugin implements).

An adapter knows one dataset as researchers download it: its facts (licence, GSD, citation, which splits are
benchmark test splits) and how to enumerate its images, and only its images, under the root the user points at.
Adapters are registered by name with :func:`register_source` and looked up with :func:`get_source`.

Scene paths are POSIX paths relative to the source root. A member of an archive the dataset ships (.zip, .tar,
.tar.gz, .tgz) is named ``<archive path>/<member path>``, e.g. ``Images_trainval.zip/trainval/000001.jpg``;
:func:`rs4m.raster.gdal_path` turns such a path into a GDAL virtual path so it is read in place, never extracted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar, Iterator

from rs4m.errors import SourceError


@dataclass(frozen=True)
class SceneRef:
    """One scene an adapter found.

    Attributes:
        scene_path: relative POSIX path of the scene (for stacked per-band scenes: the first band's path or a
            scene folder; it names the scene in tables and tile ids).
        split: the dataset split ("train", "val", "test", ...) or None where the dataset has none.
        band_paths: for scenes stored as one single-band file per band: the red, green and blue files (relative
            paths), stacked into RGB by the reader. Empty when ``scene_path`` is the raster itself.
        rgb_bands: 1-based band indices of red, green, blue in a multi-band file, when the adapter knows them.
    """

    scene_path: str
    split: str | None = None
    band_paths: tuple[str, ...] = ()
    rgb_bands: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ScanProblem:
    """A file or folder the adapter could not enumerate (unreadable entry, symlink loop, broken archive)."""

    path: str
    reason: str
    detail: str = ""


class SourceAdapter:
    """Base class: subclasses set the facts as class attributes and implement :meth:`scenes`."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    licence: ClassVar[str] = "unknown"
    sensor: ClassVar[str] = ""
    gsd_m: ClassVar[tuple[float, float] | None] = None
    bands: ClassVar[str] = "RGB"
    #: expected image counts per split where known (None = unknown), for the full dataset
    splits: ClassVar[dict[str, int | None]] = {}
    #: splits that are benchmark test splits: excluded from pretraining by default
    test_splits: ClassVar[tuple[str, ...]] = ()
    #: default tiling: "tile" (large scenes cut into tiles) or "whole" (small images kept whole)
    tiling: ClassVar[str] = "tile"
    #: free text: what was assumed about the layout where it is not known for sure
    layout_notes: ClassVar[str] = ""
    #: where the licence, GSD and splits were checked (the dataset's page or README, a loader's docs)
    facts_source: ClassVar[str] = ""
    #: single grey-band images: "refuse" (error rows) or "replicate" (R = G = B, ``bands`` 1 in the manifest);
    #: "replicate" where the dataset's documentation says it holds grey images among its RGB ones
    grey: ClassVar[str] = "refuse"

    def __init__(self, glob: str | None = None, options: dict | None = None) -> None:
        """``glob`` overrides the adapter's image pattern (from the recipe); ``options`` are adapter-specific."""
        self.glob = glob
        self.options = dict(options or {})

    def source_name(self, root: Path) -> str:
        """The ``source`` column value for tiles from ``root`` (the adapter name; ``folder`` adds the base name)."""
        return self.name

    def scenes(self, root: Path, splits: tuple[str, ...] | None = None) -> Iterator[SceneRef | ScanProblem]:
        """Yield the dataset's scenes under ``root`` (only those of ``splits`` when given), sorted by path."""
        raise NotImplementedError

    @classmethod
    def default_splits(cls) -> tuple[str, ...] | None:
        """The splits read when a recipe names none: every known split except the benchmark test splits.

        None (read everything, images of no known split included) where the dataset has no splits or no test
        splits; this is the rule the scan stage applies.
        """
        if not cls.splits or not cls.test_splits:
            return None
        return tuple(s for s in cls.splits if s not in cls.test_splits)

    @classmethod
    def check_splits(cls, splits: tuple[str, ...] | None) -> None:
        """Raise :class:`SourceError` when ``splits`` names a split this dataset does not have."""
        if splits is None or not cls.splits:
            return
        unknown = [s for s in splits if s not in cls.splits]
        if unknown:
            raise SourceError(f"source {cls.name}: unknown split(s) {', '.join(map(repr, unknown))}; "
                              f"{cls.title or cls.name} has: {', '.join(cls.splits)}")

    @classmethod
    def facts(cls) -> dict:
        """The adapter's facts as a JSON-able dict (``rs4m sources --json``)."""
        return {
            "name": cls.name,
            "title": cls.title,
            "licence": cls.licence,
            "sensor": cls.sensor,
            "gsd_m": list(cls.gsd_m) if cls.gsd_m else None,
            "bands": cls.bands,
            "splits": dict(cls.splits),
            "test_splits": list(cls.test_splits),
            "tiling": cls.tiling,
            "grey": cls.grey,
            "citation": cls.citation,
            "layout_notes": cls.layout_notes,
            "facts_source": cls.facts_source,
        }


_REGISTRY: dict[str, type[SourceAdapter]] = {}


def register_source(cls: type[SourceAdapter]) -> type[SourceAdapter]:
    """Class decorator: register an adapter under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two adapters named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


#: the entry-point group through which packages add adapters (the built-in ones included)
ENTRY_POINT_GROUP = "rs4m.adapters"
_loaded: set[str] = set()


def _load_plugins() -> None:
    """Import every module named in the ``rs4m.adapters`` entry-point group once; their decorators register."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _loaded:
            continue
        _loaded.add(ep.value)
        try:
            ep.load()
        except Exception as err:  # a broken third-party plugin must not take the built-in adapters down
            warnings.warn(f"rs4m: adapter plugin {ep.name!r} ({ep.value}) failed to load: {err}", stacklevel=2)


def list_sources() -> list[type[SourceAdapter]]:
    """All registered adapters, sorted by name."""
    _load_plugins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_source(name: str) -> type[SourceAdapter]:
    """The adapter class registered as ``name``; a :class:`SourceError` listing valid names otherwise."""
    if name not in _REGISTRY:
        _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        if not _REGISTRY:
            raise SourceError("no source adapters are registered: install rs4m (pip install -e .) so that its "
                              "built-in adapters' entry point exists") from None
        valid = ", ".join(sorted(_REGISTRY))
        raise SourceError(f"unknown source adapter {name!r}; valid names: {valid}") from None
