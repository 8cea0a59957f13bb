"""Archives recognised by their bytes, not their names: every container/name pairing lists and reads in place."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from rs4m import archive
from rs4m.errors import BadInput
from rs4m.raster import gdal_path, open_scene
from rs4m.sources import SceneRef
from rs4m.sources.layouts import Matcher, compile_globs, find_images


def tif_bytes(value: int, size: int = 8) -> bytes:
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=size, height=size, count=3, dtype="uint8") as ds:
            ds.write(np.full((3, size, size), value, np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None])
        return mem.read()


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


MEMBERS = {"inner/a.tif": tif_bytes(10), "inner/b.png": png_bytes(99)}


def tar_bytes(mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    return buf.getvalue()


CONTENTS = {"tar": lambda: tar_bytes("w"), "tar.gz": lambda: tar_bytes("w:gz"), "zip": zip_bytes,
            "tar.bz2": lambda: tar_bytes("w:bz2"), "tar.xz": lambda: tar_bytes("w:xz")}
# (content, file name): the honest names and the mislabelled ones datasets ship
READABLE_CASES = [("tar", "p.tar"), ("tar", "p.tgz"), ("tar", "p.tar.gz"), ("tar", "p.zip"),
                  ("tar.gz", "p.tar.gz"), ("tar.gz", "p.tgz"), ("tar.gz", "p.tar"), ("tar.gz", "p.zip"),
                  ("zip", "p.zip"), ("zip", "p.tar"), ("zip", "p.tgz")]


@pytest.mark.parametrize("content,name", [(c, n) for c, n in READABLE_CASES] +
                         [("tar.bz2", "p.tar.bz2"), ("tar.xz", "p.tar.xz"), ("tar.bz2", "p.tar")])
def test_kind_comes_from_the_bytes(tmp_path, content, name):
    (tmp_path / name).write_bytes(CONTENTS[content]())
    assert archive.archive_kind(tmp_path / name) == content


def test_sniff_tells_compressed_files_from_compressed_tars():
    assert archive.sniff(gzip.compress(b"just text, no tar")) == "gz"
    assert archive.sniff(b"\x89PNG\r\n\x1a\n" + b"\0" * 600) is None
    assert archive.sniff(b"7z\xbc\xaf\x27\x1c\0\0") == "7z" and archive.sniff(b"Rar!\x1a\x07\0") == "rar"
    assert archive.sniff(b"PK\x05\x06" + b"\0" * 18) == "zip"  # an empty zip
    assert archive.sniff(b"BZx not bzip2") is None


@pytest.mark.parametrize("content,name", READABLE_CASES)
def test_members_list_and_read_in_place_whatever_the_name(tmp_path, content, name):
    (tmp_path / name).write_bytes(CONTENTS[content]())
    assert sorted(archive.list_members(tmp_path / name)) == sorted(MEMBERS)
    with open_scene(tmp_path, SceneRef(f"{name}/inner/a.tif")) as reader:
        rgb, _ = reader.read_window(0, 0, 8, 8)
        assert reader.info.driver == "GTiff"
    assert rgb[0, 0].tolist() == [10, 11, 12] and (rgb == rgb[0, 0]).all()
    with open_scene(tmp_path, SceneRef(f"{name}/inner/b.png")) as reader:  # whole-decode: bytes via Python
        png, _ = reader.read_window(0, 0, 5, 6)
    assert (png == 99).all()


def test_gdal_paths_by_content(tmp_path):
    for content, name in [("tar.gz", "gz.tar"), ("tar", "plain.tgz"), ("zip", "z.tar"), ("tar", "t.zip")]:
        (tmp_path / name).write_bytes(CONTENTS[content]())
    assert gdal_path(tmp_path, "gz.tar/inner/a.tif") == f"/vsitar/{{/vsigzip/{tmp_path}/gz.tar}}/inner/a.tif"
    assert gdal_path(tmp_path, "z.tar/inner/a.tif") == f"/vsizip/{{{tmp_path}/z.tar}}/inner/a.tif"
    assert gdal_path(tmp_path, "t.zip/inner/a.tif") == f"/vsitar/{{{tmp_path}/t.zip}}/inner/a.tif"
    with tarfile.open(tmp_path / "plain.tgz", "r:") as tf:
        member = tf.getmember("inner/a.tif")
    assert gdal_path(tmp_path, "plain.tgz/inner/a.tif") == \
        f"/vsisubfile/{member.offset_data}_{member.size},{tmp_path}/plain.tgz"
    with pytest.raises(BadInput, match="not found in its archive"):
        gdal_path(tmp_path, "plain.tgz/inner/missing.tif")


@pytest.mark.parametrize("content", ["tar.bz2", "tar.xz"])
def test_archives_gdal_cannot_read_say_unpack(tmp_path, content):
    (tmp_path / f"p.{content}").write_bytes(CONTENTS[content]())
    with pytest.raises(BadInput, match="unpack it first"):
        open_scene(tmp_path, SceneRef(f"p.{content}/inner/a.tif"))
    matcher = Matcher(compile_globs(["**/*.tif"]), compile_globs([]))
    found, problems = find_images(tmp_path, matcher)
    assert found == [] and [p.path for p in problems] == [f"p.{content}"]
    assert "cannot read in place; unpack it first" in problems[0].reason


def test_find_images_reads_mislabelled_archives(tmp_path):
    (tmp_path / "gz.tar").write_bytes(CONTENTS["tar.gz"]())
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "plain.tgz").write_bytes(CONTENTS["tar"]())
    (tmp_path / "broken.zip").write_bytes(b"not an archive at all")
    found, problems = find_images(tmp_path, Matcher(compile_globs(["**/*.{tif,png}"]), compile_globs([])))
    assert [f.path for f in found] == ["d/plain.tgz/inner/a.tif", "d/plain.tgz/inner/b.png",
                                       "gz.tar/inner/a.tif", "gz.tar/inner/b.png"]
    assert [(p.path, p.reason.split(":")[0]) for p in problems] == [("broken.zip", "archive cannot be read")]


def test_split_member_only_takes_archive_named_files(tmp_path):
    (tmp_path / "x.tar").write_bytes(CONTENTS["tar"]())
    (tmp_path / "dir.zip").mkdir()
    assert archive.split_member(tmp_path, "x.tar/inner/a.tif") == (tmp_path / "x.tar", "inner/a.tif")
    assert archive.split_member(tmp_path, "dir.zip/a.tif") is None
    assert archive.split_member(tmp_path, "plain/a.tif") is None
    assert archive.strip_suffix("train.tar.gz") == "train" and archive.strip_suffix("a.TGZ") == "a"
    assert archive.is_slow("tar.gz") and not archive.is_slow("tar") and not archive.is_slow("zip")


def test_7z_and_rar_are_one_scan_problem_each(tmp_path):
    (tmp_path / "a.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 64)
    (tmp_path / "b.rar").write_bytes(b"Rar!\x1a\x07\x00" + b"\0" * 64)
    found, problems = find_images(tmp_path, Matcher(compile_globs(["**/*.tif"]), compile_globs([])))
    assert found == [] and [(p.path, p.reason) for p in problems] == [
        ("a.7z", "archive is a 7z archive, which is not read in place; unpack it first"),
        ("b.rar", "archive is a rar archive, which is not read in place; unpack it first")]


def test_unpacked_copy_beside_a_gzip_tar_is_taken_instead_of_its_member(tmp_path):
    (tmp_path / "train.tar").write_bytes(CONTENTS["tar.gz"]())
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "a.tif").write_bytes(MEMBERS["inner/a.tif"])  # as `tar xzf train.tar` leaves it
    found, problems = find_images(tmp_path, Matcher(compile_globs(["**/*.{tif,png}"]), compile_globs([])))
    assert problems == [] and [f.path for f in found] == ["inner/a.tif", "train.tar/inner/b.png"]
