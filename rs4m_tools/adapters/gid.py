"""GID: Gaofen Image Dataset, 150 Gaofen-2 scenes of 7200 x 6800 px (tiled).

Layouts::

    Large-scale Classification_5classes/image_RGB/GF2_PMS1__L1A0000564539-MSS1.tif   (original download)
    Large-scale Classification_5classes/image_NirRGB/...   label_5classes/...        (NIR copies, labels: never)
    Fine Land-cover Classification_15classes/image_RGB/...
    GID/img_dir/{train,val,test}/GF2_PMS1__L1A0000564539-MSS1.tif                    (TorchGeo's gid-15.zip)
    GID/ann_dir/{train,val}/..._15label.png                                          (labels: never)
"""

from __future__ import annotations

from rs4m.sources.layouts import Found, LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class GID(LayoutAdapter):
    name = "gid"
    title = "GID (Gaofen Image Dataset)"
    citation = ("Tong et al., Land-Cover Classification with High-Resolution Remote Sensing Images Using "
                "Transferable Deep Models, Remote Sensing of Environment 237, 2020")
    licence = "GID: research use (no explicit licence)"
    sensor = "Gaofen-2 PMS (multispectral, RGB composite)"
    gsd_m = (3.2, 4.0)
    bands = "RGB (image_RGB; image_NirRGB copies are skipped)"
    splits = {"train": None, "val": None, "test": None, "all": 150}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Original download: image_RGB/*.tif, split 'all' (GID has no official split). TorchGeo's "
                    "GID-15 packaging: img_dir/<split>/*.tif with its own train/val/test split (test left out by "
                    "default). image_NirRGB/, label_* and ann_dir/ are never taken.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): no licence, 3 m")
    layout_notes += (" Unverified: licence (TorchGeo lists none); TorchGeo gives 3 m, Gaofen-2's multispectral "
                     "3.2-4 m is kept here (unverified).")
    patterns = ("**/image_RGB/*.{tif,tiff}", "**/img_dir/**/*.{tif,tiff,png}")

    def split_of(self, found: Found, context: object) -> str | None:
        split = super().split_of(found, context)
        if split is None and "/image_rgb/" in f"/{found.logical.lower()}":
            return "all"
        return split
