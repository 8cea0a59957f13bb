"""iSAID: instance segmentation masks on DOTA v1.0's images (tiled).

Layout (official download)::

    train/images/P0000.png                                           the images (DOTA v1.0's), also in part*.zip
    train/Instance_masks/images/P0000_instance_id_RGB.png            masks: never taken
    train/Semantic_masks/images/P0000_instance_color_RGB.png         masks: never taken
    val/...   test/images/...

The images are DOTA v1.0's: a recipe takes either DOTA v1.x or iSAID, not both.
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class ISAID(LayoutAdapter):
    name = "isaid"
    title = "iSAID"
    citation = ("Waqas Zamir et al., iSAID: A Large-scale Dataset for Instance Segmentation in Aerial Images, "
                "CVPR Workshops 2019")
    licence = "iSAID: academic use only (images under the DOTA terms)"
    sensor = "Google Earth, Gaofen-2, Jilin-1 (DOTA v1.0 images)"
    gsd_m = None
    bands = "RGB (a few grey)"
    grey = "replicate"  # the Gaofen-2 / Jilin-1 scenes are single-band grey
    splits = {"train": 1411, "val": 458, "test": 937}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Images are <split>/images/P*.png (or inside part*.zip); the *_instance_* PNGs under "
                    "Instance_masks/ and Semantic_masks/ are masks and never taken. Patch folders made by the "
                    "iSAID devkit (iSAID_patches) are skipped.")
    facts_source = "https://captain-whu.github.io/DOTA/dataset.html (the images' terms)"
    patterns = ("**/images/P[0-9]*.png",)
    exclude = ("**/*_instance_*", "**/*masks*/**", "**/iSAID_patches/**")
