"""WHU-RS19: 1,005 Google Earth scenes of 600 x 600 px in 19 classes (kept whole).

Layout (assumed, as the common mirrors ship it)::

    WHU-RS19/Airport/airport_01.jpg    WHU-RS19/Beach/...    (or RSDataset/..., also zipped)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class WHURS19(LayoutAdapter):
    name = "whu_rs19"
    title = "WHU-RS19"
    citation = ("Dai and Yang, Satellite Image Classification via Two-Layer Sparse Coding With Biased Image "
                "Representation, IEEE GRSL 8(1), 2011")
    licence = "WHU-RS19: research use (no explicit licence)"
    sensor = "Google Earth"
    gsd_m = (0.5, 0.5)
    bands = "RGB"
    splits = {"all": 1005}
    test_splits = ()
    tiling = "whole"
    layout_notes = ("Assumed: image files (.jpg, .jpeg, .png, .tif) in one folder per class, unpacked or zipped; "
                    "no official split ('all'). Resolution is 'up to 0.5 m'.")
    facts_source = "unverified"
    layout_notes += " Unverified: licence and GSD (not checked against the dataset's page)."
    patterns = ("**/*.{jpg,jpeg,png,tif,tiff}",)
    split_names = {}
    default_split = "all"
