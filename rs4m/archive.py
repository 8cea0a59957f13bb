"""Archives that datasets ship in, recognised by their first bytes and read in place, never extracted.

The name of an archive says nothing sure about its contents: xView2's official ``.tar`` files are
gzip-compressed, and a ``.tgz`` may hold a plain tar. :func:`archive_kind` reads the first bytes (gzip
``1f 8b``, bzip2 ``BZh``, xz ``fd 37 7a 58 5a 00``, zip ``PK\\3\\4`` / ``PK\\5\\6``, a plain tar's ``ustar`` at
offset 257, decompressing the head of a compressed file to look for the tar inside) and
:func:`gdal_member_path` builds the GDAL virtual path that reads a member of that kind:

========================  ======================================================================
content                   GDAL path (GDAL 3.10)
========================  ======================================================================
zip                       ``/vsizip/A/m`` (``/vsizip/{A}/m`` when the name does not end in .zip)
plain tar                 ``/vsitar/A/m`` (``/vsitar/{A}/m`` for other names; named .tgz or
                          .tar.gz, where GDAL always gunzips: the member's byte range,
                          ``/vsisubfile/OFFSET_SIZE,A``)
gzip-compressed tar       ``/vsitar/A/m`` when named .tgz / .tar.gz, else ``/vsitar/{/vsigzip/A}/m``
bzip2 / xz tar, 7z, rar   not readable in place by GDAL: unpack first (:class:`BadInput`)
========================  ======================================================================

Which files are *looked at* as archives is decided by name (:data:`CANDIDATE_SUFFIXES`), so an image is never
sniffed; how an archive is read is decided by its bytes alone. A gzip-compressed tar is one compressed stream:
reading many of its members in place decompresses it again and again, so :func:`is_slow` marks it and the
scan says so.
"""

from __future__ import annotations

import bz2
import lzma
import os
import tarfile
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

from rs4m.errors import BadInput

ZIP, TAR, TAR_GZ, TAR_BZ2, TAR_XZ, SEVEN_Z, RAR = "zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "7z", "rar"
#: kinds whose members rs4m lists (Python) and GDAL reads in place
READABLE = frozenset({ZIP, TAR, TAR_GZ})
#: names worth sniffing as archives (longest first, for :func:`strip_suffix`)
CANDIDATE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".tbz", ".txz", ".tar", ".zip",
                      ".gz", ".bz2", ".xz", ".7z", ".rar")
#: suffixes for which GDAL's /vsitar/ always inserts /vsigzip/ itself
_GDAL_GZIP_NAMES = (".tgz", ".tar.gz")
_HEAD = 1024
_UNSUPPORTED = {
    TAR_BZ2: "a bzip2-compressed tar, which GDAL cannot read in place",
    TAR_XZ: "an xz-compressed tar, which GDAL cannot read in place",
    SEVEN_Z: "a 7z archive, which is not read in place", RAR: "a rar archive, which is not read in place",
    "gz": "a gzip-compressed file that is not a tar archive", "bz2": "a bzip2-compressed file that is not a tar",
    "xz": "an xz-compressed file that is not a tar archive",
}


def is_candidate(name: str) -> bool:
    """Whether a file name looks like an archive (so that its bytes are worth sniffing)."""
    return name.lower().endswith(CANDIDATE_SUFFIXES)


def strip_suffix(name: str) -> str:
    """The name without its archive suffix (``a.tar.gz`` → ``a``): the folder it unpacks into."""
    lower = name.lower()
    suffix = next((s for s in CANDIDATE_SUFFIXES if lower.endswith(s)), "")
    return name[: len(name) - len(suffix)]


def _is_tar_head(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _decompressed_head(data: bytes, kind: str) -> bytes:
    """The first uncompressed bytes of a compressed head (as much as the head gives)."""
    try:
        if kind == "gz":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, _HEAD)
        if kind == "bz2":
            return bz2.BZ2Decompressor().decompress(data, _HEAD)
        return lzma.LZMADecompressor().decompress(data, _HEAD)
    except (zlib.error, OSError, lzma.LZMAError, EOFError):
        return b""


