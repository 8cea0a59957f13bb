"""Datasets as their releases ship them, made here in tiny form: xView2's PNG and GeoTIFF releases (gzip tars
named .tar, a plain tar named .tgz), HRSC2016's FullDataSet + Train/Test copies with split lists, xView as
tools prepare it, DOTA's grey images under both grey policies, and why a source that yields nothing did so."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.layout import OutputLayout
from rs4m.sources import SceneRef, ScanProblem, get_source

RNG = np.random.default_rng(7)


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args], catch_exceptions=False)


def png(shape=(24, 20, 3)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, shape, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def geotiff(dtype="uint16", size=16) -> bytes:
    """Noise with a footprint of its own (equal footprints would be geo duplicates of each other)."""
    top = np.iinfo(dtype).max
    data = RNG.integers(0, top, (3, size, size)).astype(dtype)
    west = 300000 + 1000 * int(RNG.integers(0, 10**6))
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs="EPSG:32615",
                      transform=from_origin(west, 3300000, 0.5, 0.5)) as ds:
            ds.write(data)
        return mem.read()


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def pack(path: Path, files: dict[str, bytes], mode: str) -> None:
    """A tar of ``files`` at ``path`` ("w" plain, "w:gz" gzip-compressed), whatever the file is named."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def scan(name: str, root: Path, splits=None) -> tuple[dict[str, str | None], list[ScanProblem]]:
    items = list(get_source(name)().scenes(root, splits))
    refs = [i for i in items if isinstance(i, SceneRef)]
    assert len({r.scene_path for r in refs}) == len(refs)
    return {r.scene_path: r.split for r in refs}, [i for i in items if isinstance(i, ScanProblem)]


def manifest_of(out: Path) -> list[dict]:
    return mf.read_table(OutputLayout(out).manifest, mf.MANIFEST_SCHEMA).to_pylist()


def errors_of(out: Path) -> list[dict]:
    return mf.read_table(OutputLayout(out).errors, mf.ERRORS_SCHEMA).to_pylist()


def tile_pixels(out: Path, row: dict) -> np.ndarray:
    with open(OutputLayout(out).shards_dir / row["shard"], "rb") as fh:
        fh.seek(row["offset"])
        return np.asarray(Image.open(io.BytesIO(fh.read(row["length"]))))


# ------------------------------------------------------------------------------------------------- xView2

XVIEW2_SPLITS = {"train": 2, "tier3": 1, "hold": 1, "test": 1}  # pairs per split folder


def xview2_files(ext: str, split_folder=lambda s: s) -> tuple[dict[str, bytes], dict[str, str]]:
    """One release's files (images, labels, targets) and the images' expected split (train for tier1)."""
    files, images = {}, {}
    for split, pairs in XVIEW2_SPLITS.items():
        folder = split_folder(split)
        for k in range(pairs):
            for phase in ("pre", "post"):
                stem = f"hurricane-harvey_{split}{k:04d}_{phase}_disaster"
                image = f"{folder}/images/{stem}.{ext}"
                files[image] = geotiff("uint16" if k % 2 else "uint8") if ext == "tif" else png()
                files[f"{folder}/labels/{stem}.json"] = b"{}"
                files[f"{folder}/targets/{stem}_target.png"] = png((24, 20))
                images[image] = split
    return files, images


def xview2_png_release(root: Path) -> dict[str, str]:
    """The official PNG archives: <split>_images_labels_targets.tar, gzip-compressed inside."""
    files, images = xview2_files("png")
    expected = {}
    for split in XVIEW2_SPLITS:
        name = f"{split}_images_labels_targets.tar"
        pack(root / name, {k: v for k, v in files.items() if k.startswith(f"{split}/")}, "w:gz")
        expected.update({f"{name}/{k}": s for k, s in images.items() if k.startswith(f"{split}/")})
    return expected


def geotiff_folder(split: str) -> str:
    return f"geotiffs/{'tier1' if split == 'train' else split}"


