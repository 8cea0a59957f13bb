"""``folder``: every file under a folder, recursively — the generic adapter for data of any layout.

Files are enumerated in sorted path order. Obvious sidecar and archive files are skipped by name (see
:data:`SKIP_SUFFIXES`: metadata, annotations, GDAL sidecars, world files, shapefile parts, archives — use a
dataset adapter to read images inside archives); hidden files and folders (``.name``, ``__MACOSX``) too.
Everything else is handed to the reader, which decides by content, so a text file named ``.png`` still becomes
an error row with a reason rather than disappearing. Symlinks are followed: a symlink loop, a folder that cannot
be listed, a broken symlink and a file name that is not valid UTF-8 are scan problems, never hangs or crashes.

``glob`` (from the recipe) keeps only matching files: matched against the file name when it holds no ``/``
(``*.tif``), else against the path relative to the folder (``**/images/*.png``); case-insensitive, with
``**`` and ``{a,b}`` as in :mod:`rs4m.sources.layouts`. The source name is ``folder/<base name of
the root>`` so that two folders stay apart; the licence is "unknown" unless ``options.licence`` gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from rs4m.sources.layouts import compile_globs, walk_files
from rs4m.sources.base import SceneRef, ScanProblem, SourceAdapter, register_source

#: never rasters: metadata, annotations, GDAL sidecars (.aux.xml is covered by .xml), world files, shapefile
#: parts, documents, archives
SKIP_SUFFIXES = (".xml", ".txt", ".json", ".geojson", ".csv", ".md", ".ovr", ".msk", ".prj", ".tfw", ".jgw",
                 ".pgw", ".wld", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".py", ".yaml",
                 ".yml", ".html", ".pdf", ".shp", ".shx", ".dbf", ".cpg", ".qml", ".parquet", ".db", ".ini")


@register_source
class Folder(SourceAdapter):
    name = "folder"
    title = "Any folder of raster files (generic)"
    licence = "unknown"
    sensor = "any"
    tiling = "tile"
    layout_notes = ("Every file under the folder except sidecars/archives by name; the reader decides by "
                    "content. options.licence sets the licence; glob filters files (e.g. '*.tif').")

    def source_name(self, root: Path) -> str:
        return f"folder/{Path(root).resolve().name}"

    def scenes(self, root: Path, splits: tuple[str, ...] | None = None) -> Iterator[SceneRef | ScanProblem]:
        """Every non-sidecar file under ``root`` as a scene (split None), and the problems met; sorted by path."""
        wanted = self._wanted()
        items = [SceneRef(scene_path=i) if isinstance(i, str) else i for i in walk_files(Path(root), wanted)]
        yield from sorted(items, key=lambda i: i.scene_path if isinstance(i, SceneRef) else i.path)

    def _wanted(self):
        pattern = compile_globs([self.glob]) if self.glob else None
        on_path = bool(self.glob and "/" in self.glob)

        def wanted(rel: str) -> bool:
            name = rel.rpartition("/")[2]
            if name.lower().endswith(SKIP_SUFFIXES):
                return False
            return pattern is None or pattern.fullmatch(rel if on_path else name) is not None

        return wanted
