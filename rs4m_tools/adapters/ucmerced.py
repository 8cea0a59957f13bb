"""UC Merced Land Use: 2,100 USGS orthophoto crops of 256 x 256 px at 1 ft in 21 classes (kept whole).

Layout (official download; TorchGeo uses the same)::

    UCMerced_LandUse/Images/agricultural/agricultural00.tif    ...   (UCMerced_LandUse.zip: the same inside)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class UCMerced(LayoutAdapter):
    name = "ucmerced"
    title = "UC Merced Land Use"
    citation = ("Yang and Newsam, Bag-of-Visual-Words and Spatial Extensions for Land-Use Classification, "
                "ACM SIGSPATIAL GIS 2010")
    licence = "public domain (USGS National Map imagery)"
    sensor = "aerial orthophotos (USGS National Map Urban Area Imagery)"
    gsd_m = (0.3048, 0.3048)
    bands = "RGB"
    splits = {"all": 2100}
    test_splits = ()
    tiling = "whole"
    layout_notes = ("TIFFs in one folder per class under Images/, unpacked or zipped; no official split ('all'). "
                    "TorchGeo's uc_merced-*.txt split lists are ignored.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): public domain, 0.3 m")
    patterns = ("**/*.tif",)
    split_names = {}
    default_split = "all"
