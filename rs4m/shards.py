"""WebDataset-compatible tar shards: an appending writer that reports where each member's data lies, a
ranged reader, and the shard checks used by ``rs4m verify``.

A shard is a plain POSIX (ustar) tar. Each sample is ``<tile_id>.<ext>`` (the encoded image) followed by
``<tile_id>.json`` (its metadata). Headers are deterministic (mtime 0, owner 0, mode 0644), so the same
samples give the same bytes on every run, engine and machine. The file is written under a temporary name in
the same folder and renamed when complete; a killed writer never leaves a file under the final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rs4m import codec

BLOCK = 512
RECORD = 20 * BLOCK  # tar's default record size; the archive is padded to a multiple of it, as tar does
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXT_RE = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class MemberLocation:
    """Where a member's data lies in its shard: ``offset`` (bytes from the start of the tar) and ``length``."""

    offset: int
    length: int


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: its name (relative to the shards folder), sample count, size and sha256."""

    shard: str
    samples: int
    bytes: int
    sha256: str


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def check_key(key: str, ext: str) -> None:
    """Member names come only from generated ids: no dots, no slashes, nothing from input paths."""
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid sample key {key!r}: only letters, digits, '_' and '-' are allowed")
    if not _EXT_RE.match(ext):
        raise ValueError(f"invalid member extension {ext!r}")


class ShardWriter:
    """Append samples to a new tar shard; ``close()`` publishes it under its final name.

    Example::

        with ShardWriter(out / "shards" / "rs4m-00000.tar") as w:
            loc = w.add(tile_id, "jpg", jpeg_bytes, {"tile_id": tile_id})
        info = w.info
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._pos = 0
        self._samples = 0
        self.info: ShardInfo | None = None

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._hash.update(data)
        self._pos += len(data)

    def _add_member(self, name: str, data: bytes) -> MemberLocation:
        self._write(_header(name, len(data)))
        loc = MemberLocation(self._pos, len(data))
        self._write(data)
        pad = (-len(data)) % BLOCK
        if pad:
            self._write(b"\0" * pad)
        return loc

    def add(self, key: str, ext: str, data: bytes, meta: dict[str, Any] | None = None) -> MemberLocation:
        """Append ``<key>.<ext>`` (and ``<key>.json`` when ``meta`` is given); return the image data location."""
        check_key(key, ext)
        loc = self._add_member(f"{key}.{ext}", data)
        if meta is not None:
            self._add_member(f"{key}.json", json.dumps(meta, sort_keys=True, default=str).encode())
        self._samples += 1
        return loc

    def mark(self) -> tuple[int, int, Any]:
        """The writer's state now; :meth:`rollback` to it drops every sample added after it."""
        return self._pos, self._samples, self._hash.copy()

    def rollback(self, mark: tuple[int, int, Any]) -> None:
        """Drop the samples added since ``mark`` (a scene that failed partway leaves no members behind)."""
        pos, samples, digest = mark
        self._fh.flush()
        self._fh.truncate(pos)
        self._fh.seek(pos)
        self._pos, self._samples, self._hash = pos, samples, digest.copy()

    def close(self) -> ShardInfo:
        """Finish the archive, fsync, rename to the final name and return its :class:`ShardInfo`."""
        if self.info is not None:
            return self.info
        end = 2 * BLOCK
        end += (-(self._pos + end)) % RECORD
        self._write(b"\0" * end)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        self.info = ShardInfo(self.path.name, self._samples, self._pos, self._hash.hexdigest())
        return self.info

    def abort(self) -> None:
        """Drop the partial shard (nothing appears under the final name)."""
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:  # a close that fails (disk full) leaves no temp file either
            self.abort()
            raise


class ShardReader:
    """Read samples by (shard, offset, length) with one ranged read each; keeps shard files open.

    One reader per process (or DataLoader worker): file handles are not shared across ``fork``.
    """

    def __init__(self, shards_dir: Path) -> None:
        self.shards_dir = Path(shards_dir)
        self._files: dict[str, int] = {}

    def _fd(self, shard: str) -> int:
        fd = self._files.get(shard)
        if fd is None:
            if "/" in shard or shard.startswith("."):
                raise ValueError(f"invalid shard name {shard!r}")
            fd = os.open(self.shards_dir / shard, os.O_RDONLY)
            self._files[shard] = fd
        return fd

    def read(self, shard: str, offset: int, length: int) -> bytes:
        """The ``length`` bytes at ``offset`` of ``shard`` (raises ``EOFError`` if the shard is too short)."""
        data = os.pread(self._fd(shard), int(length), int(offset))
        if len(data) != length:
            raise EOFError(f"{shard}: wanted {length} bytes at offset {offset}, got {len(data)}")
        return data

    def read_row(self, row: Mapping[str, Any]) -> bytes:
        """The stored bytes of a manifest or tiles-part row: its ``length`` bytes at ``offset`` of ``shard``."""
        return self.read(row["shard"], int(row["offset"]), int(row["length"]))

    def decode_row(self, row: Mapping[str, Any]) -> np.ndarray:
        """RGB uint8 ``[h, w, 3]`` of a row: :meth:`read_row`, decoded as its ``format`` says."""
        return codec.decode(self.read_row(row), row.get("format"))

    def member_name(self, shard: str, offset: int) -> tuple[str, int] | None:
        """The (name, size) of the tar member whose data starts at ``offset``, or None if no header is there."""
        if offset < BLOCK:
            return None
        raw = os.pread(self._fd(shard), BLOCK, int(offset) - BLOCK)
        try:
            info = tarfile.TarInfo.frombuf(raw, tarfile.ENCODING, "surrogateescape")
        except tarfile.TarError:
            return None
        return info.name, info.size

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Open descriptors never travel to another process; each reopens lazily.
        return {"shards_dir": self.shards_dir, "_files": {}}


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def list_members(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every member of a tar, in order."""
    with tarfile.open(path, "r:") as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()]


def decode_meta(data: bytes) -> dict:
    """Parse a sample's ``.json`` member."""
    return json.load(io.BytesIO(data))
