"""Open anything GDAL opens (GeoTIFF/COG, JPEG 2000, JPEG, PNG, WebP, ...) by content and read RGB windows.

* Readers are chosen by GDAL from the file's bytes, never from its extension.
* Bands: 3 → RGB; 4 → the first three, with alpha (if band 4 is alpha) as the valid mask; a palette band →
  its colours; per-band files (``SceneRef.band_paths``) are stacked; more bands → those the adapter or the
  colour interpretation / band descriptions mark red, green, blue, else a :class:`BadInput`; 1 or 2 bands
  alone are not RGB.
* Other dtypes than uint8 are stretched to uint8 per band between the 2nd and 98th percentile of the scene,
  computed once from a decimated read (nodata and NaN ignored), so a huge scene never loads whole.
* Windowed reads for tiled/striped rasters. Formats that decode whole (PNG, JPEG, GIF, BMP, WebP) are refused
  above ``max_pixels`` before any pixel is allocated, and otherwise decoded once and sliced.
* Footprints: window bounds → EPSG:4326 with densified edges; None without georeference or when the
  transform fails (e.g. off the Earth's disk in a geostationary view). Never a crash.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.warp
import shapely
import simplejpeg
from PIL import Image
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from rs4m.config import DEFAULT_MAX_PIXELS
from rs4m.errors import BadInput
from rs4m_tools.adapters.base import SceneRef

ARCHIVES = {".zip": "/vsizip/", ".tar": "/vsitar/", ".tgz": "/vsitar/", ".tar.gz": "/vsitar/"}
WHOLE_DECODE_DRIVERS = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}
STRETCH_SAMPLE_PX = 1024
#: JPEG warnings ("premature end of JPEG file") become errors, so a truncated JPEG is an error row
GDAL_ENV = {"GDAL_ERROR_ON_LIBJPEG_WARNING": "TRUE", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_PAM_ENABLED": "NO"}
_WGS84_M_PER_DEG = 111_320.0


def gdal_path(root: Path, rel: str) -> str:
    """The path GDAL opens for scene path ``rel``: archive members (``a.zip/x/y.tif``) become
    ``/vsizip/`` or ``/vsitar/`` paths and are read in place; other paths are joined to ``root``."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        head = "/".join(parts[:i])
        lower = head.lower()
        for suffix, prefix in ARCHIVES.items():
            if lower.endswith(suffix) and (Path(root) / head).is_file():
                return f"{prefix}{Path(root) / head}/{'/'.join(parts[i:])}"
    return str(Path(root) / rel)


@dataclass(frozen=True)
class SceneInfo:
    """Facts of an opened scene (sizes in pixels, ``gsd_m`` in metres)."""

    width: int
    height: int
    bands: int
    dtype: str
    driver: str
    crs: str | None
    transform: tuple[float, ...] | None
    gsd_m: float | None
    footprint: shapely.Polygon | None
    nodata: float | None


def _describe_open_error(path: str, err: Exception) -> BadInput:
    if not path.startswith("/vsi"):
        if not os.path.exists(path):
            return BadInput("file not found", str(err))
        if os.path.getsize(path) == 0:
            return BadInput("empty file (0 bytes)", str(err))
        if not os.access(path, os.R_OK):
            return BadInput("permission denied: the file cannot be read", str(err))
    text = str(err)
    if "not recognized as being in a supported file format" in text or "not recognised" in text:
        return BadInput("not an image file (no reader recognises its contents)", text)
    return BadInput("truncated or corrupt image: it cannot be opened", text)


def _open(path: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as err:
        raise _describe_open_error(path, err) from None


def _rgb_indexes(ds, ref: SceneRef) -> tuple[tuple[int, ...], int | None, bool]:
    """(band indexes of R, G, B; alpha band index or None; palette?) of a single-file scene."""
    n, interp = ds.count, ds.colorinterp
    if ref.rgb_bands:
        if max(ref.rgb_bands) > n:
            raise BadInput(f"the adapter names bands {ref.rgb_bands} but the file has {n} bands")
        return tuple(ref.rgb_bands), None, False
    if n == 1 and interp[0] == ColorInterp.palette:
        return (1,), None, True
    if n in (1, 2):
        return _named_rgb(ds) or _not_rgb(n, "a single grey band is not an RGB image" if n == 1 else
                                          "2 bands (grey and alpha?) are not an RGB image")
    if n == 3:
        return (1, 2, 3), None, False
    if n == 4:
        alpha = 4 if interp[3] == ColorInterp.alpha else None
        return (1, 2, 3), alpha, False
    return _named_rgb(ds) or _not_rgb(n, f"{n} bands, none marked red/green/blue")


def _not_rgb(n: int, reason: str):
    raise BadInput(reason, f"{n} bands; name the RGB bands in the adapter (rgb_bands) to use this file")


def _named_rgb(ds) -> tuple[tuple[int, ...], None, bool] | None:
    """Bands marked red/green/blue by colour interpretation, else by description."""
    found = {}
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue):
            found.setdefault(ci.name, i)
    if len(found) < 3:
        found = {}
        for i, desc in enumerate(ds.descriptions, start=1):
            if desc and desc.strip().lower() in ("red", "green", "blue"):
                found.setdefault(desc.strip().lower(), i)
    if len(found) == 3:
        return (found["red"], found["green"], found["blue"]), None, False
    return None


