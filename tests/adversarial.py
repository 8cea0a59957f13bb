"""An adversarial input corpus: bad files, hostile names and archive cases beside good files, each with what
a build must make of it.

``make_corpus(root)`` writes two source folders and returns a :class:`Corpus`:

* ``root/plain`` (read with the ``folder`` adapter): rasters of every format, truncated, empty, random,
  mislabelled, a decompression bomb, sparse huge TIFFs, float extremes, special files (FIFO, socket, a symlink
  to /dev/zero, a symlink loop, a broken symlink) and hostile names (not UTF-8, a newline, a leading dash,
  255 bytes long, unicode);
* ``root/archived`` (read with the ``patternnet`` adapter, which reads JPEGs inside archives): a good zip and
  tar, a zip whose member is a small JPEG plus hundreds of MB of zeros, a zip with two entries of one name, a
  truncated zip, and a gzip-compressed tar named ``.tar``.

Expectations, by scene path (relative to its source folder):

* ``good``: in the manifest with stored bytes, no error row;
* ``noted``: in the manifest with stored bytes and exactly one error row (a multi-page TIFF: only the first
  page is used);
* ``filtered``: tile rows with a filter reason, no bytes and no error row (a 1x1 image, an all-NaN raster);
* ``bad``: no tile row and exactly one error row, whose reason contains the given words;

Run builds of it with ``--max-pixels`` = :data:`MAX_PIXELS` so the PNG bomb stays small on disk.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

#: the --max-pixels of builds of the corpus: the PNG bomb declares 9 MP, over it
MAX_PIXELS = 4_000_000
#: zeros after the JPEG in the zip-bomb member (compressed to about 0.1 % of it)
BOMB_PADDING = 400 << 20
_PLACES = itertools.count()


@dataclass
class Corpus:
    """The corpus's two source folders and the expectation of every scene path in each."""

    plain: Path
    archived: Path
    expect: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def add(self, source: str, rel: str, kind: str, words: str = "") -> None:
        self.expect[(source, rel)] = (kind, words)


def noise(h: int, w: int, seed: int = 0, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (bands, h, w), dtype=np.uint8)


