"""ISPRS Potsdam: 38 true orthophoto tiles of 6000 x 6000 px at 5 cm (tiled).

Layout (ISPRS download; TorchGeo uses 4_Ortho_RGBIR)::

    2_Ortho_RGB/top_potsdam_2_10_RGB.tif        (2_Ortho_RGB.zip)      RGB: preferred
    4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif    (4_Ortho_RGBIR.zip)    R, G, B, NIR: its first three bands
    3_Ortho_IRRG/...  1_DSM/...  5_Labels_all/top_potsdam_2_10_label.tif  (false colour, heights, labels: never)
"""

from __future__ import annotations

import re

from rs4m.sources.layouts import Found, LayoutAdapter
from rs4m.sources.base import SceneRef, register_source

#: the benchmark's test tiles (row_column); the other 24 are train
TEST_TILES = frozenset({(2, 13), (2, 14), (3, 13), (3, 14), (4, 13), (4, 14), (4, 15), (5, 13), (5, 14),
                        (5, 15), (6, 13), (6, 14), (6, 15), (7, 13)})
_TILE = re.compile(r"top_potsdam_(\d+)_(\d+)_(RGBIR|RGB)\.tif$", re.IGNORECASE)


def tile_of(path: str) -> tuple[tuple[int, int], str] | None:
    """((row, column), "RGB" | "RGBIR") of a Potsdam orthophoto path, or None."""
    m = _TILE.search(path)
    return ((int(m.group(1)), int(m.group(2))), m.group(3).upper()) if m else None


@register_source
class Potsdam(LayoutAdapter):
    name = "potsdam"
    title = "ISPRS Potsdam (RGB)"
    citation = ("Rottensteiner et al., The ISPRS Benchmark on Urban Object Classification and 3D Building "
                "Reconstruction, ISPRS Annals I-3, 2012")
    licence = "ISPRS benchmark: research use only, no redistribution"
    sensor = "aerial (true orthophotos)"
    gsd_m = (0.05, 0.05)
    bands = "RGB (2_Ortho_RGB) or bands 1-3 of RGBIR (4_Ortho_RGBIR)"
    splits = {"train": 24, "test": 14}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("top_potsdam_<row>_<col>_RGB.tif, else _RGBIR.tif read as bands 1-3, unpacked or zipped; "
                    "when both exist for a tile only the RGB file is taken. IRRG, DSM and label files are never "
                    "taken. The split follows the benchmark's 24 train / 14 test tiles.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.05 m")
    layout_notes += " Unverified: licence wording (TorchGeo lists none; the ISPRS terms not checked)."
    patterns = ("**/top_potsdam_*_{RGB,RGBIR}.tif",)

    def split_of(self, found: Found, context: object) -> str | None:
        tile = tile_of(found.logical)
        return None if tile is None else ("test" if tile[0] in TEST_TILES else "train")

    def select(self, found: list[Found]) -> list[Found]:
        with_rgb = {t[0] for f in found if (t := tile_of(f.logical)) and t[1] == "RGB"}
        return [f for f in found if not ((t := tile_of(f.logical)) and t[1] == "RGBIR" and t[0] in with_rgb)]

    def scene_ref(self, found: Found, split: str | None) -> SceneRef:
        tile = tile_of(found.logical)
        rgb = (1, 2, 3) if tile and tile[1] == "RGBIR" else None
        return SceneRef(scene_path=found.path, split=split, rgb_bands=rgb)
