"""Whole-image decoding for the formats that can only be decoded whole (PNG, JPEG, GIF, BMP, WebP), the
bytes of archive members, and the file checks every open goes through.

JPEG goes through simplejpeg, the rest through Pillow: both report a truncated file, which GDAL's PNG driver
zero-fills silently. Pixel counts are checked by the caller (the decompression-bomb guard) before anything here
runs; the bytes read are bounded too (``limit``), from the archive's directory before a member is read, so a
small image followed by gigabytes of padding is refused instead of loaded.

A FIFO, socket or device named like an image would block (or never end) when opened: :func:`check_regular`
stats the path (symlinks followed) and refuses anything but a regular file before GDAL opens it, and
:func:`open_regular` opens without blocking and checks the opened descriptor, so a file swapped for a FIFO
between the check and the open cannot hang Python reads either.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import simplejpeg
from PIL import Image

from rs4m import archive
from rs4m.errors import BadInput


def split_archive(root: Path, rel: str) -> tuple[Path, str] | None:
    """(archive file, member path) when a leading component of ``rel`` is an archive (:mod:`rs4m.archive`)."""
    return archive.split_member(root, rel)


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: Path | str) -> int:
    """The size in bytes of ``path`` (symlinks followed), without opening it; :class:`BadInput` unless it is a
    regular file (a FIFO, socket or device would block or never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise BadInput("file not found (it was removed, or is a broken symlink)", str(err)) from None
    except OSError as err:
        raise BadInput("the file cannot be read (a symlink loop, or permission denied)", str(err)) from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"not a regular file: {_kind(st.st_mode)}; only regular image files are read", str(path))
    return st.st_size


def open_regular(path: Path | str):
    """Open ``path`` for binary reading without ever blocking; :class:`BadInput` unless it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except PermissionError as err:
        raise BadInput("permission denied: the file cannot be read", str(err)) from None
    except OSError as err:
        raise BadInput("the file cannot be read", str(err)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadInput(f"not a regular file: {_kind(mode)}; only regular image files are read", str(path))
    return os.fdopen(fd, "rb")


def scene_file(root: Path, rel: str) -> Path:
    """The file on disk that holds scene path ``rel``: the archive for a member, else the file itself."""
    split = split_archive(root, rel)
    return Path(root) / rel if split is None else split[0]


@functools.lru_cache(maxsize=16)
def _duplicated_members(path: str, size: int, mtime_ns: int) -> frozenset[str]:
    """Member names an archive holds more than once (zip: its directory; plain tar: its headers)."""
    del size, mtime_ns  # cache key only: a changed archive is listed again
    try:
        kind = archive.archive_kind(Path(path))
        with open_regular(path) as fh:
            if kind == archive.ZIP:
                with zipfile.ZipFile(fh) as zf:
                    names = [i.filename for i in zf.infolist()]
            elif kind == archive.TAR:
                with tarfile.open(fileobj=fh, mode="r:") as tf:
                    names = [m.name.removeprefix("./") for m in tf]
            else:  # a compressed tar would be decompressed whole just to list it
                names = []
    except (OSError, BadInput, zipfile.BadZipFile, tarfile.TarError, EOFError):
        names = []  # an archive this cannot list is left to the reader, which says why it cannot be read
    return frozenset(name for name, count in collections.Counter(names).items() if count > 1)


def check_member(root: Path, rel: str) -> None:
    """Refuse an archive member whose name the archive holds twice: GDAL and Python may read different ones."""
    split = split_archive(root, rel)
    if split is None:
        return
    path, member = split
    st = os.stat(path)
    if member in _duplicated_members(str(path), st.st_size, st.st_mtime_ns):
        raise BadInput(f"the archive holds two entries named {member!r}; readers disagree on which one is meant",
                       f"{path.name}: duplicate member {member!r}")


def _too_big(size: int, limit: int, rel: str) -> BadInput:
    return BadInput(f"the file holds {size} bytes, more than an image of its declared size can need "
                    f"(at most {limit}); refused (trailing data or a decompression bomb)", rel)


#: what opening or reading a scene file or archive member raises when its bytes cannot be had
READ_ERRORS = (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError)


@contextlib.contextmanager
def _opened(root: Path, rel: str) -> Iterator[tuple[BinaryIO, int]]:
    """A scene file or archive member as a binary stream and its declared size (the file's, the zip directory's,
    the tar header's), read as it goes."""
    split = split_archive(root, rel)
    with contextlib.ExitStack() as stack:
        if split is None:
            fh = stack.enter_context(open_regular(Path(root) / rel))
            yield fh, os.fstat(fh.fileno()).st_size
            return
        path, member = split
        raw = stack.enter_context(open_regular(path))
        if archive.archive_kind(path) == archive.ZIP:
            zf = stack.enter_context(zipfile.ZipFile(raw))
            size = zf.getinfo(member).file_size
            yield cast(BinaryIO, stack.enter_context(zf.open(member))), size
            return
        tf = stack.enter_context(tarfile.open(fileobj=raw, mode="r:*"))
        info = tf.getmember(member)
        stream = tf.extractfile(info)
        if stream is None:
            raise KeyError(member)
        yield cast(BinaryIO, stack.enter_context(stream)), info.size


def _unreadable(rel: str, err: BaseException) -> BadInput:
    return BadInput("truncated or corrupt image: its bytes cannot be read", f"{rel}: {err}")


def read_bytes(root: Path, rel: str, limit: int | None = None) -> bytes:
    """The bytes of a scene file or archive member (for the whole-decode formats, which are small).

    More than ``limit`` bytes are refused with a :class:`BadInput` before they are read: a zip member's size
    comes from the archive's directory, a tar member's from its header, and the read itself stops at ``limit``.
    """
    cap = -1 if limit is None else limit + 1
    try:
        with _opened(root, rel) as (fh, declared):
            return _bounded_read(fh, declared, limit, cap, rel)
    except READ_ERRORS as err:
        raise _unreadable(rel, err) from None


@contextlib.contextmanager
def open_stream(root: Path, rel: str) -> Iterator[BinaryIO]:
    """A binary stream of a scene file or archive member, read as it goes (a context manager): for a format
    decoded piece by piece (:mod:`rs4m.png_stream`). Opening errors are a :class:`BadInput`."""
    with contextlib.ExitStack() as stack:
        try:
            fh, _ = stack.enter_context(_opened(root, rel))
        except READ_ERRORS as err:
            raise _unreadable(rel, err) from None
        yield fh


def _bounded_read(fh, declared: int, limit: int | None, cap: int, rel: str) -> bytes:
    if limit is not None and declared > limit:
        raise _too_big(declared, limit, rel)
    data = fh.read(cap)
    if limit is not None and len(data) > limit:  # the directory understated the size
        raise _too_big(len(data), limit, rel)
    return data


def frame_count(data: bytes) -> int:
    """Pages / frames of an image (a multi-page TIFF, an animated GIF); 1 when Pillow cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:  # noqa: BLE001 - counting frames is a note, never a failure
        return 1


class DecodedImage:
    """A whole-decoded image kept as its decoder left it, so that no full-size copy is ever made.

    JPEG: simplejpeg's RGB array (3 bytes a pixel); the other formats: the Pillow image (4 bytes a pixel for
    RGB and RGBA), each window converted on its own; the GDAL fallback: its bands ``[3, h, w]`` and valid mask.
    """

    def __init__(self, rgb: np.ndarray | None = None, pil: Image.Image | None = None,
                 bands: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self._rgb, self._pil, self._bands = rgb, pil, bands

    def window(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Bands ``[3, h', w']`` (a view where it can be) and the valid mask, None when every pixel is valid.

        A decoded image smaller than the window gives a smaller part (the caller checks the shape).
        """
        if self._rgb is not None:
            return self._rgb[y:y + h, x:x + w].transpose(2, 0, 1), None
        if self._bands is not None:
            return self._bands[0][:, y:y + h, x:x + w], self._bands[1][y:y + h, x:x + w]
        pil = self._pil
        assert pil is not None  # one of the three decoded forms is always set
        width, height = pil.size
        arr = np.asarray(pil.crop((x, y, min(x + w, width), min(y + h, height))))
        valid = arr[..., 3] > 0 if arr.shape[-1] == 4 else None
        return arr[..., :3].transpose(2, 0, 1), valid


