"""HRSC2016: 1,061 Google Earth harbour images for ship detection (kept whole or tiled).

Layouts::

    FullDataSet/AllImages/100000001.bmp    FullDataSet/{Annotations,LandMask,Segmentations}/ (never taken)
    ImageSets/train.txt, val.txt, test.txt (image ids, one a line)      (the split lists)
    Train/AllImages/100000001.bmp    Test/AllImages/...                 (the split as folders)
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from rs4m_tools.adapters._layout import Found, LayoutAdapter, split_from_path
from rs4m_tools.adapters.base import register_source

#: split list files read, in order of precedence; trainval.txt is used only for ids no other list names
SPLIT_LISTS = (("train", "train"), ("val", "val"), ("test", "test"), ("trainval", "train"))


def read_split_lists(root: Path) -> dict[str, str]:
    """Image id → split from every ``ImageSets/<split>.txt`` under ``root`` (unpacked files only)."""
    ids: dict[str, str] = {}
    for stem, split in SPLIT_LISTS:
        for path in sorted(root.glob(f"**/ImageSets/{stem}.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").split():
                ids.setdefault(line.strip(), split)
    return ids


@register_source
class HRSC2016(LayoutAdapter):
    name = "hrsc2016"
    title = "HRSC2016"
    citation = ("Liu et al., A High Resolution Optical Satellite Image Dataset for Ship Recognition and Some New "
                "Baselines, ICPRAM 2017")
    licence = "HRSC2016: research use (no explicit licence)"
    sensor = "Google Earth"
    gsd_m = (0.4, 2.0)
    bands = "RGB"
    splits = {"train": 436, "val": 181, "test": 444}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("BMP images in AllImages/ folders; the split comes from Train/Test folder names, else from "
                    "ImageSets/{train,val,test}.txt (ids only in trainval.txt count as train). Images not in any "
                    "list are reported and left out while splits are selected. Segmentations/ and LandMask/ "
                    "are never taken.")
    patterns = ("**/AllImages/*.{bmp,jpg,png}",)

    def layout_context(self, root: Path) -> dict[str, str]:
        return read_split_lists(root)

    def split_of(self, found: Found, context: object) -> str | None:
        split = split_from_path(found.logical, self.split_names)
        if split is None and isinstance(context, dict):
            split = context.get(PurePosixPath(found.logical).stem)
        return split
