"""Source adapters: exact image sets on real dataset layouts (unpacked and archived), splits, fixtures in the
documented layouts, the folder adapter's edge cases, ``rs4m sources`` and the shipped recipes."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rs4m.errors import SourceError
from rs4m.sources import SceneRef, ScanProblem, get_source, list_sources
from rs4m.sources.layouts import ARCHIVE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT.parent / "shared" / "data" / "layouts"
needs_layouts = pytest.mark.skipif(not LAYOUTS.is_dir(), reason=f"dataset layouts not found at {LAYOUTS}")

# Potsdam / Vaihingen benchmark test tiles, written out here independently of the adapters.
POTSDAM_TEST = {"2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14",
                "6_15", "7_13"}
VAIHINGEN_TEST = {2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38}

# adapter, layout folder, pathlib glob of every image in the unpacked layout, which of them are benchmark test
LAYOUT_CASES = [
    ("dota_v1", "dota", "*/images/*.png", lambda p: p.startswith("test/")),
    ("dota_v15", "dota", "*/images/*.png", lambda p: p.startswith("test/")),
    ("dior", "dior", "Images/*/*.jpg", lambda p: p.startswith("Images/test/")),
    ("fair1m", "fair1m", "**/images/*.tif", lambda p: p.startswith("test/")),
    ("loveda", "loveda", "*/*/images_png/*.png", lambda p: p.startswith("Test/")),
    ("millionaid", "millionaid", "*/**/*.jpg", lambda p: False),
    ("resisc45", "resisc45", "NWPU-RESISC45/*/*.jpg", lambda p: True),
    ("ucmerced", "ucmerced", "UCMerced_LandUse/Images/*/*.tif", lambda p: False),
    ("patternnet", "patternnet", "PatternNet/images/*/*.jpg", lambda p: False),
    ("vhr10", "vhr10", "NWPU VHR-10 dataset/* image set/*.jpg", lambda p: False),
    ("potsdam", "potsdam", "4_Ortho_RGBIR/*_RGBIR.tif",
     lambda p: "_".join(p.rsplit("/", 1)[-1].split("_")[2:4]) in POTSDAM_TEST),
    ("vaihingen", "vaihingen", "top/*.tif", lambda p: int(p.split("area")[1].split(".")[0]) in VAIHINGEN_TEST),
    ("inria", "inria", "AerialImageDataset/*/images/*.tif", lambda p: "/test/" in p),
    ("xview2", "xview2", "*/images/*.png", lambda p: p.startswith("test/")),
    ("spacenet1", "spacenet", "spacenet1/SN1_buildings/*/3band/*.tif", lambda p: "/test/" in p),
    ("gid", "gid15", "GID/img_dir/*/*.tif", lambda p: "/test/" in p),
    ("deepglobe_landcover", "deepglobelandcover", "data/*/images/*_sat.jpg", lambda p: "/test_data/" in p),
]
CASE_IDS = [c[0] for c in LAYOUT_CASES]
#: folder names and file-name parts that mark masks, labels and annotations in these layouts
LABEL_MARKS = ("mask", "label", "/gt/", "target", "ann_dir", "annotation", "8band")


def refs_of(items) -> list[SceneRef]:
    return [i for i in items if isinstance(i, SceneRef)]


def problems_of(items) -> list[ScanProblem]:
    return [i for i in items if isinstance(i, ScanProblem)]


def scan(name: str, root: Path, splits=None, **kwargs) -> list:
    return list(get_source(name)(**kwargs).scenes(root, splits))


def logical(scene_path: str) -> str:
    """Where an archive member lies once unpacked: ``d/a.zip/m`` → ``d/m`` (independent of the adapters)."""
    parts = scene_path.split("/")
    for i, part in enumerate(parts):
        if part.lower().endswith(ARCHIVE_SUFFIXES):
            return "/".join(parts[:i] + parts[i + 1:])
    return scene_path


def expected_images(folder: Path, pattern: str) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.glob(pattern) if p.is_file()}


def archives_only(src: Path, dst: Path) -> Path:
    """A copy of ``src`` holding only its archives (symlinked, at the same relative places)."""
    for dirpath, _dirs, files in os.walk(src):
        for f in files:
            if f.lower().endswith(ARCHIVE_SUFFIXES):
                target = dst / Path(dirpath).relative_to(src) / f
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(Path(dirpath) / f)
    return dst


# --------------------------------------------------------------------------------- real dataset layouts


@needs_layouts
@pytest.mark.parametrize("name,folder,pattern,is_test", LAYOUT_CASES, ids=CASE_IDS)
def test_layout_yields_exactly_its_images(name, folder, pattern, is_test):
    root = LAYOUTS / folder
    expected = expected_images(root, pattern)
    assert expected, f"no images matched {pattern} in {root}"
    items = scan(name, root)
    paths = [r.scene_path for r in refs_of(items)]
    assert problems_of(items) == []
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    assert set(paths) == expected  # the archives beside the folders add nothing: each image once
    assert not [p for p in paths if any(m in p.lower() for m in LABEL_MARKS)]
    assert paths == [r.scene_path for r in refs_of(scan(name, root))]  # deterministic


@needs_layouts
@pytest.mark.parametrize("name,folder,pattern,is_test", LAYOUT_CASES, ids=CASE_IDS)
def test_layout_default_splits_leave_out_test_images(name, folder, pattern, is_test):
    cls = get_source(name)
    expected = {p for p in expected_images(LAYOUTS / folder, pattern) if not is_test(p)}
    refs = refs_of(scan(name, LAYOUTS / folder, cls.default_splits()))
    assert {r.scene_path for r in refs} == expected
    assert not any(r.split in cls.test_splits for r in refs)


@needs_layouts
@pytest.mark.parametrize("name,folder,pattern,is_test", LAYOUT_CASES, ids=CASE_IDS)
def test_layout_archive_form(name, folder, pattern, is_test, tmp_path):
    root = archives_only(LAYOUTS / folder, tmp_path / folder)
    items = scan(name, root)
    refs = refs_of(items)
    assert problems_of(items) == []
    assert all(logical(r.scene_path) != r.scene_path for r in refs)  # every scene is an archive member
    assert sorted(logical(r.scene_path) for r in refs) == sorted(expected_images(LAYOUTS / folder, pattern))
    default = refs_of(scan(name, root, get_source(name).default_splits()))
    assert sorted(logical(r.scene_path) for r in default) == sorted(
        p for p in expected_images(LAYOUTS / folder, pattern) if not is_test(logical(p)))


@needs_layouts
def test_masks_exist_in_layouts_but_are_never_taken():
    # The layouts do hold label rasters next to the images (so the tests above can fail) ...
    for folder, mask_glob in [("loveda", "*/*/masks_png/*.png"), ("inria", "**/gt/*.tif"),
                              ("xview2", "*/targets/*.png"), ("deepglobelandcover", "**/*_mask.png"),
                              ("potsdam", "*_label.tif"), ("gid15", "GID/ann_dir/*/*.png")]:
        assert list((LAYOUTS / folder).glob(mask_glob)), folder
    # ... and Vaihingen's label rasters share the image file names, one folder up.
    labels = {p.name for p in (LAYOUTS / "vaihingen").glob("*.tif")}
    images = {Path(r.scene_path).name for r in refs_of(scan("vaihingen", LAYOUTS / "vaihingen"))}
    assert labels == images
    assert all(r.scene_path.startswith("top/") for r in refs_of(scan("vaihingen", LAYOUTS / "vaihingen")))


@needs_layouts
def test_potsdam_rgbir_read_as_bands_1_to_3():
    refs = refs_of(scan("potsdam", LAYOUTS / "potsdam"))
    assert {r.rgb_bands for r in refs} == {(1, 2, 3)}
    assert {r.split for r in refs} == {"train", "test"}


@needs_layouts
def test_dota_versions_skip_other_versions_archives(tmp_path):
    root = archives_only(LAYOUTS / "dota", tmp_path / "dota")
    v1 = [r.scene_path for r in refs_of(scan("dota_v1", root))]
    assert v1 and all(p.startswith("dotav1.") for p in v1)
    only_v2 = tmp_path / "v2"
    only_v2.mkdir()
    for f in root.glob("dotav2.0_images_*"):
        (only_v2 / f.name).symlink_to(f.resolve())
    assert refs_of(scan("dota_v1", only_v2)) == []
    assert len(refs_of(scan("dota_v2", only_v2))) == len(v1)


@needs_layouts
def test_unpacked_copy_preferred_over_archive_member(tmp_path):
    (tmp_path / "Images_trainval.zip").symlink_to(LAYOUTS / "dior" / "Images_trainval.zip")
    unpacked = tmp_path / "Images" / "trainval" / "000003.jpg"
    unpacked.parent.mkdir(parents=True)
    shutil.copy(LAYOUTS / "dior" / "Images" / "trainval" / "000003.jpg", unpacked)
    paths = [r.scene_path for r in refs_of(scan("dior", tmp_path))]
    assert len(paths) == 6
    assert "Images/trainval/000003.jpg" in paths
    assert "Images_trainval.zip/Images/trainval/000003.jpg" not in paths
    assert sum(p.startswith("Images_trainval.zip/") for p in paths) == 5


@needs_layouts
def test_recipe_glob_overrides_pattern_but_not_exclusions():
    refs = refs_of(scan("ucmerced", LAYOUTS / "ucmerced", glob="**/airplane*.tif"))
    assert [r.scene_path for r in refs] == ["UCMerced_LandUse/Images/airplane/airplane00.tif"]
    masks = refs_of(scan("loveda", LAYOUTS / "loveda", glob="**/*.png"))
    assert len(masks) == 6 and not any("masks_png" in r.scene_path for r in masks)


@needs_layouts
def test_unknown_split_is_an_error():
    with pytest.raises(SourceError, match="unknown split.*'training'.*train, val, test"):
        scan("loveda", LAYOUTS / "loveda", ("training",))


# ------------------------------------------------------------------------------ fixtures in documented layouts


def write_image(path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (40, 90, 30)).save(path, format=fmt)


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def build(root: Path, images: list[str], others: list[str] = ()) -> Path:
    for rel in images:
        write_image(root / rel)
    for rel in others:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not an image")
    return root


def splits_of(items) -> dict[str, str | None]:
    return {r.scene_path: r.split for r in refs_of(items)}


def test_fmow_takes_rgb_images_only(tmp_path):
    root = build(tmp_path, ["train/airport/airport_0/airport_0_0_rgb.jpg", "train/airport/airport_0/airport_0_1_rgb.jpg",
                            "train/airport/airport_0/airport_0_0_msrgb.jpg", "val/dam/dam_3/dam_3_0_rgb.jpg",
                            "test/0000000/0000000_0_rgb.jpg", "seq/0000001/0000001_0_rgb.jpg"],
                 ["train/airport/airport_0/airport_0_0_rgb.json"])
    assert splits_of(scan("fmow", root)) == {
        "seq/0000001/0000001_0_rgb.jpg": "seq", "test/0000000/0000000_0_rgb.jpg": "test",
        "train/airport/airport_0/airport_0_0_rgb.jpg": "train", "train/airport/airport_0/airport_0_1_rgb.jpg": "train",
        "val/dam/dam_3/dam_3_0_rgb.jpg": "val"}
    default = refs_of(scan("fmow", root, get_source("fmow").default_splits()))
    assert [r.split for r in default] == ["train", "train", "val"]


def test_aid_is_a_benchmark_left_out_by_default(tmp_path):
    root = build(tmp_path, [f"AID/{c}/{c.lower()}_{i}.jpg" for c in ("Airport", "BareLand") for i in (1, 2, 3)])
    assert refs_of(scan("aid", root, get_source("aid").default_splits())) == []
    refs = refs_of(scan("aid", root, ("all",)))
    assert len(refs) == 6 and {r.split for r in refs} == {"all"}


def test_whu_rs19_all_images_any_format(tmp_path):
    root = build(tmp_path, ["WHU-RS19/Airport/airport_01.jpg", "WHU-RS19/Beach/beach_01.jpg",
                            "WHU-RS19/Forest/forest_01.tif"], ["WHU-RS19/readme.txt"])
    refs = refs_of(scan("whu_rs19", root, get_source("whu_rs19").default_splits()))
    assert [r.scene_path for r in refs] == ["WHU-RS19/Airport/airport_01.jpg", "WHU-RS19/Beach/beach_01.jpg",
                                            "WHU-RS19/Forest/forest_01.tif"]


def test_rsd46_splits_and_images_in_no_split(tmp_path):
    root = build(tmp_path, ["RSD46-WHU/train/Airport/1.jpg", "RSD46-WHU/train/Bridge/2.jpg",
                            "RSD46-WHU/test/Airport/3.jpg", "RSD46-WHU/extra/4.jpg"])
    items = scan("rsd46_whu", root, get_source("rsd46_whu").default_splits())
    assert [r.scene_path for r in refs_of(items)] == ["RSD46-WHU/train/Airport/1.jpg", "RSD46-WHU/train/Bridge/2.jpg"]
    assert [p.path for p in problems_of(items)] == ["RSD46-WHU/extra/4.jpg"]
    assert len(refs_of(scan("rsd46_whu", root))) == 4  # no splits asked: everything, split or not


def test_hrsc2016_split_lists_and_masks(tmp_path):
    ids = ["100000001", "100000002", "100000003", "100000004"]
    root = build(tmp_path, [f"HRSC2016/FullDataSet/AllImages/{i}.bmp" for i in ids]
                 + ["HRSC2016/FullDataSet/Segmentations/100000001.png", "HRSC2016/FullDataSet/LandMask/100000001.bmp"])
    for split, listed in (("train", ids[0]), ("val", ids[1]), ("test", ids[2])):
        (root / "HRSC2016/ImageSets").mkdir(parents=True, exist_ok=True)
        (root / f"HRSC2016/ImageSets/{split}.txt").write_text(listed + "\n")
    assert splits_of(scan("hrsc2016", root)) == {
        f"HRSC2016/FullDataSet/AllImages/{i}.bmp": s for i, s in zip(ids, ["train", "val", "test", None])}
    items = scan("hrsc2016", root, get_source("hrsc2016").default_splits())
    assert len(refs_of(items)) == 2
    assert [p.path for p in problems_of(items)] == ["HRSC2016/FullDataSet/AllImages/100000004.bmp"]
    folders = build(tmp_path / "f", ["Train/AllImages/1.bmp", "Test/AllImages/2.bmp"])
    assert splits_of(scan("hrsc2016", folders)) == {"Test/AllImages/2.bmp": "test", "Train/AllImages/1.bmp": "train"}


def test_xview_unpacked_and_tgz(tmp_path):
    root = build(tmp_path, ["train_images/10.tif", "val_images/20.tif"], ["train_labels/xView_train.geojson"])
    write_tar(root / "train_images.tgz", {"train_images/10.tif": image_bytes("TIFF"),
                                         "train_images/11.tif": image_bytes("TIFF")})
    assert splits_of(scan("xview", root)) == {"train_images.tgz/train_images/11.tif": "train",
                                              "train_images/10.tif": "train", "val_images/20.tif": "val"}
    assert len(refs_of(scan("xview", root, get_source("xview").default_splits()))) == 2


def test_isaid_never_takes_its_masks(tmp_path):
    root = build(tmp_path, ["train/images/P0000.png", "train/Instance_masks/images/P0000_instance_id_RGB.png",
                            "train/Semantic_masks/images/P0000_instance_color_RGB.png", "val/images/P0001.png",
                            "test/images/P0002.png"])
    assert [r.scene_path for r in refs_of(scan("isaid", root, get_source("isaid").default_splits()))] == [
        "train/images/P0000.png", "val/images/P0001.png"]


def test_dior_r_official_layout_and_numbering(tmp_path):
    root = build(tmp_path, ["JPEGImages-trainval/00001.jpg", "JPEGImages-test/11726.jpg",
                            "JPEGImages/00002.jpg", "JPEGImages/11800.jpg"], ["Annotations/00001.xml"])
    assert splits_of(scan("dior_r", root)) == {"JPEGImages-test/11726.jpg": "test", "JPEGImages-trainval/00001.jpg":
                                               "trainval", "JPEGImages/00002.jpg": "trainval",
                                               "JPEGImages/11800.jpg": "test"}


def test_dota_v2_test_dev_and_challenge(tmp_path):
    root = build(tmp_path, ["train/images/P0000.png", "val/images/P0001.png", "test-dev/images/P9000.png",
                            "test-challenge/images/P9500.png"], ["train/labelTxt-v2.0/P0000.txt"])
    cls = get_source("dota_v2")
    assert sorted(splits_of(scan("dota_v2", root)).values()) == sorted(["train", "val", *cls.test_splits])
    assert len(refs_of(scan("dota_v2", root, cls.default_splits()))) == 2


def test_spacenet2_rgb_pansharpen_only(tmp_path):
    root = build(tmp_path, ["AOI_2_Vegas_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_2_Vegas_img1.tif",
                            "AOI_2_Vegas_Train/MUL/MUL_AOI_2_Vegas_img1.tif", "AOI_2_Vegas_Train/PAN/PAN_AOI_2_Vegas_img1.tif",
                            "AOI_2_Vegas_Test_public/RGB-PanSharpen/RGB-PanSharpen_AOI_2_Vegas_img9.tif"])
    write_tar(root / "SN2_buildings_train_AOI_3_Paris.tar.gz",
              {"AOI_3_Paris_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_3_Paris_img1.tif": image_bytes("TIFF"),
               "AOI_3_Paris_Train/MUL/MUL_AOI_3_Paris_img1.tif": image_bytes("TIFF")})
    assert splits_of(scan("spacenet2", root)) == {
        "AOI_2_Vegas_Test_public/RGB-PanSharpen/RGB-PanSharpen_AOI_2_Vegas_img9.tif": "test",
        "AOI_2_Vegas_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_2_Vegas_img1.tif": "train",
        "SN2_buildings_train_AOI_3_Paris.tar.gz/AOI_3_Paris_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_3_Paris_img1.tif":
            "train"}


def test_millionaid_flat_test_and_archive_without_top_folder(tmp_path):
    root = build(tmp_path, ["test/P0000001.jpg", "test/P0000002.jpg"])
    write_zip(root / "train.zip", {"transportation_land/railway_area/train_station/P0011232.jpg": image_bytes("JPEG"),
                                   "__MACOSX/._P0011232.jpg": b"apple double"})
    assert splits_of(scan("millionaid", root)) == {
        "test/P0000001.jpg": "test", "test/P0000002.jpg": "test",
        "train.zip/transportation_land/railway_area/train_station/P0011232.jpg": "train"}


def test_potsdam_prefers_rgb_over_rgbir_and_skips_irrg(tmp_path):
    root = build(tmp_path, ["2_Ortho_RGB/top_potsdam_2_10_RGB.tif", "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif",
                            "4_Ortho_RGBIR/top_potsdam_7_13_RGBIR.tif", "3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif",
                            "5_Labels_all/top_potsdam_2_10_label.tif"])
    refs = refs_of(scan("potsdam", root))
    assert [(r.scene_path, r.split, r.rgb_bands) for r in refs] == [
        ("2_Ortho_RGB/top_potsdam_2_10_RGB.tif", "train", None),
        ("4_Ortho_RGBIR/top_potsdam_7_13_RGBIR.tif", "test", (1, 2, 3))]


def test_archive_member_names_are_normalised(tmp_path):
    write_tar(tmp_path / "Train.tar.gz", {"./Train/Urban/images_png/1.png": image_bytes("PNG"),
                                          "./Train/Urban/masks_png/1.png": image_bytes("PNG"),
                                          "../escape/images_png/2.png": image_bytes("PNG")})
    assert [r.scene_path for r in refs_of(scan("loveda", tmp_path))] == ["Train.tar.gz/Train/Urban/images_png/1.png"]


def test_corrupt_archive_and_empty_folder_are_problems(tmp_path):
    (tmp_path / "Images_trainval.zip").write_bytes(b"PK\x03\x04 truncated")
    write_image(tmp_path / "Images" / "test" / "000001.jpg")
    items = scan("dior", tmp_path)
    assert [r.scene_path for r in refs_of(items)] == ["Images/test/000001.jpg"]
    assert [(p.path, "archive cannot be read" in p.reason) for p in problems_of(items)] == [
        ("Images_trainval.zip", True)]
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = scan("loveda", empty)
    assert len(nothing) == 1 and nothing[0].path == "." and "no LoveDA images" in nothing[0].reason


# -------------------------------------------------------------------------------------------- folder adapter


def folder_scan(root: Path, **kwargs) -> list:
    return scan("folder", root, **kwargs)


def test_folder_every_file_sorted_sidecars_skipped(tmp_path):
    root = tmp_path / "my-tiles"
    build(root, ["b/z.png", "a.tif", "b/a.jpg", "a-b/x.tif"],
          ["notes.txt", "a.tif.aux.xml", "meta.json", "pack.zip", "b/c.tar.gz", ".hidden.png", "text.png"])
    paths = [r.scene_path for r in refs_of(folder_scan(root))]
    assert paths == ["a-b/x.tif", "a.tif", "b/a.jpg", "b/z.png", "text.png"]  # a text file named .png is kept
    assert paths == [r.scene_path for r in refs_of(folder_scan(root))]
    assert get_source("folder")().source_name(root) == "folder/my-tiles"
    assert get_source("folder").licence == "unknown"


def test_folder_glob_on_names_or_paths(tmp_path):
    build(tmp_path, ["a.tif", "sub/b.TIF", "sub/c.png", "other/d.tif"])
    assert [r.scene_path for r in refs_of(folder_scan(tmp_path, glob="*.tif"))] == ["a.tif", "other/d.tif",
                                                                                   "sub/b.TIF"]
    assert [r.scene_path for r in refs_of(folder_scan(tmp_path, glob="sub/*"))] == ["sub/b.TIF", "sub/c.png"]


def test_folder_non_ascii_names(tmp_path):
    names = ["gööd-ünïcode.tif", "森林/影像 1.png", "ñ/ß.jpg"]
    build(tmp_path, names)
    assert [r.scene_path for r in refs_of(folder_scan(tmp_path))] == sorted(names)


def test_folder_symlink_loop_is_a_problem_not_a_hang(tmp_path):
    build(tmp_path, ["a/x.tif", "a/b/y.tif"])
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "dangling.tif").symlink_to(tmp_path / "missing.tif")
    items = folder_scan(tmp_path)
    assert [r.scene_path for r in refs_of(items)] == ["a/b/y.tif", "a/x.tif"]
    assert [(p.path, p.reason.split(":")[0]) for p in problems_of(items)] == [
        ("a/b/loop", "symlink loop"), ("dangling.tif", "broken symlink")]


def test_folder_unreadable_folder_is_a_problem(tmp_path, monkeypatch):
    build(tmp_path, ["ok/a.tif", "locked/b.tif"])
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("rs4m.sources.layouts.os.scandir", scandir)
    items = folder_scan(tmp_path)
    assert [r.scene_path for r in refs_of(items)] == ["ok/a.tif"]
    assert [(p.path, "permission denied" in p.reason) for p in problems_of(items)] == [("locked", True)]


def test_folder_undecodable_file_name_is_a_problem(tmp_path):
    build(tmp_path, ["good.tif"])
    try:
        fd = os.open(os.fsencode(tmp_path) + b"/bad\xff.tif", os.O_CREAT | os.O_WRONLY)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    os.close(fd)
    items = folder_scan(tmp_path)
    assert [r.scene_path for r in refs_of(items)] == ["good.tif"]
    assert [p.path for p in problems_of(items)] == ["bad\\xff.tif"]


# -------------------------------------------------------------------------------------- CLI and recipes

REQUIRED = {"millionaid", "fmow", "dota_v1", "dota_v15", "dota_v2", "isaid", "dior", "dior_r", "fair1m", "xview",
            "xview2", "loveda", "potsdam", "vaihingen", "inria", "spacenet1", "spacenet2", "aid", "resisc45",
            "ucmerced", "whu_rs19", "patternnet", "rsd46_whu", "gid", "deepglobe_landcover", "vhr10", "hrsc2016",
            "folder"}


def test_sources_json_lists_every_adapter_with_licence():
    from rs4m.cli import get_cli

    result = CliRunner().invoke(get_cli(), ["sources", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    names = [f["name"] for f in facts]
    assert len(facts) >= 23 and REQUIRED <= set(names) and names == sorted(names)
    assert all(f["licence"] for f in facts)
    by_name = {f["name"]: f for f in facts}
    assert by_name["loveda"]["licence"] == "CC-BY-NC-SA-4.0" and by_name["loveda"]["test_splits"] == ["test"]
    assert by_name["folder"]["licence"] == "unknown"


def test_sources_table():
    from rs4m.cli import get_cli

    result = CliRunner().invoke(get_cli(), ["sources"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "TITLE"] and len(lines) == len(list_sources()) + 1
    row = next(line for line in lines if line.startswith("resisc45 "))
    assert "CC-BY-NC-4.0" in row and "0.2-30 m" in row and row.split()[-1] == "all"


def test_every_adapter_states_its_facts():
    for cls in list_sources():
        assert cls.name == cls.name.lower() and cls.title and cls.licence, cls.name
        assert cls.tiling in ("tile", "whole"), cls.name
        assert set(cls.test_splits) <= set(cls.splits), cls.name
        if cls.name not in ("folder", "bandstack"):
            assert cls.citation and cls.splits and cls.layout_notes, cls.name


RECIPES = sorted((ROOT / "manifests").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_names_real_adapters_and_splits(recipe):
    data = tomllib.loads(recipe.read_text(encoding="utf-8"))
    assert data["sources"]
    for entry in data["sources"]:
        cls = get_source(entry["name"])  # SourceError for an unknown adapter
        for split in entry.get("splits", []):
            assert split in cls.splits, f"{recipe.name}: {cls.name} has no split {split!r}"
        read = entry["splits"] if "splits" in entry else (cls.default_splits() or tuple(cls.splits))
        assert not set(read) & set(cls.test_splits), f"{recipe.name}: {cls.name} reads a benchmark test split"
    for name in data.get("dedup", {}).get("source_priority", []):
        get_source(name)


def test_rs4m_recipe_leaves_evaluation_benchmarks_out():
    data = tomllib.loads((ROOT / "manifests" / "rs4m.toml").read_text(encoding="utf-8"))
    names = [e["name"] for e in data["sources"]]
    assert len(names) == len(set(names))
    assert not {"aid", "resisc45", "spacenet1"} & set(names)
    assert {"dota_v2", "dior", "fair1m", "millionaid", "fmow", "loveda", "xview"} <= set(names)
    assert len({"dota_v1", "dota_v15", "dota_v2", "isaid"} & set(names)) == 1  # one copy of DOTA's images
    assert len({"dior", "dior_r"} & set(names)) == 1


# ---------------------------------------------------------------------------------------- README table


def readme_table_rows() -> list[list[str]]:
    from rs4m_tools.adapters._table import BEGIN, END

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip().splitlines()
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block[2:]]


def test_readme_adapters_table_is_generated_from_the_adapters():
    from rs4m_tools.adapters._table import BEGIN, END, adapters_table

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text[text.index(BEGIN):text.index(END) + len(END)] == adapters_table(), \
        "README adapters table is stale: run python -m rs4m_tools.adapters._table"


def test_readme_adapters_table_matches_sources_json():
    from rs4m.cli import get_cli

    facts = json.loads(CliRunner().invoke(get_cli(), ["sources", "--json"]).stdout)
    rows = readme_table_rows()
    assert [r[0].strip("`") for r in rows] == [f["name"] for f in facts]
    assert [r[4] for r in rows] == [f["licence"] for f in facts]
    assert [r[5] for r in rows] == [f["grey"] for f in facts]
    assert [r[6] for r in rows] == [f["facts_source"] or "-" for f in facts]
    tests_bold = [sorted(s.strip("*") for s in r[3].split(", ") if s.startswith("**")) for r in rows]
    assert tests_bold == [sorted(f["test_splits"]) for f in facts]


def test_every_dataset_adapter_cites_its_facts_or_says_unverified():
    for cls in list_sources():
        if cls.name in ("folder", "bandstack"):
            continue
        assert cls.facts_source, cls.name
        if cls.facts_source.startswith("unverified"):
            assert "Unverified" in cls.layout_notes, cls.name
