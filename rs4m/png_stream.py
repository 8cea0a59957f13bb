"""Row-streamed PNG decoding: the rows of a PNG top to bottom, holding only the band of rows the current windows
need, so a 20000² scene is tiled in tens of MB instead of its file's bytes plus 1.6 GB of decoded pixels.

The chunks are parsed here (every CRC checked, the bytes read bounded) and the image data is inflated piece by
piece with ``zlib.decompressobj``. The scanlines are unfiltered a few rows at a time by Pillow's own PNG unfilter
(``Image.frombytes`` with its ``zip`` decoder, C code) over those rows re-wrapped as a stored (uncompressed) zlib
stream whose first row is their predecessor, already unfiltered, under filter type None: a Sub, Up, Average or
Paeth row sees exactly the row it was filtered against. Average and Paeth depend on the pixel to their left, so
numpy cannot vectorise them along a row: a Python step per pixel would take hours for a 20000² scene.

Pixels come out exactly as :func:`rs4m.whole_decode.decode_whole` gives them, so tiles do not change: RGB as is
(a tRNS colour ignored, as Pillow's RGB does), RGBA's alpha as the valid mask (alpha 0 invalid), a palette
through the colour table that Pillow makes of the file's own PLTE and tRNS chunks, and grey (only when the scene
is read grey as R = G = B, which GDAL does for the whole path) replicated. Streamed: bit depth 8, not interlaced,
colour types 2, 6, 3 and 0 (without tRNS: GDAL would make it nodata); any other PNG is :class:`Unsupported`, and
the caller decodes it whole. A truncated file, a bad CRC, a bad filter byte or corrupt compressed data is a
:class:`BadInput` naming it.
"""

from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from rs4m.errors import BadInput
from rs4m.whole_decode import decode_whole

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG scenes of at least this many pixels are streamed by the tile stage (8000²); smaller ones are decoded whole
STREAM_MIN_PIXELS = 64_000_000
#: file bytes read at a time
READ_BYTES = 1 << 20
#: rows unfiltered in one call to Pillow (its transient memory: about 4 bytes a sample of these rows, times 4)
UNFILTER_ROWS = 64
#: rows decoded ahead at least, so that a band is grown (copied) once per this many rows, not once per window
AHEAD_ROWS = 256
#: colour type → samples a pixel
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_MAX_CHUNK = (1 << 31) - 1


class Unsupported(Exception):
    """A PNG this module does not stream (16-bit, interlaced, ...): decode it whole."""


@dataclass(frozen=True)
class PngHeader:
    """The facts of a PNG read before its image data: IHDR, and the PLTE and tRNS chunks if present."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int
    palette: bytes | None = None
    transparency: bytes | None = None

    @property
    def channels(self) -> int:
        return CHANNELS[self.colour_type]

    @property
    def row_bytes(self) -> int:
        """Bytes of a filtered scanline: the filter byte and the samples."""
        return 1 + self.width * self.channels


def unsupported_reason(header: PngHeader, grey: bool) -> str | None:
    """Why ``header``'s PNG is not streamed (it is decoded whole), or None. ``grey``: read a grey PNG as R=G=B."""
    if header.bit_depth != 8:
        return f"bit depth {header.bit_depth}"
    if header.interlace:
        return "interlaced (Adam7)"
    if header.colour_type == 4:
        return "grey with alpha"
    if header.colour_type == 0 and (not grey or header.transparency is not None):
        return "grey, not read as R = G = B" if not grey else "grey with a tRNS value (GDAL's nodata)"
    if header.colour_type == 3 and (header.palette is None or len(header.palette) % 3 or len(header.palette) > 768
                                    or len(header.transparency or b"") > 256):
        return "palette without a valid PLTE or tRNS chunk"
    return None


def stream_peak_bytes(header: PngHeader, window_rows: int) -> int:
    """Most bytes :class:`StreamedImage` holds reading windows of up to ``window_rows`` rows in top-row order:
    the band before and after growing it, Pillow's unfilter transient, the read and inflate buffers."""
    band_rows = window_rows + AHEAD_ROWS
    band = band_rows * header.width * header.channels
    unfilter = UNFILTER_ROWS * header.row_bytes * 4 + UNFILTER_ROWS * header.width * 4
    return 2 * band + unfilter + 4 * READ_BYTES


