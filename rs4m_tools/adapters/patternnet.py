"""PatternNet: 30,400 Google Earth / Google Maps scenes of 256 x 256 px in 38 classes (kept whole).

Layout (official download; TorchGeo uses the same)::

    PatternNet/images/airplane/airplane001.jpg    ...        (PatternNet.zip: the same inside)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class PatternNet(LayoutAdapter):
    name = "patternnet"
    title = "PatternNet"
    citation = ("Zhou et al., PatternNet: A Benchmark Dataset for Performance Evaluation of Remote Sensing "
                "Image Retrieval, ISPRS J. Photogramm. Remote Sens. 145, 2018")
    licence = "CC-BY-4.0"
    sensor = "Google Earth, Google Maps API"
    gsd_m = (0.062, 4.693)
    bands = "RGB"
    splits = {"all": 30400}
    test_splits = ()
    tiling = "whole"
    layout_notes = "JPEGs in one folder per class under images/, unpacked or zipped; no official split ('all')."
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): CC-BY-4.0, 0.06-5 m")
    patterns = ("**/*.jpg",)
    split_names = {}
    default_split = "all"
