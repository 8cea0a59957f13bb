"""xView: WorldView-3 scenes of about 3000 x 3000 px at 0.3 m for object detection (tiled).

Layouts::

    train_images/1036.tif     (train_images.tgz / .zip: the same inside)        the official download
    val_images/100.tif        (val_images.tgz)
    train_labels/xView_train.geojson                                             (never taken)
    images/train/1036.tif     images/val/100.tif     labels/train/*.txt          as prepared by common tools
                                                                                 (Ultralytics' xView.yaml)
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class XView(LayoutAdapter):
    name = "xview"
    title = "xView"
    citation = "Lam et al., xView: Objects in Context in Overhead Imagery, arXiv:1802.07856, 2018"
    licence = "CC-BY-NC-SA-4.0"
    facts_source = "Lam et al., arXiv:1802.07856 (WorldView-3, 0.3 m GSD)"
    sensor = "WorldView-3"
    gsd_m = (0.3, 0.3)
    bands = "RGB"
    splits = {"train": 846, "val": 281}
    test_splits = ("val",)
    tiling = "tile"
    layout_notes = ("GeoTIFFs in train_images/ and val_images/ (official), or images/train/ and images/val/ (as "
                    "common tools prepare it), unpacked or archived. The val images' labels were never released "
                    "(they served as the challenge's hold-out), so 'val' is treated as a benchmark test split and "
                    "left out by default. Split files a tool writes (autosplit_*.txt) are not read. "
                    "Unverified: licence and split counts.")
    patterns = ("**/*images*/*.tif", "**/images/{train,val}/*.tif")