def test_xview2_png_release_in_gzip_tars_named_tar(tmp_path):
    expected = xview2_png_release(tmp_path)
    found, problems = scan("xview2", tmp_path)
    assert problems == [] and found == expected  # every image once, no labels or targets, right split
    found, _ = scan("xview2", tmp_path, get_source("xview2").default_splits())
    assert set(found.values()) == {"train", "tier3"} and len(found) == 6


def test_xview2_geotiff_release_unpacked(tmp_path):
    files, images = xview2_files("tif", geotiff_folder)
    write(tmp_path, files)
    found, problems = scan("xview2", tmp_path)
    assert problems == [] and found == images
    assert found["geotiffs/tier1/images/hurricane-harvey_train0000_pre_disaster.tif"] == "train"


def test_xview2_both_releases_take_each_image_once_as_geotiff(tmp_path):
    write(tmp_path, xview2_files("png")[0])
    tif_files, tif_images = xview2_files("tif", geotiff_folder)
    write(tmp_path, tif_files)
    found, problems = scan("xview2", tmp_path)
    assert problems == [] and found == tif_images


def test_xview2_builds_from_a_gzip_tar_named_tar_and_a_plain_tar_named_tgz(tmp_path):
    """Both mislabelled archives read through a real build: every train/tier3 image is one tile."""
    root = tmp_path / "xview2"
    png_expected = xview2_png_release(root)
    tif_files, tif_images = xview2_files("tif", geotiff_folder)
    pack(root / "xview2_geotiff.tgz", tif_files, "w")  # a plain tar under a gzip name
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"xview2={root}", "--tile-size", 64, "--format", "png",
                     "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    rows = manifest_of(out)
    assert errors_of(out) == []
    tif_names = {Path(p).stem for p in tif_images}
    expected = {p for p, s in png_expected.items() if s in ("train", "tier3") and Path(p).stem not in tif_names}
    expected |= {f"xview2_geotiff.tgz/{p}" for p, s in tif_images.items() if s in ("train", "tier3")}
    assert sorted(r["scene_path"] for r in rows) == sorted(expected)
    tifs = [r for r in rows if r["scene_path"].endswith(".tif")]
    assert tifs and all(r["crs"] == "EPSG:32615" and r["gsd_m"] == pytest.approx(0.5) for r in tifs)
    assert {r["dtype"] for r in tifs} == {"uint8", "uint16"}


def test_xview2_png_release_builds_from_gzip_tars_and_says_they_are_slow(tmp_path, caplog):
    root = tmp_path / "xview2"
    expected = xview2_png_release(root)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="rs4m"):
        result = run_cli("build", out, "--source", f"xview2={root}", "--tile-size", 64, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(r["scene_path"] for r in manifest_of(out)) == \
        sorted(p for p, s in expected.items() if s in ("train", "tier3"))
    notes = [m for m in caplog.messages if "gzip-compressed tar" in m]
    assert [n.split(" images are read in place from ")[1].split(",")[0] for n in notes] == \
        ["tier3_images_labels_targets.tar", "train_images_labels_targets.tar"]  # one line per archive read
    assert "source xview2: 4 images" in notes[1] and "tar xzf train_images_labels_targets.tar" in notes[1]


# --------------------------------------------------------------------------------------------- HRSC2016

HRSC_LISTS = {"train": ["100000001", "100000002"], "val": ["100000003", "100000004"],
              "test": ["100000005", "100000006"]}


def bmp() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, format="BMP")
    return buf.getvalue()


def hrsc_release(root: Path, lists: bool = True) -> None:
    """FullDataSet with every image, Train/ (train + val) and Test/ copies, masks beside them."""
    files = {}
    for split, ids in HRSC_LISTS.items():
        copy = "Test" if split == "test" else "Train"
        for i in ids:
            files[f"HRSC2016/FullDataSet/AllImages/{i}.bmp"] = files[f"HRSC2016/{copy}/AllImages/{i}.bmp"] = bmp()
            files[f"HRSC2016/FullDataSet/Segmentations/{i}.bmp"] = bmp()
            files[f"HRSC2016/FullDataSet/LandMask/{i}.bmp"] = bmp()
            files[f"HRSC2016/FullDataSet/Annotations/{i}.xml"] = b"<x/>"
        if lists:
            files[f"HRSC2016/ImageSets/{split}.txt"] = "\n".join(ids).encode()
    if lists:
        files["HRSC2016/ImageSets/trainval.txt"] = "\n".join(HRSC_LISTS["train"] + HRSC_LISTS["val"]).encode()
    write(root, files)


