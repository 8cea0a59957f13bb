"""fMoW-RGB: Functional Map of the World, object-centred WorldView/QuickBird/GeoEye crops (tiled; most whole).

Layout (the fmow-rgb release)::

    train/<category>/<category>_<n>/<category>_<n>_<k>_rgb.jpg    (+ _rgb.json metadata, never taken)
    train/<category>/<category>_<n>/<category>_<n>_<k>_msrgb.jpg  (RGB from the multispectral bands: skipped)
    val/...    test/<id>/<id>_<k>_rgb.jpg    seq/<id>/...
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class FMoW(LayoutAdapter):
    name = "fmow"
    title = "Functional Map of the World (fMoW-RGB)"
    citation = "Christie et al., Functional Map of the World, CVPR 2018"
    licence = "fMoW Challenge Public License"
    sensor = "DigitalGlobe WorldView-2/3, QuickBird, GeoEye-1 (pan-sharpened RGB)"
    gsd_m = None
    bands = "RGB"
    splits = {"train": 363572, "val": 53041, "test": 53473, "seq": None}
    test_splits = ("test", "seq")
    tiling = "tile"
    layout_notes = ("Only the *_rgb.jpg images (fMoW-full: *_rgb.tif) are taken: the *_msrgb versions are lower-"
                    "resolution duplicates. The split comes from the top folder (train/val/test/seq). GSD is "
                    "sub-metre to about 2 m, given per image in the JSON metadata; left unknown here.")
    facts_source = "unverified"
    layout_notes += " Unverified: licence name (not checked against the dataset's page)."
    patterns = ("**/*_rgb.{jpg,tif}",)
    split_names = {"train": "train", "val": "val", "test": "test", "seq": "seq"}