def sniff(head: bytes) -> str | None:
    """The kind of archive whose first bytes are ``head`` (≥ 64 KiB for compressed ones), or None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return ZIP
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return SEVEN_Z
    if head[:4] == b"Rar!":
        return RAR
    compressed = {b"\x1f\x8b": "gz", b"BZ": "bz2", b"\xfd7": "xz"}
    kind = next((k for magic, k in compressed.items() if head.startswith(magic)), None)
    if kind == "bz2" and head[2:3] != b"h" or kind == "xz" and head[:6] != b"\xfd7zXZ\x00":
        kind = None
    if kind is not None:
        return {"gz": TAR_GZ, "bz2": TAR_BZ2, "xz": TAR_XZ}[kind] if _is_tar_head(
            _decompressed_head(head, kind)) else kind
    return TAR if _is_tar_head(head) else None


@lru_cache(maxsize=256)
def _kind_cached(path: str, size: int, mtime_ns: int) -> str | None:
    with open(path, "rb") as fh:
        return sniff(fh.read(1 << 16))


def archive_kind(path: Path) -> str | None:
    """The archive kind of the file at ``path`` from its bytes (see :func:`sniff`); OSError if unreadable."""
    st = os.stat(path)
    return _kind_cached(str(path), st.st_size, st.st_mtime_ns)


def is_slow(kind: str | None) -> bool:
    """Whether reading many members in place re-decompresses one stream (a compressed tar)."""
    return kind == TAR_GZ


def unsupported_reason(kind: str | None) -> str | None:
    """Why an archive of ``kind`` is not read in place (a sentence with what to do), or None when it is."""
    if kind in READABLE:
        return None
    if kind is None:
        return "archive cannot be read: its bytes are no zip or tar archive (corrupt, truncated or misnamed?)"
    return f"archive is {_UNSUPPORTED[kind]}; unpack it first"


def split_member(root: Path, rel: str) -> tuple[Path, str] | None:
    """(archive file, member path) when a leading component of ``rel`` is an archive-named regular file."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        head = "/".join(parts[:i])
        if is_candidate(parts[i - 1]) and (Path(root) / head).is_file():
            return Path(root) / head, "/".join(parts[i:])
    return None


def _member_key(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


@lru_cache(maxsize=16)
def _tar_ranges(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """Member → (data offset, size) of a plain tar (headers only are read: the data is skipped)."""
    with tarfile.open(path, "r:") as tf:
        return {_member_key(m.name): (m.offset_data, m.size) for m in tf if m.isfile()}


def gdal_member_path(archive: Path, member: str) -> str:
    """The GDAL path of ``member`` inside ``archive``, from the archive's bytes; :class:`BadInput` if unreadable."""
    try:
        kind = archive_kind(archive)
    except OSError as err:
        raise BadInput("the archive holding this image cannot be read", str(err)) from None
    name, text = archive.name.lower(), str(archive)
    if kind == ZIP:
        return f"/vsizip/{text}/{member}" if name.endswith(".zip") else f"/vsizip/{{{text}}}/{member}"
    if kind == TAR_GZ:
        return f"/vsitar/{text}/{member}" if name.endswith(_GDAL_GZIP_NAMES) else \
            f"/vsitar/{{/vsigzip/{text}}}/{member}"
    if kind == TAR:
        if name.endswith(".tar"):
            return f"/vsitar/{text}/{member}"
        if not name.endswith(_GDAL_GZIP_NAMES):
            return f"/vsitar/{{{text}}}/{member}"
        return _subfile_path(archive, member)
    if kind is None:  # no archive by its bytes: GDAL, opening it as its name says, reports what it is
        return f"/vsizip/{text}/{member}" if name.endswith(".zip") else f"/vsitar/{text}/{member}"
    raise BadInput(f"{unsupported_reason(kind)} ({archive.name} holds this image)")


def _subfile_path(archive: Path, member: str) -> str:
    st = os.stat(archive)
    try:
        ranges = _tar_ranges(str(archive), st.st_size, st.st_mtime_ns)
    except (OSError, tarfile.TarError, EOFError) as err:
        raise BadInput("the archive holding this image cannot be read (corrupt or truncated?)", str(err)) from None
    if _member_key(member) not in ranges:
        raise BadInput("file not found in its archive", f"{member} in {archive}")
    offset, size = ranges[_member_key(member)]
    return f"/vsisubfile/{offset}_{size},{archive}"


def list_members(path: Path) -> list[str]:
    """Names of the regular-file members of a zip / tar / compressed tar, as the archive spells them.

    Raises OSError, zipfile.BadZipFile, tarfile.TarError or EOFError for an unreadable archive, and
    :class:`BadInput` for an archive that is not read in place (7z, rar, bzip2/xz tars, not an archive).
    """
    kind = archive_kind(path)
    if kind not in READABLE:
        raise BadInput(unsupported_reason(kind) or "")
    if kind == ZIP:
        with zipfile.ZipFile(path) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]
    with tarfile.open(path, "r:*") as tf:
        return [member.name for member in tf if member.isfile()]


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of one member (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError on failure)."""
    if archive_kind(archive) == ZIP:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        fh = tf.extractfile(member)
        if fh is None:
            raise KeyError(member)
        return fh.read()