def _corrupt(what: str, detail: str = "") -> BadInput:
    return BadInput(f"truncated or corrupt PNG: {what}", detail)


class _Chunks:
    """Reads a PNG's chunks from a binary stream, checking each CRC, refusing more than ``limit`` bytes."""

    def __init__(self, fh: BinaryIO, limit: int | None) -> None:
        self._fh, self._limit, self.read_bytes = fh, limit, 0

    def _read(self, n: int) -> bytes:
        try:
            return self._fh.read(n)
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as err:
            raise BadInput("truncated or corrupt image: its bytes cannot be read", str(err)) from None

    def take(self, n: int, what: str) -> bytes:
        data = self._read(n)
        self.read_bytes += len(data)
        if self._limit is not None and self.read_bytes > self._limit:
            raise BadInput(f"the PNG holds more than the {self._limit} bytes an image of its size can need; refused "
                           "(trailing data or a decompression bomb)", f"{self.read_bytes} bytes read")
        if len(data) < n:
            raise _corrupt(f"the file ends inside {what}", f"{self.read_bytes} bytes read")
        return data

    def header(self) -> tuple[int, bytes]:
        """(length, type) of the next chunk; (0, b"") at the end of the file, between chunks."""
        head = self._read(8)
        self.read_bytes += len(head)
        if not head:
            return 0, b""
        if len(head) < 8:
            raise _corrupt("the file ends inside a chunk header", f"{self.read_bytes} bytes read")
        length, ctype = struct.unpack(">I4s", head)
        if length > _MAX_CHUNK or not ctype.isalpha():
            raise _corrupt("a chunk header is invalid", f"type {ctype!r}, length {length}")
        return length, ctype

    def pieces(self, ctype: bytes, length: int) -> Iterator[bytes]:
        """The data of a chunk in pieces of up to :data:`READ_BYTES`, its CRC checked after the last."""
        crc, left = zlib.crc32(ctype), length
        while left:
            piece = self.take(min(left, READ_BYTES), f"a {ctype.decode()} chunk")
            crc, left = zlib.crc32(piece, crc), left - len(piece)
            yield piece
        (stored,) = struct.unpack(">I", self.take(4, f"the CRC of a {ctype.decode()} chunk"))
        if stored != crc:
            raise _corrupt(f"the CRC of a {ctype.decode()} chunk does not match its data",
                           f"stored {stored:08x}, computed {crc:08x}, {self.read_bytes} bytes in")

    def body(self, ctype: bytes, length: int) -> bytes:
        return b"".join(self.pieces(ctype, length))


def read_header(chunks: _Chunks) -> tuple[PngHeader, int]:
    """Parse up to the first IDAT chunk: the header and that chunk's length (its data is next in the stream)."""
    if chunks.take(8, "the signature") != SIGNATURE:
        raise _corrupt("no PNG signature")
    length, ctype = chunks.header()
    if ctype != b"IHDR" or length != 13:
        raise _corrupt("it does not begin with an IHDR chunk", f"first chunk {ctype!r}, length {length}")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks.body(ctype, length))
    if not width or not height or colour not in CHANNELS or compression or filtering or interlace > 1:
        raise _corrupt("its IHDR chunk is invalid", f"{width}x{height}, colour type {colour}, compression "
                       f"{compression}, filter method {filtering}, interlace {interlace}")
    found: dict[bytes, bytes] = {}
    while True:
        length, ctype = chunks.header()
        if ctype == b"IDAT":
            break
        if ctype in (b"", b"IEND"):
            raise _corrupt("it holds no image data (no IDAT chunk)")
        if ctype in (b"PLTE", b"tRNS") and length <= 1024:
            found[ctype] = chunks.body(ctype, length)
        else:
            for _ in chunks.pieces(ctype, length):  # skipped, its CRC checked
                pass
    return PngHeader(width, height, depth, colour, interlace, found.get(b"PLTE"), found.get(b"tRNS")), length


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def palette_table(header: PngHeader) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB ``[256, 3]``, valid ``[256]`` or None) of every palette index, as the whole decode gives them: a
    16×16 PNG of indices 0..255 under the file's own PLTE and tRNS, decoded by :func:`decode_whole`."""
    assert header.palette is not None  # checked by unsupported_reason
    rows = b"".join(b"\x00" + bytes(range(16 * k, 16 * k + 16)) for k in range(16))
    png = (SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 3, 0, 0, 0))
           + _chunk(b"PLTE", header.palette)
           + (_chunk(b"tRNS", header.transparency) if header.transparency is not None else b"")
           + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    decoded = decode_whole(png, "PNG", True)
    assert decoded is not None  # want_pixels: always decoded
    bands, valid = decoded.window(0, 0, 16, 16)
    return bands.reshape(3, 256).T.copy(), None if valid is None else valid.reshape(256).copy()


