"""``folder``: every file under a folder, recursively — the generic adapter for data of any layout.

Files are enumerated in sorted order; obvious sidecar and archive files are skipped by name (see
:data:`SKIP_SUFFIXES`); everything else is handed to the reader, which decides by content, so a text file
named ``.png`` still becomes an error row with a reason rather than disappearing. Symlinked folders are
followed once: a symlink loop, and a folder that cannot be listed, are scan problems, never hangs.
The source name is ``folder/<base name of the root>`` so that two folders stay apart.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterator

from rs4m_tools.adapters.base import SceneRef, ScanProblem, SourceAdapter, register_source

#: never rasters: metadata, annotations, GDAL sidecars, archives (use a dataset adapter to read archives)
SKIP_SUFFIXES = (".xml", ".txt", ".json", ".geojson", ".csv", ".md", ".aux.xml", ".ovr", ".msk", ".prj", ".tfw",
                 ".jgw", ".pgw", ".wld", ".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".py", ".yaml", ".yml",
                 ".html", ".pdf", ".shp", ".shx", ".dbf", ".cpg", ".qml", ".parquet")


@register_source
class Folder(SourceAdapter):
    name = "folder"
    title = "Any folder of raster files (generic)"
    licence = "unknown"
    sensor = "any"
    tiling = "tile"
    layout_notes = ("Every file under the folder except sidecars/archives by name; the reader decides by "
                    "content. options.licence sets the licence; glob filters file names (e.g. '*.tif').")

    def source_name(self, root: Path) -> str:
        return f"folder/{Path(root).resolve().name}"

    def scenes(self, root: Path, splits: tuple[str, ...] | None = None) -> Iterator[SceneRef | ScanProblem]:
        root = Path(root)
        yield from self._walk(root, root, set())

    def _walk(self, root: Path, folder: Path, seen: set[tuple[int, int]]) -> Iterator[SceneRef | ScanProblem]:
        rel = folder.relative_to(root).as_posix()
        try:
            st = folder.stat()
        except OSError as err:
            yield ScanProblem(rel, "folder cannot be read", str(err))
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            yield ScanProblem(rel, "symlink loop: this folder links back to a folder already scanned")
            return
        seen = seen | {key}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            yield ScanProblem(rel or ".", "folder cannot be listed (permission denied?)", str(err))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError as err:
                yield ScanProblem(path.relative_to(root).as_posix(), "entry cannot be read", str(err))
                continue
            if is_dir:
                yield from self._walk(root, path, seen)
            elif self._wanted(entry.name):
                if entry.is_symlink() and not path.exists():
                    yield ScanProblem(path.relative_to(root).as_posix(), "broken symlink")
                    continue
                yield SceneRef(scene_path=path.relative_to(root).as_posix())

    def _wanted(self, name: str) -> bool:
        lower = name.lower()
        if name.startswith(".") or lower.endswith(SKIP_SUFFIXES):
            return False
        return self.glob is None or fnmatch.fnmatch(name, self.glob)