def decode_whole(data: bytes, driver: str, want_pixels: bool) -> DecodedImage | None:
    """Decode a whole-decode image with simplejpeg (JPEG) or Pillow, which report truncation.

    Returns the :class:`DecodedImage`; None when only verified (``want_pixels`` False: the pixels come from
    GDAL, e.g. a 16-bit PNG).
    """
    if driver == "JPEG" and want_pixels:
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "RGB"):
                return DecodedImage(rgb=simplejpeg.decode_jpeg(data, colorspace="RGB"))
        except ValueError as err:
            raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None
    try:
        with warnings.catch_warnings(), _pillow_size_unbounded():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                pil = _pillow_rgb(img) if want_pixels else None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadInput("truncated or corrupt image: decoding failed", str(err)) from None
    return None if pil is None else DecodedImage(pil=pil)


@contextlib.contextmanager
def _pillow_size_unbounded():
    """Lift Pillow's own pixel limit (179 MP) for one decode: the caller has checked ``max_pixels`` already,
    and above Pillow's limit the image would go to GDAL's whole read, which zero-fills a truncated PNG."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _pillow_rgb(img: Image.Image) -> Image.Image:
    """A decoded Pillow image as RGB or RGBA (alpha / palette transparency is the valid mask)."""
    if img.mode in ("L", "LA", "1", "I", "F") or img.mode.startswith("I;16"):
        raise BadInput("a single grey band is not an RGB image", f"image mode {img.mode}")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    return img if img.mode in ("RGB", "RGBA") else img.convert("RGB")


#: bytes a pixel of the decoded image costs: simplejpeg's RGB; Pillow's RGB / RGBA (4 either way), plus the
#: palette image a ``P`` PNG is converted from
DECODED_BYTES_PER_PIXEL = {"JPEG": 3, "PNG": 5, "GIF": 5, "BMP": 5, "WEBP": 4}

