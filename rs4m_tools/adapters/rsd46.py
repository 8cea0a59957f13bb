"""RSD46-WHU: about 117,000 Google Earth and Tianditu scenes of 256 x 256 px in 46 classes (kept whole).

Layout (assumed from the distribution's description)::

    RSD46-WHU/train/<class>/<image>.jpg      RSD46-WHU/test/<class>/...      (also zipped)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class RSD46WHU(LayoutAdapter):
    name = "rsd46_whu"
    title = "RSD46-WHU"
    citation = ("Long et al., Accurate Object Localization in Remote Sensing Images Based on Convolutional "
                "Neural Networks, IEEE TGRS 55(5), 2017; Xiao et al., High-Resolution Remote-Sensing Image "
                "Retrieval Based on CNNs from a Dimensional Perspective, Remote Sensing 9(7), 2017")
    licence = "RSD46-WHU: free for education, research and commercial use"
    sensor = "Google Earth, Tianditu"
    gsd_m = (0.5, 2.0)
    bands = "RGB"
    splits = {"train": None, "test": None}
    test_splits = ("test",)
    tiling = "whole"
    layout_notes = ("Assumed: image files (.jpg, .png, .tif) in class folders under train/ and test/ folders, "
                    "unpacked or zipped; the split comes from those folder names. Images in neither are "
                    "reported and left out while splits are selected. Per-split counts are not known for sure "
                    "(about 117,000 images in all).")
    facts_source = ("https://github.com/RSIA-LIESMARS-WHU/RSD46-WHU (README: free for education, research and "
                    "commercial use)")
    layout_notes += " Unverified: GSD range."
    patterns = ("**/*.{jpg,jpeg,png,tif,tiff}",)
