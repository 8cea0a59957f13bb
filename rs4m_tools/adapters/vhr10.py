"""NWPU VHR-10: 800 very-high-resolution images for ten-class object detection (kept whole or tiled).

Layout (official download; TorchGeo uses the same)::

    NWPU VHR-10 dataset/positive image set/001.jpg     (650 images with objects)
    NWPU VHR-10 dataset/negative image set/001.jpg     (150 images without)
    NWPU VHR-10 dataset/ground truth/001.txt            (never taken; also NWPU VHR-10 dataset.zip)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class VHR10(LayoutAdapter):
    name = "vhr10"
    title = "NWPU VHR-10"
    citation = ("Cheng et al., Multi-Class Geospatial Object Detection and Geographic Image Classification "
                "Based on Collection of Part Detectors, ISPRS J. Photogramm. Remote Sens. 98, 2014")
    licence = "CC-BY-NC-4.0"
    sensor = "Google Earth; Vaihingen aerial (colour infrared)"
    gsd_m = (0.08, 2.0)
    bands = "RGB (85 images are pan-sharpened colour infrared from Vaihingen)"
    splits = {"positive": 650, "negative": 150}
    test_splits = ()
    tiling = "tile"
    layout_notes = ("JPEGs in 'positive image set' and 'negative image set' folders (the splits), unpacked or "
                    "zipped. No official train/test split. Images are about 500-1700 px.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.08-2 m")
    layout_notes += " Unverified: licence (TorchGeo's table lists MIT; the dataset's own terms not checked)."
    patterns = ("**/{positive,negative} image set/*.jpg",)
    split_names = {"positive": "positive", "negative": "negative"}
