"""ISPRS Vaihingen: 33 true orthophoto tiles at 9 cm in false colour (near-infrared, red, green) (tiled).

Layout (ISPRS download; TorchGeo uses the same)::

    top/top_mosaic_09cm_area1.tif         (ISPRS_semantic_labeling_Vaihingen.zip: top/... inside)
    ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip   (label rasters with the same file names,
                                                                   at the archive's top level: never taken)
"""

from __future__ import annotations

import re

from rs4m.sources.layouts import Found, LayoutAdapter
from rs4m.sources.base import register_source

#: the benchmark's train areas; the other 17 are test
TRAIN_AREAS = frozenset({1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37})
_AREA = re.compile(r"top_mosaic_09cm_area(\d+)\.tif$", re.IGNORECASE)


@register_source
class Vaihingen(LayoutAdapter):
    name = "vaihingen"
    title = "ISPRS Vaihingen"
    citation = ("Rottensteiner et al., The ISPRS Benchmark on Urban Object Classification and 3D Building "
                "Reconstruction, ISPRS Annals I-3, 2012; Cramer, The DGPF Test on Digital Aerial Camera "
                "Evaluation, PFG 2010")
    licence = "ISPRS benchmark: research use only, no redistribution"
    sensor = "aerial (Intergraph/ZI DMC, true orthophotos)"
    gsd_m = (0.09, 0.09)
    bands = "IRRG false colour (near-infrared, red, green), not RGB"
    splits = {"train": 16, "test": 17}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Only top/top_mosaic_09cm_area<N>.tif are images; the ground-truth files share those names "
                    "but sit outside top/ (and their archive is never read). The bands are IR-R-G, so tiles "
                    "look false-coloured in an RGB corpus. Split by area number (16 train / 17 test).")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.09 m")
    layout_notes += " Unverified: licence wording (TorchGeo lists none; the ISPRS terms not checked)."
    patterns = ("**/top/top_mosaic_09cm_area*.tif",)
    skip_archives = ("**/*ground_truth*",)

    def split_of(self, found: Found, context: object) -> str | None:
        m = _AREA.search(found.logical)
        return None if m is None else ("train" if int(m.group(1)) in TRAIN_AREAS else "test")
