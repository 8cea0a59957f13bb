"""xView2 / xBD: pre- and post-disaster Maxar image pairs, 1024 x 1024 px (tiled).

Layout (official download; TorchGeo uses the same)::

    train/images/hurricane-harvey_00000072_pre_disaster.png   (+ _post_disaster.png: a second image)
    train/targets/..._target.png   train/labels/*.json          (never taken)
    tier3/images/...   test/images/...   hold/images/...
    train_images_labels_targets.tar.gz                          (the archive: train/images/... inside)
"""

from __future__ import annotations

from rs4m_tools.adapters._layout import COMMON_SPLIT_NAMES, LayoutAdapter
from rs4m_tools.adapters.base import register_source


@register_source
class XView2(LayoutAdapter):
    name = "xview2"
    title = "xView2 (xBD)"
    citation = ("Gupta et al., Creating xBD: A Dataset for Assessing Building Damage from Satellite Imagery, "
                "CVPR Workshops 2019")
    licence = "CC-BY-NC-SA-4.0"
    sensor = "Maxar WorldView-2/3, GeoEye-1"
    gsd_m = (0.3, 0.8)
    bands = "RGB"
    splits = {"train": 5598, "tier3": 12738, "test": 1866, "hold": 1866}
    test_splits = ("test", "hold")
    tiling = "tile"
    layout_notes = ("PNG images in <split>/images/ (pre- and post-disaster images are both taken); the "
                    "*_target.png masks in targets/ never are. Counts are images (two per pair). 'hold' is the "
                    "challenge hold-out set and, like 'test', left out by default.")
    patterns = ("**/images/*_disaster.png",)
    split_names = {**COMMON_SPLIT_NAMES, "tier3": "tier3", "hold": "hold", "holdout": "hold"}
