"""FAIR1M: fine-grained object recognition in Gaofen and Google Earth scenes of 1000-10000 px (tiled).

Layout (official download and TorchGeo)::

    train/part1/images/0.tif   train/part1/images.zip   train/part2/...     train/part1/labelXml/  (never taken)
    validation/images/0.tif    validation/images.zip
    test/images/0.tif          test/images0.zip, images1.zip, ...
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class FAIR1M(LayoutAdapter):
    name = "fair1m"
    title = "FAIR1M"
    citation = ("Sun et al., FAIR1M: A Benchmark Dataset for Fine-grained Object Recognition in High-Resolution "
                "Remote Sensing Imagery, ISPRS J. Photogramm. Remote Sens. 184, 2022")
    licence = "CC-BY-NC-SA-3.0"
    sensor = "Gaofen satellites, Google Earth"
    gsd_m = (0.3, 0.8)
    bands = "RGB"
    splits = {"train": None, "val": None, "test": None}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Images are TIFFs in images/ folders under train/, validation/ (split 'val') and test/, "
                    "unpacked or zipped. Per-split counts differ between FAIR1M 1.0 and 2.0 and are left "
                    "unknown (about 15,000 train+val images in all).")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): CC-BY-NC-SA-3.0, 0.3-0.8 m")
    patterns = ("**/images/*.{tif,tiff}",)
