"""DIOR and DIOR-R: 800 x 800 Google Earth images for object detection (kept whole).

Layout::

    JPEGImages-trainval/00001.jpg   JPEGImages-test/11726.jpg       (official download, also as .zip)
    Images/trainval/000000.jpg      Images/test/...                  (TorchGeo's Images_<split>.zip)
    Annotations/...  ImageSets/...                                   (never taken)

DIOR-R re-annotates the same images with oriented boxes: a recipe takes DIOR or DIOR-R, not both.
"""

from __future__ import annotations

import re

from rs4m.sources.layouts import Found, LayoutAdapter, split_from_path
from rs4m.sources.base import register_source

#: the official numbering: 00001-11725 are trainval, 11726-23463 test
LAST_TRAINVAL_ID = 11725
_ID = re.compile(r"(\d{5})\.jpg$", re.IGNORECASE)


@register_source
class DIOR(LayoutAdapter):
    name = "dior"
    title = "DIOR"
    citation = ("Li et al., Object Detection in Optical Remote Sensing Images: A Survey and a New Benchmark, "
                "ISPRS J. Photogramm. Remote Sens. 159, 2020")
    licence = "CC-BY-NC-4.0"
    sensor = "Google Earth"
    gsd_m = (0.5, 30.0)
    bands = "RGB"
    splits = {"trainval": 11725, "test": 11738}
    test_splits = ("test",)
    tiling = "whole"
    layout_notes = ("Images are JPEGs in a folder whose name holds 'Images' (JPEGImages-trainval, Images/test, "
                    "...), unpacked or zipped; the split comes from the folder name, else from the official "
                    "numbering (five-digit ids up to 11725 are trainval, the rest test).")
    facts_source = "unverified"
    layout_notes += " Unverified: licence and GSD range (not checked against the dataset's page)."
    patterns = ("**/*Images*/**/*.jpg",)
    split_names = {"train": "trainval", "val": "trainval", "trainval": "trainval", "test": "test"}

    def split_of(self, found: Found, context: object) -> str | None:
        split = split_from_path(found.logical, self.split_names)
        if split is None and (m := _ID.search(found.logical)):
            split = "trainval" if int(m.group(1)) <= LAST_TRAINVAL_ID else "test"
        return split


@register_source
class DIORR(DIOR):
    name = "dior_r"
    title = "DIOR-R"
    citation = ("Cheng et al., Anchor-Free Oriented Proposal Generator for Object Detection, IEEE TGRS 60, 2022 "
                "(images: DIOR, Li et al. 2020)")
    layout_notes = "The same images as DIOR (oriented boxes only differ). " + DIOR.layout_notes
