"""``bandstack``: scenes stored as one single-band file per band (Landsat, Sentinel-2 style), stacked to RGB.

Every folder under the root that holds a red, a green and a blue band file is one scene. Band files are
recognised by a band token in the file name: by default ``B4``/``B04`` (red), ``B3``/``B03`` (green) and
``B2``/``B02`` (blue), which is right for Landsat 8/9 and Sentinel-2. For Landsat 4–7 (red is B3) pass
``options = {bands = ["B3", "B2", "B1"]}`` in the recipe. The scene path is the folder (relative to the root).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from rs4m.sources.base import SceneRef, ScanProblem, SourceAdapter, register_source


def band_pattern(token: str) -> re.Pattern:
    """Regex matching a band token (``B4`` also matches ``B04``) between separators in a file name."""
    m = re.fullmatch(r"([A-Za-z]+)0*(\d+[A-Za-z]?)", token)
    if not m:
        raise ValueError(f"band token {token!r} should look like B4 or B04")
    return re.compile(rf"(?:^|[_\-.]){m.group(1)}0*{m.group(2)}(?=[_\-.])", re.IGNORECASE)


@register_source
class BandStack(SourceAdapter):
    name = "bandstack"
    title = "Per-band scenes stacked to RGB (Landsat / Sentinel-2 style folders)"
    licence = "unknown"
    sensor = "multispectral satellite (per-band files)"
    bands = "RGB from separate band files"
    tiling = "tile"
    layout_notes = ("One scene per folder; band files found by name token (default B4/B3/B2, which also "
                    "matches B04/B03/B02). Set options.bands for other sensors and options.licence.")

    def source_name(self, root: Path) -> str:
        return f"bandstack/{Path(root).resolve().name}"

    def scenes(self, root: Path, splits: tuple[str, ...] | None = None) -> Iterator[SceneRef | ScanProblem]:
        patterns = [band_pattern(t) for t in self.options.get("bands", ["B4", "B3", "B2"])]
        root = Path(root)
        for folder, _dirs, files in sorted(os.walk(root)):
            picked = []
            for pat in patterns:
                hits = sorted(f for f in files if pat.search(f) and not f.endswith((".xml", ".ovr", ".aux")))
                picked.append(hits)
            if not all(picked):
                continue
            rel = Path(folder).relative_to(root).as_posix()
            if any(len(h) > 1 for h in picked):
                yield ScanProblem(rel or ".", "more than one file matches a band; set options.bands",
                                  f"matches: {picked}")
                continue
            band_paths = tuple((Path(rel) / h[0]).as_posix() if rel else h[0] for h in picked)
            yield SceneRef(scene_path=rel or ".", band_paths=band_paths)
