"""LoveDA: 1024 x 1024 Google Earth images at 0.3 m for land-cover segmentation (tiled).

Layout (Zenodo download; TorchGeo uses the same)::

    Train/Urban/images_png/1366.png     Train/Rural/images_png/...    (Train.zip: the same inside)
    Train/Urban/masks_png/1366.png                                     (masks: never taken)
    Val/...   Test/{Urban,Rural}/images_png/...
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class LoveDA(LayoutAdapter):
    name = "loveda"
    title = "LoveDA"
    citation = ("Wang et al., LoveDA: A Remote Sensing Land-Cover Dataset for Domain Adaptive Semantic "
                "Segmentation, NeurIPS Datasets and Benchmarks 2021")
    licence = "CC-BY-NC-SA-4.0"
    sensor = "Google Earth"
    gsd_m = (0.3, 0.3)
    bands = "RGB"
    splits = {"train": 2522, "val": 1669, "test": 1796}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = "PNGs in <Split>/<Urban|Rural>/images_png/, unpacked or zipped; masks_png/ is never taken."
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): CC-BY-NC-SA-4.0, 0.3 m")
    patterns = ("**/images_png/*.png",)
