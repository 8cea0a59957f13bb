"""AID: Aerial Image Dataset, 10,000 Google Earth scenes of 600 x 600 px in 30 classes (kept whole).

Layout (official download)::

    AID/Airport/airport_1.jpg    AID/BareLand/bareland_1.jpg    ...

AID is a downstream benchmark of SelectiveMAE, evaluated on random 20 % / 50 % train splits: any image may be
a test image, so the whole dataset is the single split ``all``, a benchmark test split, and stays out of
pretraining unless a recipe names ``splits = ["all"]``.
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class AID(LayoutAdapter):
    name = "aid"
    title = "AID (Aerial Image Dataset)"
    citation = ("Xia et al., AID: A Benchmark Data Set for Performance Evaluation of Aerial Scene "
                "Classification, IEEE TGRS 55, 2017")
    licence = "AID: research use (no explicit licence)"
    sensor = "Google Earth"
    gsd_m = (0.5, 8.0)
    bands = "RGB"
    splits = {"all": 10000}
    test_splits = ("all",)
    tiling = "whole"
    layout_notes = ("JPEGs in one folder per class; no official split, so everything is split 'all', excluded "
                    "by default (evaluation benchmark).")
    facts_source = "unverified"
    layout_notes += " Unverified: licence and GSD range (not checked against the dataset's page)."
    patterns = ("**/*.jpg",)
    split_names = {}
    default_split = "all"
