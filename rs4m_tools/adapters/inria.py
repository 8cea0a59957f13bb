"""Inria Aerial Image Labeling: 360 orthophotos of 5000 x 5000 px at 0.3 m over ten cities (tiled).

Layout (official download; TorchGeo uses the same)::

    AerialImageDataset/train/images/austin1.tif    AerialImageDataset/train/gt/austin1.tif  (labels: never)
    AerialImageDataset/test/images/bellingham1.tif
    NEW2-AerialImageDataset.zip                    (AerialImageDataset/... inside; the 7z parts: unpack)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class Inria(LayoutAdapter):
    name = "inria"
    title = "Inria Aerial Image Labeling"
    citation = ("Maggiori et al., Can Semantic Labeling Methods Generalize to Any City? The Inria Aerial Image "
                "Labeling Benchmark, IGARSS 2017")
    licence = "Inria Aerial Image Labeling: research use (see the dataset's terms)"
    sensor = "aerial orthophotos (USGS, Austrian and other public sources)"
    gsd_m = (0.3, 0.3)
    bands = "RGB"
    splits = {"train": 180, "test": 180}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("GeoTIFFs in <split>/images/, unpacked or in NEW2-AerialImageDataset.zip; gt/ is never "
                    "taken. The test images (other cities, labels withheld) are the benchmark's test split.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.3 m")
    layout_notes += " Unverified: licence (TorchGeo lists none)."
    patterns = ("**/images/*.tif",)