def test_hrsc_split_lists_are_authoritative_and_copies_are_one_scene(tmp_path):
    hrsc_release(tmp_path)
    found, problems = scan("hrsc2016", tmp_path)
    assert problems == []
    assert found == {f"HRSC2016/FullDataSet/AllImages/{i}.bmp": split
                     for split, ids in HRSC_LISTS.items() for i in ids}  # val stays val though in Train/
    default, _ = scan("hrsc2016", tmp_path, get_source("hrsc2016").default_splits())
    assert sorted(default.values()) == ["train", "train", "val", "val"]


def test_hrsc_without_lists_takes_the_split_from_any_copy(tmp_path):
    hrsc_release(tmp_path, lists=False)
    found, _ = scan("hrsc2016", tmp_path)
    assert len(found) == 6 and all("/FullDataSet/" in p for p in found)
    assert sorted(found.values()) == ["test", "test", "train", "train", "train", "train"]


# ------------------------------------------------------------------------------------------------- xView

@pytest.mark.parametrize("layout", ["prepared", "official"])
def test_xview_layouts(tmp_path, layout):
    folders = {"train": "images/train", "val": "images/val"} if layout == "prepared" else \
        {"train": "train_images", "val": "val_images"}
    files = {f"{folders['train']}/{i}.tif": geotiff("uint8") for i in (10, 11)}
    files[f"{folders['val']}/20.tif"] = geotiff("uint8")
    files.update({"labels/train/10.txt": b"0 0.5 0.5 0.1 0.1", "train_labels/xView_train.geojson": b"{}",
                  "autosplit_train.txt": b"./images/train/10.tif"})
    write(tmp_path, files)
    found, problems = scan("xview", tmp_path)
    assert problems == []
    assert found == {f"{folders['train']}/10.tif": "train", f"{folders['train']}/11.tif": "train",
                     f"{folders['val']}/20.tif": "val"}


# ---------------------------------------------------------------------------------------------- grey

def dota_with_grey(root: Path) -> np.ndarray:
    """train/images: one RGB and one grey (mode L) PNG; returns the grey pixels."""
    grey = RNG.integers(0, 255, (30, 40), dtype=np.uint8)
    write(root, {"train/images/P0001.png": png((30, 40, 3)), "train/labelTxt/P0001.txt": b"",
                 "val/images/P0003.png": png((30, 40, 3))})
    Image.fromarray(grey).save(root / "train/images/P0002.png")
    return grey


def test_grey_replicate_is_dotas_default(tmp_path):
    grey = dota_with_grey(tmp_path / "dota")
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"dota_v1={tmp_path / 'dota'}", "--format", "png",
                     "--tile-size", 64, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    rows = {r["scene_path"]: r for r in manifest_of(out)}
    assert sorted(rows) == ["train/images/P0001.png", "train/images/P0002.png", "val/images/P0003.png"]
    assert rows["train/images/P0002.png"]["bands"] == 1 and rows["train/images/P0001.png"]["bands"] == 3
    pixels = tile_pixels(out, rows["train/images/P0002.png"])
    assert pixels.shape == (30, 40, 3)
    assert all(np.array_equal(pixels[..., k], grey) for k in range(3))  # R = G = B = the grey band
    record = json.loads(OutputLayout(out).build_json.read_text())
    assert record["sources"][0]["tile"]["grey"] == "replicate"
    import rs4m

    kept = rs4m.open(out).manifest(["scene_path"], where="bands == 3").column("scene_path").to_pylist()
    assert sorted(kept) == ["train/images/P0001.png", "val/images/P0003.png"]  # the filter drops the grey one


