"""xView2 / xBD: pre- and post-disaster Maxar image pairs, 1024 x 1024 px (tiled).

Layouts (both official releases; TorchGeo reads the PNG one)::

    train/images/hurricane-harvey_00000072_pre_disaster.png   (+ _post_disaster.png: a second image)
    train/targets/..._target.png   train/labels/*.json          (never taken)
    tier3/images/...   test/images/...   hold/images/...
    train_images_labels_targets.tar                             (gzip-compressed inside, despite its name)
    geotiffs/tier1/images/hurricane-harvey_00000072_pre_disaster.tif   (the GeoTIFF release: tier1 = train)
    geotiffs/tier3/images/...  geotiffs/hold/images/...  geotiffs/test/images/...   (xview2_geotiff.tgz)
"""

from __future__ import annotations

from pathlib import PurePosixPath

from rs4m.sources.layouts import COMMON_SPLIT_NAMES, Found, LayoutAdapter
from rs4m.sources.base import register_source


@register_source
class XView2(LayoutAdapter):
    name = "xview2"
    title = "xView2 (xBD)"
    citation = ("Gupta et al., Creating xBD: A Dataset for Assessing Building Damage from Satellite Imagery, "
                "CVPR Workshops 2019")
    licence = "CC-BY-NC-SA-4.0"
    facts_source = ("xView2 challenge terms (xBD under CC BY-NC-SA 4.0); TorchGeo datasets table "
                    "(github.com/microsoft/torchgeo docs/api/datasets/non_geo_datasets.csv): 0.8 m")
    sensor = "Maxar WorldView-2/3, GeoEye-1"
    gsd_m = (0.3, 0.8)
    bands = "RGB (PNG release 8-bit; GeoTIFF release 8- or 16-bit, georeferenced)"
    splits = {"train": 5598, "tier3": 12738, "test": 1866, "hold": 1866}
    test_splits = ("test", "hold")
    tiling = "tile"
    layout_notes = ("PNG (<split>/images/*.png) or GeoTIFF (geotiffs/<split>/images/*.tif, where tier1 is train) "
                    "images, unpacked or in the release archives (read by content: the official .tar files are "
                    "gzip-compressed). Pre- and post-disaster images are both taken; when both releases are "
                    "there an image is taken once, as GeoTIFF. targets/, labels/ and *_target.png never are. "
                    "Counts are images (two per pair). 'hold' is the challenge hold-out set and, like 'test', "
                    "left out by default. Unverified: the lower GSD bound and the split counts.")
    patterns = ("**/images/*_disaster.{png,tif}",)
    split_names = {**COMMON_SPLIT_NAMES, "tier1": "train", "tier3": "tier3", "hold": "hold", "holdout": "hold"}

    def select(self, found: list[Found]) -> list[Found]:
        """One scene per image: the GeoTIFF where both releases hold it."""
        tif = {self._key(f) for f in found if f.logical.lower().endswith(".tif")}
        return [f for f in found if f.logical.lower().endswith(".tif") or self._key(f) not in tif]

    def _key(self, found: Found) -> tuple[str | None, str]:
        return self.split_of(found, None), PurePosixPath(found.logical).stem.lower()
