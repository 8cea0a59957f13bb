"""Aerial-like source folders the tests write themselves, in the shapes real sources come in (no shared data).

:func:`write_landsat_like` writes georeferenced GeoTIFFs: a scene with nodata corners (the tilted footprint of a
satellite path), its four quadrants overlapping by one pixel (geo duplicates of the scene's tiles, and an exact
duplicate where a quadrant's tile grid meets the scene's), a copy at a tenth of the resolution (one small tile at
ten times the GSD) and, elsewhere, a 16-bit scene whose blue band spans a narrow range.
:func:`write_dota_like` writes PNG scenes without georeference, like DOTA's images.

Each returns the :class:`Scene` it wrote, pixels included, so that tests derive what a build must make of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, ImageDraw

from rs4m.demo import synthetic_scene

#: the main scene: size, CRS, pixel size and top-left corner (UTM 18N, about 25.5° N)
MAIN_SIZE = (600, 520)
CRS = "EPSG:32618"
GSD_M = 300.0
ORIGIN = (101985.0, 2826915.0)
#: the main scene's valid area: a tilted quadrilateral, corners as fractions of (width, height); chosen so that
#: 256 px grid tiles of the scene and its quadrants fall within 1 % of a 50 % nodata limit on either side
FOOTPRINT = ((0.38, 0.0), (1.0, 0.38), (0.64, 1.0), (0.0, 0.74))


@dataclass(frozen=True)
class Scene:
    """A written scene: its file, pixels ``[bands, H, W]``, georeference (None without) and nodata value."""

    path: Path
    data: np.ndarray
    crs: str | None = None
    transform: Affine | None = None
    nodata: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """``[H, W]`` bool: False where every band holds the nodata value."""
        if self.nodata is None:
            return np.ones(self.data.shape[1:], bool)
        return ~(self.data == self.nodata).all(axis=0)

    def nodata_frac(self, x: int, y: int, width: int, height: int) -> float:
        """The fraction of nodata pixels in a window."""
        return 1.0 - float(self.valid[y:y + height, x:x + width].mean())


def write_scene(path: Path, data: np.ndarray, crs: str | None = None, transform: Affine | None = None,
                nodata: int | None = None) -> Scene:
    """Write ``data`` ``[bands, H, W]`` as a GeoTIFF (with ``crs``) or, for a ``.png`` path, a PNG."""
    if path.suffix == ".png":
        Image.fromarray(np.ascontiguousarray(data.transpose(1, 2, 0))).save(path)
        return Scene(path, data)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return Scene(path, data, crs, transform, nodata)


def aerial(seed: int, width: int, height: int, kind: str = "mixed") -> np.ndarray:
    """``[3, H, W]`` uint8 aerial-looking pixels."""
    return np.asarray(synthetic_scene(np.random.default_rng(seed), width, height, kind)).transpose(2, 0, 1)


def _tilted_footprint(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` with zeros (nodata) outside :data:`FOOTPRINT` and no all-zero pixel inside it."""
    height, width = rgb.shape[1:]
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon([(fx * width, fy * height) for fx, fy in FOOTPRINT], fill=1)
    inside = np.asarray(mask, bool)
    return np.where(inside, np.maximum(rgb, 1), 0).astype(np.uint8)


def write_landsat_like(folder: Path, seed: int = 0) -> list[Scene]:
    """The scene ``scene.tif``, its quadrants ``q1.tif``…``q4.tif``, ``scene-tenth.tif`` and ``uint16.tif``."""
    folder.mkdir(parents=True)
    width, height = MAIN_SIZE
    full = _tilted_footprint(aerial(seed, width, height))
    at = Affine.translation(*ORIGIN) @ Affine.scale(GSD_M, -GSD_M)
    scenes = [write_scene(folder / "scene.tif", full, CRS, at, nodata=0)]
    cx, cy = width // 2, height // 2
    for k, (x0, y0, x1, y1) in enumerate(((0, 0, cx + 1, cy + 1), (cx, 0, width, cy + 1),
                                          (0, cy, cx + 1, height), (cx, cy, width, height)), start=1):
        part = np.ascontiguousarray(full[:, y0:y1, x0:x1])
        scenes.append(write_scene(folder / f"q{k}.tif", part, CRS, at @ Affine.translation(x0, y0), nodata=0))
    small = Image.fromarray(full.transpose(1, 2, 0)).resize((width // 10, height // 10), Image.Resampling.BOX)
    scale = Affine.scale(width / small.width, height / small.height)
    scenes.append(write_scene(folder / "scene-tenth.tif", np.asarray(small).transpose(2, 0, 1), CRS, at @ scale,
                              nodata=0))
    deep = aerial(seed + 1, 300, 280, "buildings").astype(np.uint16) * 16  # 12-bit range
    deep[2] = 1000 + deep[2] // 64  # a narrow band: 1000 to 1063
    elsewhere = Affine.translation(ORIGIN[0] + 400_000, ORIGIN[1] + 300_000) @ Affine.scale(30.0, -30.0)
    scenes.append(write_scene(folder / "uint16.tif", deep, CRS, elsewhere))
    return scenes


def write_dota_like(folder: Path, seed: int = 100) -> list[Scene]:
    """Two PNG scenes without georeference, ``P0001.png`` and ``P0002.png``."""
    folder.mkdir(parents=True)
    return [write_scene(folder / "P0001.png", aerial(seed, 560, 450, "buildings")),
            write_scene(folder / "P0002.png", aerial(seed + 1, 420, 380, "agricultural"))]