def _crs_string(crs) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _gsd_m(ds) -> float | None:
    if ds.crs is None or ds.transform.is_identity:
        return None
    t = ds.transform
    res = math.hypot(t.a, t.d)
    if ds.crs.is_geographic:
        lat = (ds.bounds.top + ds.bounds.bottom) / 2.0
        return float(res * _WGS84_M_PER_DEG * math.cos(math.radians(max(-89.9, min(89.9, lat)))))
    factor = ds.crs.linear_units_factor[1] if ds.crs.linear_units else 1.0
    return float(res * factor)


def footprint(crs, transform, x: float, y: float, w: float, h: float, densify: int = 8) -> shapely.Polygon | None:
    """EPSG:4326 (lon/lat) polygon of the pixel window, edges densified; None when it cannot be computed."""
    if crs is None or transform is None or transform.is_identity:
        return None
    t = np.linspace(0.0, 1.0, densify + 1)[:-1]
    cols = np.concatenate([x + w * t, np.full_like(t, x + w), x + w * (1 - t), np.full_like(t, x)])
    rows = np.concatenate([np.full_like(t, y), y + h * t, np.full_like(t, y + h), y + h * (1 - t)])
    xs, ys = transform @ (cols, rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if crs.to_epsg() == 4326:
                lon, lat = np.asarray(xs), np.asarray(ys)
            else:
                lon, lat = (np.asarray(v) for v in rasterio.warp.transform(crs, "EPSG:4326", xs, ys))
    except Exception:  # noqa: BLE001 - any projection failure means "footprint unknown", never a crash
        return None
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        return None
    poly = shapely.Polygon(np.column_stack([lon, lat]))
    return poly if poly.is_valid and poly.area > 0 else None


def _decode_whole_file(path: str, driver: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode a whole-decode image with simplejpeg (JPEG) or Pillow, which — unlike GDAL's PNG driver, which
    zero-fills silently — report truncation. Returns (bands uint8 [3, h, w], valid [h, w]), or None when
    Pillow cannot represent the image (16-bit, very large) and GDAL should read it."""
    with open(path, "rb") as fh:
        data = fh.read()
    if driver == "JPEG":
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "RGB"):
                rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
                return rgb.transpose(2, 0, 1), np.ones(rgb.shape[:2], bool)
        except ValueError as err:
            raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("L", "LA", "1", "I", "F", "I;16", "I;16B", "I;16L"):
                if mode in ("I", "F") or mode.startswith("I;16"):
                    return None
                raise BadInput("a single grey band is not an RGB image" if mode != "LA" else
                               "2 bands (grey and alpha?) are not an RGB image", f"image mode {mode}")
            if mode in ("P", "PA"):
                img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
            elif mode not in ("RGB", "RGBA"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    except Image.DecompressionBombError:
        return None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None
    valid = arr[..., 3] > 0 if arr.shape[-1] == 4 else np.ones(arr.shape[:2], bool)
    return np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1)), valid


class SceneReader:
    """An opened scene; use :func:`open_scene`. Reads RGB uint8 windows and their valid masks."""

    def __init__(self, root: Path, ref: SceneRef, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._env = rasterio.Env(**GDAL_ENV)
        self._env.__enter__()
        self._datasets = []
        try:
            self._open(Path(root), ref, max_pixels)
        except BaseException:
            self.close()
            raise
        self._whole: tuple[np.ndarray, np.ndarray] | None = None
        self._stretch: np.ndarray | None = None

    def _open(self, root: Path, ref: SceneRef, max_pixels: int) -> None:
        paths = [gdal_path(root, p) for p in ref.band_paths] or [gdal_path(root, ref.scene_path)]
        for p in paths:
            self._datasets.append(_open(p))
        first = self._datasets[0]
        if ref.band_paths:
            if len(ref.band_paths) != 3:
                raise BadInput(f"{len(ref.band_paths)} band files given; need red, green, blue")
            for ds in self._datasets[1:]:
                if (ds.width, ds.height) != (first.width, first.height) or ds.transform != first.transform:
                    raise BadInput("band files differ in size or georeference and cannot be stacked",
                                   f"{(first.width, first.height)} vs {(ds.width, ds.height)}")
            self._plan = [(ds, (1,)) for ds in self._datasets]
            self._alpha, self._palette = None, False
        else:
            indexes, self._alpha, self._palette = _rgb_indexes(first, ref)
            self._plan = [(first, indexes)]
        self.whole_decode = first.driver in WHOLE_DECODE_DRIVERS
        # plain whole-decode files are decoded by simplejpeg / Pillow, which detect truncation
        plain = self.whole_decode and not paths[0].startswith("/vsi") and not ref.rgb_bands and not ref.band_paths
        self._whole_path = paths[0] if plain else None
        if self.whole_decode and first.width * first.height > max_pixels:
            raise BadInput(f"image of {first.width}x{first.height} pixels is over the --max-pixels limit "
                           f"({max_pixels}) for formats that decode whole (decompression-bomb guard)")
        dtype = first.dtypes[0]
        self.info = SceneInfo(
            width=first.width, height=first.height, bands=len(paths) if ref.band_paths else first.count,
            dtype=dtype, driver=first.driver, crs=_crs_string(first.crs),
            transform=tuple(first.transform)[:6] if first.crs is not None else None, gsd_m=_gsd_m(first),
            footprint=footprint(first.crs, first.transform, 0, 0, first.width, first.height),
            nodata=first.nodata)

    def _read_raw(self, window: Window | None, out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Bands [3, h, w] in the source dtype (or uint8 palette colours) and valid mask [h, w]."""
        arrays, valid = [], None
        kw = {"window": window}
        if out_shape:
            kw.update(out_shape=out_shape, resampling=Resampling.bilinear)
        for ds, indexes in self._plan:
            data = ds.read(indexes, **kw) if not out_shape else ds.read(indexes, out_shape=(len(indexes), *out_shape),
                                                                          window=window, resampling=Resampling.bilinear)
            arrays.append(data)
            if not all(MaskFlags.all_valid in f for f in (ds.mask_flag_enums[i - 1] for i in indexes)):
                m = ds.read_masks(indexes[0], **kw) > 0
                valid = m if valid is None else valid & m
        bands = np.concatenate(arrays, axis=0)
        if self._palette:
            lut = np.zeros((256, 3), np.uint8)
            for k, colour in self._plan[0][0].colormap(1).items():
                lut[k] = colour[:3]
            bands = lut[bands[0]].transpose(2, 0, 1)
        if self._alpha is not None:
            alpha = self._plan[0][0].read(self._alpha, **kw) > 0
            valid = alpha if valid is None else valid & alpha
        if valid is None:
            valid = np.ones(bands.shape[1:], bool)
        if bands.dtype.kind == "f":
            valid = valid & np.isfinite(bands).all(axis=0)
        return bands, valid

    def _stretch_params(self) -> np.ndarray:
        """Per-band (2nd, 98th) percentiles from a decimated read of the whole scene → float64 [3, 2]."""
        if self._stretch is None:
            w, h = self.info.width, self.info.height
            scale = min(1.0, STRETCH_SAMPLE_PX / max(w, h))
            shape = (max(1, round(h * scale)), max(1, round(w * scale)))
            bands, valid = self._read_raw(None, shape if scale < 1 else None)
            params = np.zeros((3, 2))
            for b in range(3):
                values = bands[b][valid].astype(np.float64)
                if values.size:
                    params[b] = np.percentile(values, [2, 98])
            self._stretch = params
        return self._stretch

    def _to_uint8(self, bands: np.ndarray) -> np.ndarray:
        if bands.dtype == np.uint8:
            return bands
        params = self._stretch_params()
        lo, hi = params[:, :1, None], params[:, 1:, None]
        scaled = (bands.astype(np.float32) - lo) * (255.0 / np.maximum(hi - lo, 1e-12))
        return np.nan_to_num(np.clip(scaled, 0, 255), nan=0.0).astype(np.uint8)

    def read_window(self, x: int, y: int, w: int, h: int,
                    out_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 ``[h, w, 3]`` (or ``out_size`` (width, height)) and valid mask bool of the same size."""
        try:
            if self.whole_decode:
                if self._whole is None:
                    decoded = None
                    if self._whole_path is not None:
                        decoded = _decode_whole_file(self._whole_path, self.info.driver)
                    self._whole = decoded or self._read_raw(None, None)
                bands = self._whole[0][:, y:y + h, x:x + w]
                valid = self._whole[1][y:y + h, x:x + w]
            else:
                bands, valid = self._read_raw(Window(x, y, w, h), None)
        except (RasterioError, OSError) as err:
            detail = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
            raise BadInput("truncated or corrupt image: reading its pixels failed", detail) from None
        rgb = np.ascontiguousarray(self._to_uint8(bands).transpose(1, 2, 0))
        if out_size and (rgb.shape[1], rgb.shape[0]) != tuple(out_size):
            rgb = np.asarray(Image.fromarray(rgb).resize(out_size, Image.Resampling.BILINEAR))
            valid = np.asarray(Image.fromarray(valid).resize(out_size, Image.Resampling.NEAREST))
        return rgb, valid

    def window_footprint(self, x: int, y: int, w: int, h: int) -> shapely.Polygon | None:
        """EPSG:4326 footprint of a window, or None."""
        ds = self._datasets[0]
        return footprint(ds.crs, ds.transform, x, y, w, h)

    def close(self) -> None:
        for ds in self._datasets:
            ds.close()
        self._datasets = []
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None

    def __enter__(self) -> "SceneReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_scene(root: Path, ref: SceneRef, max_pixels: int = DEFAULT_MAX_PIXELS) -> SceneReader:
    """Open a scene for windowed RGB reads; raises :class:`BadInput` for a file that is not usable."""
    return SceneReader(root, ref, max_pixels)
