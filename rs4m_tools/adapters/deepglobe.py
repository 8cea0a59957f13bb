"""DeepGlobe 2018 Land Cover: 2448 x 2448 px DigitalGlobe Vivid+ images at 0.5 m (tiled).

Layouts::

    train/119_sat.jpg   train/119_mask.png   valid/..._sat.jpg   test/..._sat.jpg        (challenge download)
    data/training_data/images/1_sat.jpg   data/test_data/images/...   .../masks/...     (TorchGeo's data.zip)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class DeepGlobeLandCover(LayoutAdapter):
    name = "deepglobe_landcover"
    title = "DeepGlobe 2018 Land Cover"
    citation = ("Demir et al., DeepGlobe 2018: A Challenge to Parse the Earth through Satellite Images, "
                "CVPR Workshops 2018")
    licence = "DeepGlobe 2018: research use (challenge terms)"
    sensor = "DigitalGlobe Vivid+ mosaic"
    gsd_m = (0.5, 0.5)
    bands = "RGB"
    splits = {"train": 803, "val": 171, "test": 172}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Only *_sat.jpg are images (the *_mask.png never). Splits from train/valid/test or "
                    "TorchGeo's training_data/test_data folders; note TorchGeo's test_data is cut from the "
                    "original train split (only that one has masks), and is left out by default all the same.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.5 m")
    layout_notes += " Unverified: licence (TorchGeo lists none)."
    patterns = ("**/*_sat.jpg",)