class PngRows:
    """The rows of a streamable PNG read from ``fh``, top to bottom (:meth:`read_into`).

    Raises :class:`Unsupported` when the PNG is not streamed, :class:`BadInput` when it is broken.
    """

    def __init__(self, fh: BinaryIO, limit: int | None = None, grey: bool = False) -> None:
        self._chunks = _Chunks(fh, limit)
        self.header, first_idat = read_header(self._chunks)
        reason = unsupported_reason(self.header, grey)
        if reason:
            raise Unsupported(reason)
        self._idat = self._idat_pieces(first_idat)
        self._inflate = zlib.decompressobj()
        self._pending = b""
        self._buf = bytearray()
        self._prev: bytes | None = None
        self.next_row = 0

    def _idat_pieces(self, length: int) -> Iterator[bytes]:
        """The image data of the consecutive IDAT chunks, each chunk's CRC checked."""
        while True:
            yield from self._chunks.pieces(b"IDAT", length)
            length, ctype = self._chunks.header()
            if ctype != b"IDAT":
                return

    def _fill(self, need: int) -> None:
        """Inflate until ``need`` filtered bytes are buffered."""
        while len(self._buf) < need:
            if not self._pending:
                piece = next(self._idat, None)
                if piece is None:
                    done = self.next_row + len(self._buf) // self.header.row_bytes
                    raise _corrupt(f"its image data ends after {done} of its {self.header.height} rows")
                self._pending = piece
            try:
                self._buf += self._inflate.decompress(self._pending, need - len(self._buf))
            except zlib.error as err:
                raise _corrupt("its compressed image data is invalid", str(err)) from None
            self._pending = self._inflate.unconsumed_tail
            if self._inflate.eof and len(self._buf) < need:
                raise _corrupt(f"its compressed image data ends before row {self.header.height}",
                               f"{self.next_row + len(self._buf) // self.header.row_bytes} rows decoded")

    def _unfilter(self, n: int) -> np.ndarray:
        """The next ``n`` rows, unfiltered: ``[n, width, channels]`` uint8."""
        header, need = self.header, n * self.header.row_bytes
        self._fill(need)
        filtered = bytes(self._buf[:need])
        del self._buf[:need]
        types = np.frombuffer(filtered, np.uint8)[::header.row_bytes]
        bad = np.flatnonzero(types > 4)
        if bad.size:
            raise _corrupt(f"row {self.next_row + int(bad[0])} has filter type {int(types[bad[0]])} (0-4 exist)")
        head = b"" if self._prev is None else b"\x00" + self._prev
        packer = zlib.compressobj(0)
        stream = b"".join((packer.compress(head), packer.compress(filtered), packer.flush()))
        mode = _MODES[header.channels]
        try:
            img = Image.frombytes(mode, (header.width, n + (self._prev is not None)), stream, "zip", mode)
        except ValueError as err:
            raise _corrupt("its rows cannot be unfiltered", str(err)) from None
        rows = np.asarray(img).reshape(-1, header.width, header.channels)[-n:]
        self._prev = rows[-1].tobytes()
        self.next_row += n
        return rows

    def read_into(self, out: np.ndarray) -> None:
        """Decode the next ``len(out)`` rows into ``out`` (``[n, width, channels]`` uint8)."""
        n = len(out)
        if self.next_row + n > self.header.height:
            raise ValueError(f"rows {self.next_row}..{self.next_row + n} are past the image's {self.header.height}")
        for start in range(0, n, UNFILTER_ROWS):
            out[start:start + UNFILTER_ROWS] = self._unfilter(min(UNFILTER_ROWS, n - start))
        if self.next_row == self.header.height:
            self._drain()

    def _drain(self) -> None:
        """After the last row: the rest of the image data, its CRCs checked (a damaged tail is an error too)."""
        for _ in self._idat:
            pass


