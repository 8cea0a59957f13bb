"""NWPU-RESISC45: 31,500 Google Earth scenes of 256 x 256 px in 45 classes (kept whole).

Layout (official download; TorchGeo uses the same)::

    NWPU-RESISC45/airplane/airplane_001.jpg    ...           (NWPU-RESISC45.zip: the same inside)

RESISC-45 is a downstream benchmark of SelectiveMAE, evaluated on random 10 % / 20 % train splits: any image
may be a test image, so the whole dataset is the single split ``all``, a benchmark test split, and stays out of
pretraining unless a recipe names ``splits = ["all"]``. (TorchGeo's resisc45-{train,val,test}.txt lists are
not official and are ignored.)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class RESISC45(LayoutAdapter):
    name = "resisc45"
    title = "NWPU-RESISC45"
    citation = ("Cheng et al., Remote Sensing Image Scene Classification: Benchmark and State of the Art, "
                "Proceedings of the IEEE 105(10), 2017")
    licence = "CC-BY-NC-4.0"
    sensor = "Google Earth"
    gsd_m = (0.2, 30.0)
    bands = "RGB"
    splits = {"all": 31500}
    test_splits = ("all",)
    tiling = "whole"
    layout_notes = ("JPEGs in one folder per class, unpacked or zipped; no official split, so everything is "
                    "split 'all', excluded by default (evaluation benchmark).")
    facts_source = ("https://huggingface.co/datasets/torchgeo/resisc45 (cc-by-nc-4.0); TorchGeo datasets table "
                    "(github.com/microsoft/torchgeo docs/api/datasets/non_geo_datasets.csv): 0.2-30 m")
    patterns = ("**/*.jpg",)
    split_names = {}
    default_split = "all"