@pytest.mark.parametrize("how", ["flag", "recipe"])
def test_grey_refuse_makes_an_error_row(tmp_path, how):
    dota_with_grey(tmp_path / "dota")
    out = tmp_path / "out"
    if how == "flag":
        args = ["--source", f"dota_v1={tmp_path / 'dota'},grey=refuse"]
    else:
        (tmp_path / "r.toml").write_text('[[sources]]\nname = "dota_v1"\npath = "dota"\ngrey = "refuse"\n')
        args = ["--recipe", tmp_path / "r.toml", "--root", tmp_path]
    result = run_cli("build", out, *args, "--tile-size", 64, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(r["scene_path"] for r in manifest_of(out)) == ["train/images/P0001.png", "val/images/P0003.png"]
    assert [(e["path"], e["stage"], e["reason"]) for e in errors_of(out)] == \
        [("train/images/P0002.png", "scan", "1 band: a single grey band is not an RGB image")]


def test_grey_refuse_is_the_default_elsewhere_and_bad_values_stop(tmp_path):
    write(tmp_path / "dior", {"JPEGImages-trainval/00001.jpg": b""})
    Image.fromarray(RNG.integers(0, 255, (20, 20), dtype=np.uint8)).save(
        tmp_path / "dior/JPEGImages-trainval/00001.jpg")
    Image.fromarray(RNG.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
        tmp_path / "dior/JPEGImages-trainval/00002.jpg")
    assert get_source("dior").grey == "refuse" and get_source("isaid").grey == "replicate"
    out = tmp_path / "out"
    result = run_cli("build", out, "--source", f"dior={tmp_path / 'dior'}", "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert [r["scene_path"] for r in manifest_of(out)] == ["JPEGImages-trainval/00002.jpg"]
    assert [e["path"] for e in errors_of(out)] == ["JPEGImages-trainval/00001.jpg"]
    bad = run_cli("build", tmp_path / "o2", "--source", f"dior={tmp_path / 'dior'},grey=rgb", "-q")
    assert bad.exit_code == 2 and "grey must be one of refuse, replicate" in bad.output


# --------------------------------------------------------------------------------- nothing readable

def test_nothing_matched_the_layout(tmp_path):
    write(tmp_path / "dior", {"photos/a.jpg": png(), "Annotations/1.xml": b"<x/>"})
    result = run_cli("build", tmp_path / "out", "--source", f"dior={tmp_path / 'dior'}", "-q")
    assert result.exit_code == 2
    assert "nothing readable: source dior: no images matched the layout" in result.output
    assert "looked for **/*Images*/**/*.jpg" in result.output and "rs4m tile" not in result.output


def test_all_images_in_excluded_splits(tmp_path):
    write(tmp_path / "dota", {"test/images/P0001.png": png(), "test/images/P0002.png": png()})
    result = run_cli("build", tmp_path / "out", "--source", f"dota_v1={tmp_path / 'dota'}", "-q")
    assert result.exit_code == 2
    assert "source dota_v1: all 2 images are in splits not read (test 2; read: train, val" in result.output


def test_all_images_refused_says_the_top_reasons(tmp_path):
    write(tmp_path / "junk", {"a.png": b"not a png", "b.png": b"nor this", "c.tif": b""})
    result = run_cli("build", tmp_path / "out", "--source", f"folder={tmp_path / 'junk'}", "-q")
    assert result.exit_code == 2
    assert ("source folder/junk: all 3 images were refused: not an image file (no reader recognises its "
            "contents) (2); empty file (0 bytes) (1)") in result.output
    assert len(errors_of(tmp_path / "out")) == 3 and not OutputLayout(tmp_path / "out").scenes.exists()


def test_one_empty_source_is_named_while_the_others_build(tmp_path, caplog):
    write(tmp_path / "good", {"a.png": png()})
    write(tmp_path / "dota", {"test/images/P0001.png": png()})
    with caplog.at_level(logging.WARNING, logger="rs4m"):
        result = run_cli("build", tmp_path / "out", "--source", f"folder={tmp_path / 'good'}",
                         "--source", f"dota_v1={tmp_path / 'dota'}", "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert [r["scene_path"] for r in manifest_of(tmp_path / "out")] == ["a.png"]
    assert any("source dota_v1 yielded nothing: all 1 images are in splits not read" in m
               for m in caplog.messages)
