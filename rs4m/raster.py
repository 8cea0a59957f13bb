"""Open anything GDAL opens (GeoTIFF/COG, JPEG 2000, JPEG, PNG, WebP, ...) by content and read RGB windows.

* The reader is chosen by GDAL from the file's bytes, never from its name (a ``.jp2`` that is a GeoTIFF is
  read as a GeoTIFF). Members of .zip / .tar / .tar.gz / .tgz archives are read in place (:func:`gdal_path`).
* Bands: 3 → RGB; 4 → the first three, band 4 the valid mask when it is alpha; a palette band → its colours;
  per-band files (``SceneRef.band_paths``: red, green, blue) are stacked; more than 4 bands → those the adapter
  (``SceneRef.rgb_bands``), the colour interpretation or the band descriptions mark red, green, blue, else a
  :class:`BadInput`; 1 or 2 bands alone are not RGB, except a single grey band under ``grey="replicate"``
  (read as R = G = B; the source's policy, :attr:`SourceAdapter.grey`).
* Other dtypes than uint8 are stretched to uint8 per band between the 2nd and 98th percentile of the scene,
  computed once per scene (nodata and NaN ignored) from a decimated read (≤ 1024 px on the long side) of scenes
  up to 4 MP or with overviews, and from a lattice of 16 × 16 small block-aligned windows in larger scenes
  without overviews (a decimated read would decode every block of a 30000² file just for statistics).
* Valid mask: False where nodata (all bands equal to nodata, GDAL's dataset-mask rule), NaN, alpha 0 or a GDAL
  mask (internal / .msk) says so.
* Before anything opens a scene file (GDAL or Python), it must be a regular file (symlinks followed; the
  sidecars GDAL may open beside it too): a FIFO, socket or device is a :class:`BadInput`, never a hang.
* Tiled and striped rasters are read window by window and refused above ``max_scene_pixels`` (default
  :data:`DEFAULT_MAX_SCENE_PIXELS`, 4·10⁹: a 63000² scene) before any tiling; :meth:`SceneReader.window_is_empty`
  tells, from the TIFF's block table and without decoding, a window whose blocks are all absent (a sparse
  file), so a tiny file declaring a huge raster costs no reads. Formats that can only be decoded whole (PNG, JPEG, GIF,
  BMP, WebP), and rasters whose single compressed block is that large, are refused above ``max_pixels`` with a
  :class:`BadInput` before any pixel is allocated (the decompression-bomb guard); below it they are decoded once
  (JPEG with simplejpeg, the others with Pillow, which report truncation that GDAL's PNG driver zero-fills
  silently) and windows are read from the decoded image as the decoder left it, with no full-size copy
  (JPEG: 3 bytes a pixel; Pillow's formats: 4, 5 for a palette PNG; no mask is kept when every pixel is valid).
  That peak, plus the file's bytes, is checked against ``max_scene_bytes`` (default 4 GiB) before decoding. A PNG
  of at least 64 MP whose windows the caller reads in top-row order (``window_rows``, the tile stage) is decoded row
  by row instead (:mod:`rs4m.png_stream`, the same pixels), holding only the band of rows those windows need, and
  the budget is checked against that band. JPEG stays whole-decoded: GDAL could read it in strips, but its libjpeg
  decode differs from simplejpeg's by 1 in a few samples, which would change tiles. The default,
  ``DEFAULT_MAX_PIXELS`` = 400 MP (1.2 GB as RGB), is above any single optical RS image we know of (a 20000² scene) and
  small enough for a worker's memory.
* Archive members whose name the archive holds twice are refused (GDAL and Python may read different ones),
  every window read is checked against the size it must have, and whole-decoded bytes are bounded by what an
  image of the declared size can need (:func:`rs4m.whole_decode.read_bytes`).
* Multi-page TIFFs and animated GIFs: only the first page is read; :meth:`SceneReader.page_count` says how many
  there are.
* float64 rasters whose statistics lie beyond the float32 range are stretched in float64.
* Footprints: window bounds → EPSG:4326 (lon, lat) with densified edges; None without georeference or where the
  transform fails (e.g. off the Earth's disk in a geostationary view). Never a crash.
* Every failure to open or read becomes a :class:`BadInput` whose reason a person understands and whose detail
  carries GDAL's message.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from PIL import Image
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from rs4m import png_stream
from rs4m.archive import gdal_member_path
from rs4m.config import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SCENE_BYTES, DEFAULT_MAX_SCENE_PIXELS
from rs4m.errors import BadInput
from rs4m.georef import crs_string, footprint, gsd_m, is_georeferenced
from rs4m.sources.base import SceneRef
from rs4m.whole_decode import (
    DECODED_BYTES_PER_PIXEL,
    DecodedImage,
    check_member,
    check_regular,
    decode_whole,
    frame_count,
    open_stream,
    read_bytes,
    scene_file,
    split_archive,
)

__all__ = ["DEFAULT_MAX_PIXELS", "SceneInfo", "SceneReader", "footprint", "gdal_path", "open_scene"]

#: drivers that decode the whole image to read any part of it
WHOLE_DECODE_DRIVERS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})
STRETCH_PERCENTILES = (2.0, 98.0)
#: long side of the decimated read the stretch percentiles come from (scenes with overviews or ≤ 4 MP)
STRETCH_SAMPLE_PX = 1024
#: larger scenes without overviews: a lattice of N × N windows of PX pixels, each starting on a block boundary,
#: because a decimated read would decode every block of the file (the whole 30000² scene) for statistics
STRETCH_LATTICE_N, STRETCH_LATTICE_PX = 16, 64
#: files GDAL may open beside a scene (masks, overviews, world files): each must be a regular file if present
SIDECAR_SUFFIXES = (".msk", ".ovr", ".aux.xml", ".tfw", ".wld")
#: libjpeg warnings ("premature end of JPEG file" in a JPEG-compressed TIFF) become errors; no .aux.xml files
#: are written next to sources; opening a file does not list its folder
GDAL_ENV = {"GDAL_ERROR_ON_LIBJPEG_WARNING": "TRUE", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_PAM_ENABLED": "NO"}


def gdal_path(root: Path, rel: str) -> str:
    """The path GDAL opens for scene path ``rel`` (POSIX, relative to ``root``).

    ``a.zip/x/y.tif`` → ``/vsizip/ROOT/a.zip/x/y.tif``; tar members → ``/vsitar/``, the archive's kind read from
    its bytes (:func:`rs4m.archive.gdal_member_path`); anything else → ``ROOT/rel``. Archive members are read in
    place, never extracted; :class:`BadInput` for an archive GDAL cannot read in place.
    """
    split = split_archive(root, rel)
    if split is None:
        return str(Path(root) / rel)
    return gdal_member_path(*split)


@dataclass(frozen=True)
class SceneInfo:
    """Facts of an opened scene.

    Attributes:
        width, height: size in pixels. bands: band count of the source (3 for stacked per-band files).
        dtype: source data type ("uint8", "uint16", "float32", ...). driver: GDAL driver ("GTiff", "PNG", ...).
        crs: "EPSG:<code>" when the CRS has one, else its WKT; None when not georeferenced.
        transform: the geotransform in GDAL order (x0, pixel width, row rotation, y0, column rotation, pixel
            height); None when not georeferenced.
        gsd_m: ground sample distance in metres (the pixel's x size; for geographic CRSs at the scene's centre
            latitude on the WGS84 ellipsoid); None when not georeferenced.
        footprint: the whole scene's outline in EPSG:4326 (lon, lat), or None.
        nodata: the nodata value of the (first) source band, or None.
    """

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
    """A reason a person understands for a file GDAL cannot open."""
    text = str(err)
    if not path.startswith("/vsi"):
        if not os.path.exists(path):
            return BadInput("file not found", text)
        if os.path.isdir(path):
            return BadInput("not an image file (a folder)", text)
        if os.path.getsize(path) == 0:
            return BadInput("empty file (0 bytes)", text)
        if not os.access(path, os.R_OK):
            return BadInput("permission denied: the file cannot be read", text)
    if "Permission denied" in text:
        return BadInput("permission denied: the file cannot be read", text)
    if "not recognized as being in a supported file format" in text or "not recognised" in text:
        return BadInput("not an image file (no reader recognises its contents)", text)
    return BadInput("truncated or corrupt image: it cannot be opened", text)


def _open_dataset(path: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as err:
        raise _describe_open_error(path, err) from None


def _rgb_indexes(ds, ref: SceneRef, grey: str = "refuse") -> tuple[tuple[int, ...], int | None, bool]:
    """(1-based band indexes of R, G, B; alpha band index or None; palette?) of a single-file scene.

    ``grey="replicate"`` reads a single grey band (with or without an alpha band) as R = G = B.
    """
    n, interp = ds.count, ds.colorinterp
    if ref.rgb_bands:
        if len(ref.rgb_bands) != 3 or min(ref.rgb_bands) < 1 or max(ref.rgb_bands) > n:
            raise BadInput(f"the adapter names bands {tuple(ref.rgb_bands)} as RGB but the file has {n} bands")
        return tuple(ref.rgb_bands), None, False
    if n == 1 and interp[0] == ColorInterp.palette:
        return (1,), None, True
    if n == 3:
        return (1, 2, 3), None, False
    if n == 4:
        return (1, 2, 3), (4 if interp[3] == ColorInterp.alpha else None), False
    if grey == "replicate" and n == 1:
        return (1, 1, 1), None, False
    named = _named_rgb(ds)
    if named is not None:
        return named, None, False
    reason = {1: "1 band: a single grey band is not an RGB image",
              2: "2 bands (grey and alpha?) are not an RGB image"}.get(n, f"{n} bands, none marked red/green/blue")
    raise BadInput(reason, f"{n} bands; name the RGB bands in the adapter (rgb_bands) to use this file")


def _named_rgb(ds) -> tuple[int, int, int] | None:
    """Bands explicitly marked red/green/blue by colour interpretation, else by description ("red", ...)."""
    by_interp = {ci.name: i for i, ci in reversed(list(enumerate(ds.colorinterp, start=1)))
                 if ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)}
    by_name = {d.strip().lower(): i for i, d in reversed(list(enumerate(ds.descriptions, start=1)))
               if d and d.strip().lower() in ("red", "green", "blue")}
    for found in (by_interp, by_name):
        if len(found) == 3:
            return found["red"], found["green"], found["blue"]
    return None


def _nodata_invalid(band: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(band) if isinstance(nodata, float) and math.isnan(nodata) else band == nodata


def _lut_index(band: np.ndarray) -> np.ndarray:
    """Table index of 8/16-bit integers in value order: unsigned as is, signed with the sign bit flipped."""
    if band.dtype.kind == "u":
        return band
    unsigned = np.dtype(f"u{band.dtype.itemsize}")
    return band.view(unsigned) ^ unsigned.type(1 << (8 * band.dtype.itemsize - 1))


def _check_files(root: Path, rels: list[str]) -> None:
    """Every file GDAL or Python may open for the scene is a regular file, and no archive member is ambiguous."""
    for rel in rels:
        path = scene_file(root, rel)
        check_regular(path)
        if path == Path(root) / rel:
            _check_sidecars(path)
        check_member(root, rel)


def _check_sidecars(path: Path) -> None:
    """A sidecar that exists must be a regular file (GDAL would open a FIFO named ``x.tif.msk`` and block)."""
    for base in (str(path), str(path.with_suffix(""))):
        for suffix in SIDECAR_SUFFIXES:
            try:
                mode = os.stat(base + suffix).st_mode
            except OSError:  # absent or unreadable: GDAL does not use it either
                continue
            if not stat.S_ISREG(mode):
                raise BadInput(f"{Path(base + suffix).name}, a file GDAL reads beside the image, is not a regular "
                               "file", base + suffix)


def _guard_size(ds, max_scene_pixels: int) -> None:
    """Refuse, before any tiling, a raster that declares more than ``max_scene_pixels`` pixels."""
    if ds.width * ds.height > max_scene_pixels:
        raise BadInput(f"image of {ds.width}x{ds.height} pixels is over the max_scene_pixels limit "
                       f"({max_scene_pixels}); raise the limit in the recipe to tile it",
                       f"driver {ds.driver}, {ds.width * ds.height} pixels")


def _guard_bomb(ds, max_pixels: int) -> None:
    """Refuse, before any pixel is allocated, rasters that must be decoded whole and are over ``max_pixels``."""
    pixels = ds.width * ds.height
    if ds.driver in WHOLE_DECODE_DRIVERS and pixels > max_pixels:
        raise BadInput(f"image of {ds.width}x{ds.height} pixels is over the --max-pixels limit ({max_pixels}) for "
                       f"a format that can only be decoded whole (decompression-bomb guard)",
                       f"driver {ds.driver}, {pixels} pixels")
    block_h, block_w = ds.block_shapes[0]
    if block_h * block_w > max_pixels:
        raise BadInput(f"its single block of {block_w}x{block_h} pixels is over the --max-pixels limit "
                       f"({max_pixels}) and can only be decoded whole (decompression-bomb guard)",
                       f"driver {ds.driver}, block {block_w}x{block_h}")


def _page_count(ds, root: Path, rel: str, limit: int) -> int:
    """Pages of a multi-page TIFF (GDAL lists them as subdatasets) or frames of a GIF; 1 for the others."""
    if ds.driver == "GTiff":
        return max(1, len(ds.subdatasets))
    if ds.driver == "GIF":
        return frame_count(read_bytes(root, rel, limit))
    return 1


def _byte_limit(ds) -> int:
    """Most bytes a file of ``ds``'s declared size can need: twice its raw pixels, plus 16 MiB of metadata."""
    return 2 * ds.width * ds.height * ds.count * np.dtype(ds.dtypes[0]).itemsize + (16 << 20)


