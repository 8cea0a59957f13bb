"""HRSC2016: 1,061 Google Earth harbour images for ship detection (kept whole or tiled).

Layout (the official download: FullDataSet holds every image, Train/ and Test/ copies of them again)::

    FullDataSet/AllImages/100000001.bmp    FullDataSet/{Annotations,LandMask,Segmentations}/ (never taken)
    ImageSets/train.txt, val.txt, trainval.txt, test.txt (image ids, one a line)    (the split lists)
    Train/AllImages/100000001.bmp    Test/AllImages/...                 (copies, split as folders)
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from rs4m.sources.base import register_source
from rs4m.sources.layouts import Found, LayoutAdapter, split_from_path

#: split list files read, in order of precedence; trainval.txt is used only for ids no other list names
SPLIT_LISTS = (("train", "train"), ("val", "val"), ("test", "test"), ("trainval", "train"))
#: the folders of the official copies (Train/ holds train and val images)
FOLDER_SPLITS = {"train": "train", "val": "val", "test": "test"}


def read_split_lists(root: Path) -> dict[str, str]:
    """Image id → split from every ``ImageSets/<split>.txt`` under ``root`` (unpacked files only). A list whose
    real path lies outside ``root`` (a symlink out of it) is not the dataset's and is not read: it would decide
    which images are the benchmark ``rs4m leakage --against hrsc2016=PATH`` takes, from outside PATH."""
    ids: dict[str, str] = {}
    real_root = root.resolve()
    for stem, split in SPLIT_LISTS:
        for path in sorted(root.glob(f"**/ImageSets/{stem}.txt")):
            if not path.resolve().is_relative_to(real_root):
                continue
            for line in path.read_text(encoding="utf-8", errors="replace").split():
                ids.setdefault(line.strip(), split)
    return ids


def image_id(found: Found) -> str:
    return PurePosixPath(found.logical).stem


@register_source
class HRSC2016(LayoutAdapter):
    name = "hrsc2016"
    title = "HRSC2016"
    citation = ("Liu et al., A High Resolution Optical Satellite Image Dataset for Ship Recognition and Some New "
                "Baselines, ICPRAM 2017")
    licence = "HRSC2016: research use (no explicit licence)"
    facts_source = "unverified (the split lists of the download: ImageSets/*.txt)"
    sensor = "Google Earth"
    gsd_m = (0.4, 2.0)
    bands = "RGB"
    splits = {"train": 436, "val": 181, "test": 444}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("BMP images in AllImages/ folders. The split comes from ImageSets/{train,val,test}.txt "
                    "(ids only in trainval.txt count as train), which are authoritative; only without lists do "
                    "Train/Test folder names decide (Train/ then holds val images too, as train). An image "
                    "held in several copies (FullDataSet/, Train/, Test/) is one scene, the FullDataSet copy. "
                    "Images not in any list are reported and left out while splits are selected. "
                    "Segmentations/ and LandMask/ are never taken. Unverified: licence, GSD range and split counts.")
    patterns = ("**/AllImages/*.{bmp,jpg,png}",)
    _folder_splits: dict[str, str] = {}  # image id → split of its Train/Test copy, set by select()

    def layout_context(self, root: Path) -> dict[str, str]:
        return read_split_lists(root)

    def split_of(self, found: Found, context: object) -> str | None:
        """The split list's word, else (no lists at all) the Train/Test folder of any copy of the image."""
        if isinstance(context, dict) and context:
            return context.get(image_id(found))
        return self._folder_splits.get(image_id(found))

    def select(self, found: list[Found]) -> list[Found]:
        """One scene per image id: the FullDataSet copy, else the first by path (copies' folders kept aside)."""
        def rank(f: Found) -> tuple[bool, str]:
            return "fulldataset" not in f.logical.lower(), f.path

        self._folder_splits = {}
        chosen: dict[str, Found] = {}
        for f in sorted(found, key=rank):
            chosen.setdefault(image_id(f), f)
            split = split_from_path(f.logical, FOLDER_SPLITS)
            if split:
                self._folder_splits.setdefault(image_id(f), split)
        return sorted(chosen.values(), key=lambda f: f.path)