def write_tif(path: Path | str, data: np.ndarray, **kw) -> None:
    """A GeoTIFF at a place of its own (files at one place would be geo-duplicates of each other)."""
    east = 300000 + 10000 * next(_PLACES)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": "EPSG:32633", "transform": from_origin(east, 4500000, 1, 1), **kw}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def image_bytes(data: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data.transpose(1, 2, 0)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def png_bomb(width: int, height: int) -> bytes:
    """An RGB PNG declaring width x height of zeros: tiny on disk, width*height*3 bytes decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * width), []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def sparse_tif(path: Path, size: int) -> None:
    """A tiled GeoTIFF declaring size x size pixels that stores no block at all."""
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True):
        pass


def _good_plain(c: Corpus, d: Path) -> None:
    write_tif(d / "good.tif", noise(300, 300, 1))
    write_tif(d / "good_tiled.tif", noise(512, 512, 2), tiled=True, blockxsize=128, blockysize=128,
              compress="deflate")
    write_tif(d / "good_cog.tif", noise(512, 512, 3), driver="COG", compress="deflate")
    write_tif(d / "good.jp2", noise(128, 128, 4), driver="JP2OpenJPEG")
    (d / "good.png").write_bytes(image_bytes(noise(200, 150, 5), "PNG"))
    (d / "good.jpg").write_bytes(image_bytes(noise(100, 120, 6), "JPEG", quality=90))
    f32 = noise(128, 128, 7).astype(np.float32)
    f32[:, :20, :20] = np.nan
    write_tif(d / "float_nan.tif", f32)
    write_tif(d / "float64_extreme.tif", (noise(128, 128, 8).astype(np.float64) + 1) * 1e300)
    for name in ("good.tif", "good_tiled.tif", "good_cog.tif", "good.jp2", "good.png", "good.jpg",
                 "float_nan.tif", "float64_extreme.tif"):
        c.add("plain", name, "good")
    frames = [Image.fromarray(noise(64, 64, s).transpose(1, 2, 0)) for s in (9, 10, 11)]
    frames[0].save(d / "pages.tif", save_all=True, append_images=frames[1:])
    c.add("plain", "pages.tif", "noted", "only the first page is used")
    Image.fromarray(noise(1, 1, 12).transpose(1, 2, 0)).save(d / "one_pixel.png")
    write_tif(d / "all_nan.tif", np.full((3, 64, 64), np.nan, np.float32))
    c.add("plain", "one_pixel.png", "filtered")
    c.add("plain", "all_nan.tif", "filtered")


def _hostile_names(c: Corpus, d: Path) -> None:
    for seed, name in enumerate(("new\nline.png", "-leading-dash.png", "ünïcödé 画像.png", "x" * 251 + ".png",
                                 "a space.png")):
        (d / name).write_bytes(image_bytes(noise(64, 64, 13 + seed), "PNG"))
        c.add("plain", name, "good")
    os.close(os.open(os.path.join(os.fsencode(d), b"latin1-\xe9t\xe9.png"), os.O_CREAT | os.O_WRONLY))
    c.add("plain", "latin1-\\xe9t\\xe9.png", "bad", "not valid UTF-8")


def _bad_plain(c: Corpus, d: Path) -> None:
    write_tif(d / "trunc.tif", noise(1024, 1024, 20), tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    truncate(d / "trunc.tif", 0.7)
    write_tif(d / "trunc_cog.tif", noise(1024, 1024, 21), driver="COG", compress="deflate", blocksize=128)
    truncate(d / "trunc_cog.tif", 0.6)
    write_tif(d / "trunc.jp2", noise(256, 256, 22), driver="JP2OpenJPEG")
    truncate(d / "trunc.jp2", 0.5)
    (d / "trunc.jpg").write_bytes(image_bytes(noise(256, 256, 23), "JPEG")[:3000])
    (d / "trunc.png").write_bytes(image_bytes(noise(256, 256, 24), "PNG")[:5000])
    (d / "zero.png").write_bytes(b"")
    (d / "random.tif").write_bytes(np.random.default_rng(25).bytes(4096))
    (d / "text.png").write_text("this is not an image\n")
    (d / "bomb.png").write_bytes(png_bomb(3000, 3000))
    sparse_tif(d / "huge_sparse.tif", 60000)
    sparse_tif(d / "over_limit.tif", 70000)
    for rel, words in (("trunc.tif", "truncated"), ("trunc_cog.tif", ""), ("trunc.jp2", ""), ("trunc.jpg", ""),
                       ("trunc.png", ""), ("zero.png", "empty"), ("random.tif", "not an image"),
                       ("text.png", "not an image"), ("bomb.png", "max-pixels"), ("huge_sparse.tif", "stores none"),
                       ("over_limit.tif", "max_scene_pixels")):
        c.add("plain", rel, "bad", words)


def _special_files(c: Corpus, d: Path) -> None:
    os.mkfifo(d / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "socket.tif"))
    sock.close()
    os.symlink("/dev/zero", d / "dev_zero.tif")
    os.symlink(d / "loop_b.png", d / "loop_a.png")
    os.symlink(d / "loop_a.png", d / "loop_b.png")
    os.symlink(d / "nowhere.png", d / "broken.png")
    for rel, words in (("fifo.png", "FIFO"), ("socket.tif", "socket"), ("dev_zero.tif", "character device"),
                       ("loop_a.png", "symlink loop"), ("loop_b.png", "symlink loop"), ("broken.png", "broken")):
        c.add("plain", rel, "bad", words)


def _archives(c: Corpus, d: Path) -> None:
    jpg = [image_bytes(noise(64, 64, 30 + i), "JPEG", quality=90) for i in range(6)]
    with zipfile.ZipFile(d / "good.zip", "w") as zf:
        zf.writestr("images/z1.jpg", jpg[0])
        zf.writestr("images/z2.jpg", jpg[1])
    _write_tar(d / "good.tar", {"images/t1.jpg": jpg[2]}, "w")
    c.add("archived", "good.zip/images/z1.jpg", "good")
    c.add("archived", "good.zip/images/z2.jpg", "good")
    c.add("archived", "good.tar/images/t1.jpg", "good")
    with zipfile.ZipFile(d / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("images/bomb.jpg", "w", force_zip64=True) as fh:
        fh.write(jpg[3])
        for _ in range(BOMB_PADDING >> 20):
            fh.write(bytes(1 << 20))
    c.add("archived", "bomb.zip/images/bomb.jpg", "bad", "more than an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        with zipfile.ZipFile(d / "dup.zip", "w") as zf:
            zf.writestr("images/d.jpg", jpg[4])
            zf.writestr("images/d.jpg", image_bytes(noise(32, 32, 40), "JPEG"))
    c.add("archived", "dup.zip/images/d.jpg", "bad", "two entries")
    with zipfile.ZipFile(d / "trunc.zip", "w") as zf:
        zf.writestr("images/x1.jpg", jpg[5])
        zf.writestr("images/x2.jpg", jpg[5][::-1])
    truncate(d / "trunc.zip", 0.5)
    c.add("archived", "trunc.zip", "bad", "")
    _write_tar(d / "gzipped.tar", {"images/g1.jpg": image_bytes(noise(64, 64, 41), "JPEG")}, "w:gz")
    c.add("archived", "gzipped.tar/images/g1.jpg", "good")  # archives are recognised by their bytes


def _write_tar(path: Path, members: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def make_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root`` (two source folders) and return it with its expectations."""
    corpus = Corpus(Path(root) / "plain", Path(root) / "archived")
    corpus.plain.mkdir(parents=True)
    corpus.archived.mkdir(parents=True)
    _good_plain(corpus, corpus.plain)
    _hostile_names(corpus, corpus.plain)
    _bad_plain(corpus, corpus.plain)
    _special_files(corpus, corpus.plain)
    _archives(corpus, corpus.archived)
    return corpus


def make_good_only(root: Path) -> Corpus:
    """The corpus's good files alone (the baseline a corpus build's memory is compared with)."""
    corpus = Corpus(Path(root) / "plain", Path(root) / "archived")
    corpus.plain.mkdir(parents=True)
    corpus.archived.mkdir(parents=True)
    _good_plain(corpus, corpus.plain)
    jpg = image_bytes(noise(64, 64, 30), "JPEG", quality=90)
    with zipfile.ZipFile(corpus.archived / "good.zip", "w") as zf:
        zf.writestr("images/z1.jpg", jpg)
    corpus.add("archived", "good.zip/images/z1.jpg", "good")
    return corpus