def _scene_info(ds, bands: int) -> SceneInfo:
    geo = is_georeferenced(ds)
    return SceneInfo(
        width=ds.width, height=ds.height, bands=bands, dtype=ds.dtypes[0], driver=ds.driver,
        crs=crs_string(ds.crs) if geo else None,
        transform=tuple(float(v) for v in ds.transform.to_gdal()) if geo else None,
        gsd_m=gsd_m(ds), footprint=footprint(ds.crs, ds.transform, 0, 0, ds.width, ds.height) if geo else None,
        nodata=ds.nodata)


def _lattice_windows(width: int, height: int, block_w: int, block_h: int) -> list[Window]:
    """``STRETCH_LATTICE_N``² windows of ``STRETCH_LATTICE_PX`` spread evenly, starts floored to block edges."""
    size_w, size_h = min(STRETCH_LATTICE_PX, width), min(STRETCH_LATTICE_PX, height)
    n = STRETCH_LATTICE_N

    def starts(length: int, size: int, block: int) -> list[int]:
        return sorted({int(i * (length - size) / (n - 1)) // block * block for i in range(n)})

    return [Window(x, y, size_w, size_h)
            for y in starts(height, size_h, block_h) for x in starts(width, size_w, block_w)]


def _palette_lut(ds) -> np.ndarray:
    """Colour table of band 1 as ``[entries, 4]`` uint8 RGBA (undefined entries transparent)."""
    cmap = ds.colormap(1)
    lut = np.zeros((max(256, max(cmap) + 1), 4), np.uint8)
    for k, colour in cmap.items():
        lut[k] = colour
    return lut


class SceneReader:
    """An opened scene (use :func:`open_scene`): :attr:`info` and windowed RGB uint8 reads with valid masks.

    The datasets stay open for the reader's life and the stretch parameters are computed once, so a window
    costs one GDAL read (or one slice of a whole-decoded image). Close it (or use it as a context manager).
    """

    info: SceneInfo
    #: True for formats decoded whole on the first read (PNG, JPEG, GIF, BMP, WebP)
    whole_decode: bool
    #: True when the scene is decoded row by row (a large PNG, see ``window_rows``): read windows in top-row order
    row_ordered: bool = False

    def __init__(self, root: Path, ref: SceneRef, max_pixels: int = DEFAULT_MAX_PIXELS,
                 grey: str = "refuse", max_scene_pixels: int = DEFAULT_MAX_SCENE_PIXELS,
                 max_scene_bytes: int | None = DEFAULT_MAX_SCENE_BYTES, window_rows: int = 0,
                 stream_min_pixels: int | None = None) -> None:
        self._root, self._ref, self._grey = Path(root), ref, grey
        #: True when a single grey band is read as R = G = B (``grey="replicate"``)
        self.grey_replicated = False
        self._datasets: list = []
        self._whole: DecodedImage | png_stream.StreamedImage | None = None
        self._stream: png_stream.PngHeader | None = None
        self._stretch: np.ndarray | None = None
        self._luts: np.ndarray | None = None
        try:
            with rasterio.Env(**GDAL_ENV):
                self._open(max_pixels, max_scene_pixels)
                if self.whole_decode:
                    self._stream = self._stream_header(window_rows, stream_min_pixels)
                    self.row_ordered = self._stream is not None
                    if max_scene_bytes is not None:
                        self._check_budget(max_scene_bytes, window_rows)
        except BaseException:
            self.close()
            raise

    def _open(self, max_pixels: int, max_scene_pixels: int) -> None:
        ref = self._ref
        if ref.band_paths and len(ref.band_paths) != 3:
            raise BadInput(f"{len(ref.band_paths)} band files given; a stacked scene needs red, green, blue")
        rels = list(ref.band_paths) or [ref.scene_path]
        _check_files(self._root, rels)
        for rel in rels:
            self._datasets.append(_open_dataset(gdal_path(self._root, rel)))
        first = self._datasets[0]
        self._alpha, self._lut = None, None
        if ref.band_paths:
            self._check_stackable(rels)
            self._plan: list[tuple[Any, tuple[int, ...]]] = [(ds, (1,)) for ds in self._datasets]
        else:
            indexes, self._alpha, palette = _rgb_indexes(first, ref, self._grey)
            self.grey_replicated = not ref.rgb_bands and indexes == (1, 1, 1)
            self._plan = [(first, indexes)]
            self._lut = _palette_lut(first) if palette else None
        _guard_bomb(first, max_pixels)
        _guard_size(first, max_scene_pixels)
        self.whole_decode = first.driver in WHOLE_DECODE_DRIVERS
        if not self.whole_decode and _stores_nothing(first):
            raise BadInput(f"the file declares {first.width}x{first.height} pixels but stores none of them "
                           "(every block is empty)", f"driver {first.driver}, a sparse file")
        self.info = _scene_info(first, 3 if ref.band_paths else first.count)

    def _check_stackable(self, rels: list[str]) -> None:
        first = self._datasets[0]
        for rel, ds in zip(rels[1:], self._datasets[1:], strict=True):
            if (ds.width, ds.height) != (first.width, first.height) or ds.transform != first.transform \
                    or ds.crs != first.crs:
                raise BadInput("band files differ in size or georeference and cannot be stacked",
                               f"{rels[0]}: {first.width}x{first.height} {first.crs} {tuple(first.transform)[:6]}; "
                               f"{rel}: {ds.width}x{ds.height} {ds.crs} {tuple(ds.transform)[:6]}")

    def _read_raw(self, window: Window | None, out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Bands ``[3, h, w]`` in the source dtype (palette: uint8 colours) and the valid mask ``[h, w]``.

        ``out_shape`` (rows, cols) decimates with nearest neighbour, so nodata values stay exact for statistics.
        """
        kw = {"window": window, "out_shape": out_shape, "resampling": Resampling.nearest}
        arrays, has_data, explicit = [], [], []
        for ds, indexes in self._plan:
            data = ds.read(indexes, **{**kw, "out_shape": (len(indexes), *out_shape) if out_shape else None})
            arrays.append(data)
            flags = ds.mask_flag_enums[indexes[0] - 1]
            if MaskFlags.all_valid in flags or (MaskFlags.alpha in flags and self._alpha):
                continue
            if MaskFlags.nodata in flags:
                has_data += [~_nodata_invalid(band, ds.nodatavals[i - 1])
                             for band, i in zip(data, indexes, strict=True)]
            else:  # internal mask or .msk file
                explicit.append(ds.read_masks(indexes[0], **kw) > 0)
        bands = np.concatenate(arrays, axis=0)
        valid = np.ones(bands.shape[1:], bool)
        if has_data:  # GDAL's dataset-mask rule: nodata only where every band is nodata
            valid &= np.logical_or.reduce(has_data)
        for mask in explicit:
            valid &= mask
        if self._lut is not None:
            rgba = self._lut[np.minimum(bands[0], len(self._lut) - 1)]
            bands, valid = rgba[..., :3].transpose(2, 0, 1), valid & (rgba[..., 3] > 0)
        if self._alpha is not None:
            valid &= self._plan[0][0].read(self._alpha, **kw) > 0
        if bands.dtype.kind == "f":
            valid &= np.isfinite(bands).all(axis=0)
        return bands, valid

    def _stats_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A sample of the scene's pixels for the stretch statistics: bands ``[3, ...]`` and valid ``[...]``."""
        w, h = self.info.width, self.info.height
        ds = self._plan[0][0]
        if self.whole_decode or ds.overviews(1) or w * h <= 4 * STRETCH_SAMPLE_PX**2:
            scale = min(1.0, STRETCH_SAMPLE_PX / max(w, h))
            return self._read_raw(None, (max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1 else None)
        block_h, block_w = ds.block_shapes[0]
        parts = [self._read_raw(win, None) for win in _lattice_windows(w, h, block_w, block_h)]
        return (np.concatenate([b.reshape(3, -1) for b, _ in parts], axis=1),
                np.concatenate([v.ravel() for _, v in parts]))

    def _stretch_params(self) -> np.ndarray:
        """Per-band (2nd, 98th) percentiles of the valid pixels of a scene-wide sample → float64 [3, 2]."""
        if self._stretch is None:
            bands, valid = self._stats_sample()
            params = np.zeros((3, 2))
            for b in range(3):
                values = bands[b][valid]  # valid already excludes NaN and nodata
                if values.size:
                    params[b] = np.percentile(values.astype(np.float64), STRETCH_PERCENTILES)
            self._stretch = params
        return self._stretch

    def _to_rgb8(self, bands: np.ndarray) -> np.ndarray:
        """``[3, h, w]`` → RGB uint8 ``[h, w, 3]``, stretched between the scene's percentiles unless uint8.

        Integers of up to 16 bits go through a per-band lookup table (one gather per value); other types are
        scaled in float32 (float64 when the statistics are beyond the float32 range). Both compute
        floor(clip((v − p2) · 255 / (p98 − p2), 0, 255)); NaN → 0.
        """
        if bands.dtype == np.uint8 and bands.strides[0] == 1 and bands.strides[2] == 3:
            # a view of pixel-interleaved RGB (a whole decode's window): rows copied as they are, into an array
            # of the caller's own (a window as wide as the image would otherwise be the decoded image's memory)
            return bands.transpose(1, 2, 0).copy()
        out = np.empty((*bands.shape[1:], 3), np.uint8)  # per-channel assignment: ~6x faster than a transpose
        if bands.dtype == np.uint8:
            for k in range(3):
                out[..., k] = bands[k]
        elif bands.dtype.kind in "ui" and bands.dtype.itemsize <= 2:
            luts = self._stretch_luts(bands.dtype)
            for k in range(3):
                out[..., k] = luts[k][_lut_index(bands[k])]
        else:
            lo, scale = self._stretch_scale()
            # float32 unless the scene's statistics overflow it (float64 data beyond ±3.4e38 would turn black)
            fits = bool((np.abs(np.concatenate([lo, scale])) < np.finfo(np.float32).max).all())
            work = np.float32 if fits else np.float64
            for k in range(3):
                x = bands[k].astype(work)
                x -= work(lo[k])
                x *= work(scale[k])
                np.clip(x, 0, 255, out=x)
                out[..., k] = np.nan_to_num(x, copy=False, nan=0.0)
        return out

    def _stretch_scale(self) -> tuple[np.ndarray, np.ndarray]:
        params = self._stretch_params()
        return params[:, 0], 255.0 / np.maximum(params[:, 1] - params[:, 0], 1e-12)

    def _stretch_luts(self, dtype: np.dtype) -> np.ndarray:
        """Per-band tables ``[3, 2^bits]`` uint8, indexed by :func:`_lut_index` of the value."""
        if self._luts is None:
            info = np.iinfo(dtype)
            values = np.arange(info.min, info.max + 1, dtype=np.float64)
            lo, scale = self._stretch_scale()
            self._luts = np.floor(np.clip((values[None] - lo[:, None]) * scale[:, None], 0, 255)).astype(np.uint8)
        return self._luts

    def _wants_pixels(self) -> bool:
        """Whether simplejpeg / Pillow give the pixels (uint8 RGB), else they only verify and GDAL reads them."""
        ref = self._ref
        return self.info.dtype == "uint8" and not ref.rgb_bands and not ref.band_paths and not self.grey_replicated

    def _grey_as_rgb(self) -> bool:
        """Whether a single grey band is read as R = G = B (now, or as the scan recorded it: bands (1, 1, 1))."""
        return self.grey_replicated or tuple(self._ref.rgb_bands or ()) == (1, 1, 1)

    def _stream_header(self, window_rows: int, min_pixels: int | None) -> png_stream.PngHeader | None:
        """The PNG's header when it is decoded row by row: a PNG of at least ``min_pixels`` (default
        :data:`rs4m.png_stream.STREAM_MIN_PIXELS`) read in windows of ``window_rows`` > 0 rows, 8-bit, not
        interlaced, its pixels the whole decode's uint8 RGB; None when it is decoded whole."""
        ds, ref = self._datasets[0], self._ref
        min_pixels = png_stream.STREAM_MIN_PIXELS if min_pixels is None else min_pixels
        grey = self._grey_as_rgb()
        if window_rows < 1 or ds.driver != "PNG" or ds.width * ds.height < min_pixels or ref.band_paths \
                or not (self._wants_pixels() or grey):
            return None
        with open_stream(self._root, ref.scene_path) as fh:
            header = png_stream.probe(fh, grey)
        if header is None or (header.colour_type != 0 and ref.rgb_bands) or (header.colour_type == 0 and not grey):
            return None
        return header

    def _open_rows(self) -> tuple[png_stream.PngRows, Callable[[], None]]:
        """The scene's PNG opened afresh for row-by-row decoding, and the function that closes it."""
        stack = contextlib.ExitStack()
        try:
            fh = stack.enter_context(open_stream(self._root, self._ref.scene_path))
            rows = png_stream.PngRows(fh, _byte_limit(self._datasets[0]), self._grey_as_rgb())
        except BaseException:
            stack.close()
            raise
        return rows, stack.close

    def _decode_all(self) -> DecodedImage | png_stream.StreamedImage:
        """The image of a whole-decode format, decoded once (simplejpeg / Pillow; GDAL otherwise), or row by
        row (a large PNG: :mod:`rs4m.png_stream`)."""
        if self._stream is not None:
            return png_stream.StreamedImage(self._open_rows)
        limit = _byte_limit(self._datasets[0])
        decoded = decode_whole(read_bytes(self._root, self._ref.scene_path, limit), self.info.driver,
                               self._wants_pixels())
        return decoded if decoded is not None else DecodedImage(bands=self._read_raw(None, None))

    def _check_budget(self, max_scene_bytes: int, window_rows: int) -> None:
        """Refuse, before decoding, a whole-decode scene whose decode would need more than ``max_scene_bytes``."""
        ds = self._datasets[0]
        if self._stream is not None:
            need = png_stream.stream_peak_bytes(self._stream, window_rows)
            if need > max_scene_bytes:
                raise BadInput(f"decoding this {ds.width}x{ds.height} PNG row by row in windows of {window_rows} rows "
                               f"needs about {need / 2**20:.0f} MiB, over the per-scene memory budget "
                               f"max_scene_bytes ({max_scene_bytes / 2**20:.0f} MiB)",
                               f"{need} bytes: bands of {window_rows}+{png_stream.AHEAD_ROWS} rows x {ds.width} px x "
                               f"{self._stream.channels} bytes, twice, and decode buffers")
            return
        if self._wants_pixels():
            per_px = DECODED_BYTES_PER_PIXEL.get(ds.driver, 5)
        else:  # GDAL's bands in their dtype, the valid mask and Pillow's verification decode before them
            per_px = 3 * np.dtype(ds.dtypes[0]).itemsize + 1 + 4
        file_bytes = min(os.stat(scene_file(self._root, self._ref.scene_path)).st_size, _byte_limit(ds))
        need = file_bytes + per_px * ds.width * ds.height
        if need > max_scene_bytes:
            raise BadInput(f"decoding this {ds.width}x{ds.height} {ds.driver} image whole needs about "
                           f"{need / 2**20:.0f} MiB, over the per-scene memory budget max_scene_bytes "
                           f"({max_scene_bytes / 2**20:.0f} MiB)",
                           f"{file_bytes} file bytes + {per_px} bytes/pixel x {ds.width * ds.height} pixels")

    def _check_window(self, x: int, y: int, w: int, h: int) -> None:
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > self.info.width or y + h > self.info.height:
            raise ValueError(f"window (x={x}, y={y}, w={w}, h={h}) is not inside the "
                             f"{self.info.width}x{self.info.height} scene {self._ref.scene_path!r}")

    def read_window(self, x: int, y: int, w: int, h: int,
                    out_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read the window at column ``x``, row ``y`` of ``w`` × ``h`` pixels (it must lie inside the scene).

        Returns RGB uint8 ``[h, w, 3]`` and the valid mask bool ``[h, w]``; with ``out_size`` = (width, height)
        both are resized to it (RGB bilinear, mask nearest). Raises :class:`BadInput` when the pixels cannot be
        read (e.g. a truncated file that only shows when its data is decoded).
        """
        self._check_window(x, y, w, h)
        try:
            with rasterio.Env(**GDAL_ENV):
                if self.whole_decode:
                    if self._whole is None:
                        self._whole = self._decode_all()
                    bands, valid = self._whole.window(x, y, w, h)  # streamed: BadInput if broken
                    if valid is None:  # every pixel valid: no full-size mask is kept
                        valid = np.ones(bands.shape[1:], bool)
                else:
                    bands, valid = self._read_raw(Window(x, y, w, h), None)
                rgb = self._to_rgb8(bands)
        except (RasterioError, OSError) as err:
            detail = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
            raise BadInput("truncated or corrupt image: reading its pixels failed", detail) from None
        if rgb.shape != (h, w, 3) or valid.shape != (h, w):
            raise BadInput(f"the decoded image is smaller than the {self.info.width}x{self.info.height} pixels its "
                           f"header declares", f"window ({x}, {y}, {w}, {h}) gave pixels of shape {rgb.shape}")
        size = (int(out_size[0]), int(out_size[1])) if out_size else None
        if size and (rgb.shape[1], rgb.shape[0]) != size:
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
            valid = np.asarray(Image.fromarray(valid).resize(size, Image.Resampling.NEAREST))
        return rgb, np.ascontiguousarray(valid)

    def page_count(self) -> int:
        """Pages of a multi-page TIFF or frames of an animated GIF (only the first is read); 1 otherwise.

        Not part of :attr:`info`: GDAL walks every directory of the TIFF to count them (~2 ms for a COG).
        """
        ds, rel = self._datasets[0], (list(self._ref.band_paths) or [self._ref.scene_path])[0]
        with rasterio.Env(**GDAL_ENV):
            return _page_count(ds, self._root, rel, _byte_limit(ds))

    def window_is_empty(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether the file stores no block of the window (a sparse GeoTIFF), known without decoding anything.

        False whenever it cannot be told (other formats, whole-decoded images).
        """
        if self.whole_decode:
            return False
        return all(_blocks_absent(ds, x, y, w, h) for ds, _ in self._plan)

    def window_footprint(self, x: int, y: int, w: int, h: int) -> shapely.Polygon | None:
        """EPSG:4326 (lon, lat) footprint of a window, edges densified; None where it cannot be computed."""
        if self.info.crs is None:
            return None
        ds = self._datasets[0]
        with rasterio.Env(**GDAL_ENV):  # one GDAL environment for the projection (else rasterio makes one)
            return footprint(ds.crs, ds.transform, x, y, w, h)

    def close(self) -> None:
        """Close the datasets and drop the decoded image (idempotent)."""
        for ds in self._datasets:
            ds.close()
        if isinstance(self._whole, png_stream.StreamedImage):
            self._whole.close()
        self._datasets, self._whole = [], None

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: a sparse GeoTIFF with up to this many blocks is checked for holding any block at all when opened
MAX_BLOCKS_CHECKED = 1 << 20


def _stores_nothing(ds) -> bool:
    """Whether a GeoTIFF of at most :data:`MAX_BLOCKS_CHECKED` blocks stores none (stops at the first found)."""
    block_h, block_w = ds.block_shapes[0]
    if ds.driver != "GTiff" or -(-ds.width // block_w) * -(-ds.height // block_h) > MAX_BLOCKS_CHECKED:
        return False
    return _blocks_absent(ds, 0, 0, ds.width, ds.height)


def _blocks_absent(ds, x: int, y: int, w: int, h: int) -> bool:
    """Whether every block of a GeoTIFF under the window is absent from the file (offset 0: sparse)."""
    if ds.driver != "GTiff":
        return False
    block_h, block_w = ds.block_shapes[0]
    bands = range(1, ds.count + 1) if ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") == "BAND" else (1,)
    for by in range(y // block_h, (y + h - 1) // block_h + 1):
        for bx in range(x // block_w, (x + w - 1) // block_w + 1):
            if any(ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=b) for b in bands):
                return False
    return True


def open_scene(root: Path, ref: SceneRef, max_pixels: int = DEFAULT_MAX_PIXELS, grey: str = "refuse",
               max_scene_pixels: int = DEFAULT_MAX_SCENE_PIXELS,
               max_scene_bytes: int | None = DEFAULT_MAX_SCENE_BYTES, window_rows: int = 0,
               stream_min_pixels: int | None = None) -> SceneReader:
    """Open scene ``ref`` under source root ``root`` for windowed RGB reads (a context manager).

    ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 400 MP) bounds what may be decoded whole; ``grey``
    ("refuse" | "replicate") says whether a single grey band is an error or read as R = G = B;
    ``max_scene_pixels`` (default :data:`DEFAULT_MAX_SCENE_PIXELS`, 4·10⁹) bounds any raster;
    ``max_scene_bytes`` (default :data:`DEFAULT_MAX_SCENE_BYTES`, 4 GiB) bounds the memory of decoding a
    whole-decode scene (file bytes + 3 bytes a pixel for JPEG, 4-5 for Pillow's formats; a streamed PNG: its
    band of rows), checked before (None: not checked, for a caller that reads no pixels). ``window_rows`` > 0
    says the caller reads windows of at most that many rows in top-row order: then a PNG of at least
    ``stream_min_pixels`` (default :data:`rs4m.png_stream.STREAM_MIN_PIXELS`) that :mod:`rs4m.png_stream`
    supports is decoded row by row (:attr:`SceneReader.row_ordered`), with the same pixels. Raises
    :class:`BadInput` for a file that cannot be used, with the reason in words and GDAL's message as detail.
    """
    return SceneReader(root, ref, max_pixels, grey, max_scene_pixels, max_scene_bytes, window_rows,
                       stream_min_pixels)
