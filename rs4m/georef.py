"""Georeference facts of an opened rasterio dataset: CRS string, GSD in metres, EPSG:4326 footprints.

Pure functions of a dataset's CRS and transform; nothing here reads pixels.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import rasterio.warp
import shapely
from rasterio.crs import CRS

_WGS84_A_M = 6_378_137.0
_WGS84_E2 = 0.00669437999014


@functools.lru_cache(maxsize=1)
def _wgs84() -> CRS:
    return CRS.from_epsg(4326)


def crs_string(crs) -> str | None:
    """"EPSG:<code>" when the CRS has one, else its WKT; None for no CRS."""
    return None if crs is None else _identify(crs.to_wkt())


@functools.lru_cache(maxsize=256)
def _identify(wkt: str) -> str:
    # Looking a custom CRS up in the EPSG database takes ~30 ms; the scenes of a dataset share a few CRSs.
    epsg = CRS.from_wkt(wkt).to_epsg()
    return f"EPSG:{epsg}" if epsg else wkt


def is_georeferenced(ds) -> bool:
    """Whether a dataset has a CRS and a geotransform (GCP-only rasters count as not georeferenced)."""
    return ds.crs is not None and not ds.transform.is_identity


def gsd_m(ds) -> float | None:
    """Pixel x size in metres; geographic CRSs at the centre latitude (WGS84 radius of the parallel)."""
    if not is_georeferenced(ds):
        return None
    t = ds.transform
    size = math.hypot(t.a, t.d)
    if ds.crs.is_geographic:
        lat = math.radians(max(-89.9, min(89.9, (ds.bounds.top + ds.bounds.bottom) / 2.0)))
        m_per_deg = math.radians(1.0) * _WGS84_A_M * math.cos(lat) / math.sqrt(1 - _WGS84_E2 * math.sin(lat) ** 2)
        return float(size * m_per_deg)
    try:
        return float(size * ds.crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without known linear units: GSD unknown rather than wrong
        return None


def footprint(crs, transform, x: float, y: float, w: float, h: float, densify: int = 8) -> shapely.Polygon | None:
    """EPSG:4326 (lon, lat) polygon of the pixel window (x, y, w, h) under ``transform`` (an Affine) in ``crs``.

    Each edge gets ``densify`` points, so curved edges of a reprojected window are followed. None when not
    georeferenced or when any point cannot be transformed (non-finite result, e.g. off the Earth's disk).
    """
    if crs is None or transform is None or transform.is_identity:
        return None
    t = np.linspace(0.0, 1.0, densify + 1)[:-1]
    cols = np.concatenate([x + w * t, np.full_like(t, x + w), x + w * (1 - t), np.full_like(t, x)])
    rows = np.concatenate([np.full_like(t, y), y + h * t, np.full_like(t, y + h), y + h * (1 - t)])
    xs, ys = transform @ (cols, rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # always transform: asking a custom CRS whether it is EPSG:4326 costs more than the transform
            lon, lat = (np.asarray(v, float) for v in rasterio.warp.transform(crs, _wgs84(), xs, ys))
    except Exception:  # noqa: BLE001 - any projection failure means "footprint unknown", never a crash
        return None
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    poly = shapely.Polygon(np.column_stack([lon, lat]))
    return poly if poly.is_valid and poly.area > 0 else None