class StreamedImage:
    """Windows of a streamed PNG, with the interface of :class:`rs4m.whole_decode.DecodedImage`.

    Windows are cheapest in top-row order: rows above a window are dropped, rows down to its bottom (and at
    least :data:`AHEAD_ROWS`) are decoded; a window above the band starts the decode again from the top.
    ``open_rows`` opens the file afresh as a :class:`PngRows` and gives it with a function that closes it.
    """

    def __init__(self, open_rows: Callable[[], tuple[PngRows, Callable[[], None]]]) -> None:
        self._open = open_rows
        self._rows: PngRows | None = None
        self._close: Callable[[], None] = lambda: None
        self._band = np.empty((0, 0, 0), np.uint8)
        self._top = 0
        self._lut: tuple[np.ndarray, np.ndarray | None] | None = None

    def _restart(self) -> PngRows:
        self.close()
        self._rows, self._close = self._open()
        header, self._top = self._rows.header, 0
        self._band = self._empty(header)
        if header.colour_type == 3 and self._lut is None:
            self._lut = palette_table(header)
        return self._rows

    @staticmethod
    def _empty(header: PngHeader) -> np.ndarray:
        return np.empty((0, header.width, header.channels), np.uint8)

    def _hold(self, y: int, y_end: int) -> None:
        """Make the band hold rows ``y`` .. ``y_end`` (the top row at ``self._top``)."""
        rows = self._rows if self._rows is not None and y >= self._top else self._restart()
        header = rows.header
        drop = min(max(0, y - self._top), len(self._band))
        self._band, self._top = self._band[drop:] if drop < len(self._band) else self._empty(header), self._top + drop
        while self._top + len(self._band) < y:  # rows between the band and the window: decoded, not kept
            skip = np.empty((min(UNFILTER_ROWS, y - rows.next_row), header.width, header.channels), np.uint8)
            rows.read_into(skip)
            self._top = rows.next_row
        bottom = self._top + len(self._band)
        if bottom < y_end:
            grow = min(max(y_end - bottom, AHEAD_ROWS), header.height - bottom)
            band = np.empty((len(self._band) + grow, header.width, header.channels), np.uint8)
            band[:len(self._band)] = self._band
            self._band = self._empty(header)  # the old band is freed (no view keeps it) before new rows are decoded
            rows.read_into(band[len(band) - grow:])
            self._band = band

    def window(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Bands ``[3, h', w']`` and the valid mask (None when every pixel is valid), as ``DecodedImage`` gives."""
        self._hold(y, y + h)
        assert self._rows is not None
        part = self._band[y - self._top:y - self._top + h, x:x + w]
        colour = self._rows.header.colour_type
        if colour == 2:
            return part.transpose(2, 0, 1), None
        if colour == 6:
            return part[..., :3].transpose(2, 0, 1), part[..., 3] > 0
        if colour == 0:
            grey = part[..., 0]
            return np.broadcast_to(grey, (3, *grey.shape)), None
        assert self._lut is not None
        rgb, valid = self._lut
        index = part[..., 0]
        return rgb[index].transpose(2, 0, 1), None if valid is None else valid[index]

    def close(self) -> None:
        """Close the file and drop the band (idempotent)."""
        self._close()
        self._rows, self._close = None, lambda: None
        self._band = np.empty((0, 0, 0), np.uint8)


def probe(fh: BinaryIO, grey: bool) -> PngHeader | None:
    """The header of the PNG in ``fh`` when it is streamed, None when it is decoded whole; :class:`BadInput`
    when its chunks up to the image data are broken (signature, IHDR, a CRC)."""
    try:
        return PngRows(fh, None, grey).header
    except Unsupported:
        return None


__all__ = ["STREAM_MIN_PIXELS", "PngHeader", "PngRows", "StreamedImage", "Unsupported", "probe",
           "stream_peak_bytes", "unsupported_reason"]
