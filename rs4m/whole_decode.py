"""Whole-image decoding for the formats that can only be decoded whole (PNG, JPEG, GIF, BMP, WebP), and the
bytes of archive members.

JPEG goes through simplejpeg, the rest through Pillow: both report a truncated file, which GDAL's PNG driver
zero-fills silently. Sizes are checked by the caller (the decompression-bomb guard) before anything here runs.
"""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from rs4m import archive
from rs4m.errors import BadInput


def split_archive(root: Path, rel: str) -> tuple[Path, str] | None:
    """(archive file, member path) when a leading component of ``rel`` is an archive (:mod:`rs4m.archive`)."""
    return archive.split_member(root, rel)


def read_bytes(root: Path, rel: str) -> bytes:
    """The bytes of a scene file or archive member (for the whole-decode formats, which are small)."""
    split = split_archive(root, rel)
    try:
        if split is None:
            return (Path(root) / rel).read_bytes()
        return archive.read_member(*split)
    except (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise BadInput("truncated or corrupt image: its bytes cannot be read", f"{rel}: {err}") from None


def decode_whole(data: bytes, driver: str, want_pixels: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode a whole-decode image with simplejpeg (JPEG) or Pillow, which report truncation.

    Returns (bands uint8 [3, h, w], valid [h, w]); None when only verified (``want_pixels`` False: the pixels
    come from GDAL, e.g. a 16-bit PNG) or when Pillow cannot take it (over its own size limit) and GDAL reads it.
    """
    if driver == "JPEG" and want_pixels:
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "RGB"):
                rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
                return rgb.transpose(2, 0, 1), np.ones(rgb.shape[:2], bool)
        except ValueError as err:
            raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return _pillow_rgb(img) if want_pixels else None
    except Image.DecompressionBombError:
        return None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None


def _pillow_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """A decoded Pillow image → (RGB uint8 [3, h, w], valid [h, w] from alpha / palette transparency)."""
    if img.mode in ("L", "LA", "1", "I", "F") or img.mode.startswith("I;16"):
        raise BadInput("a single grey band is not an RGB image", f"image mode {img.mode}")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    elif img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    valid = arr[..., 3] > 0 if arr.shape[-1] == 4 else np.ones(arr.shape[:2], bool)
    return np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1)), valid
