"""Million-AID: about one million Google Earth scene images of very different sizes (tiled; small ones whole).

Layout (official download)::

    train/<level-1 class>/<level-2 class>/[<level-3 class>/]P0011232.jpg      (train.zip: the same inside)
    test/P0000001.jpg                                                         (test.zip; labels withheld)
"""

from __future__ import annotations

from rs4m.sources.layouts import Found, LayoutAdapter, split_from_path
from rs4m.sources.base import register_source


@register_source
class MillionAID(LayoutAdapter):
    name = "millionaid"
    title = "Million-AID"
    citation = ("Long et al., On Creating Benchmark Dataset for Aerial Image Interpretation: Reviews, Guidances, "
                "and Million-AID, IEEE JSTARS 14, 2021")
    licence = "CC-BY-NC-ND-4.0"
    sensor = "Google Earth"
    gsd_m = (0.5, 153.0)
    bands = "RGB"
    splits = {"train": 10000, "test": 990848}
    test_splits = ()
    tiling = "tile"
    layout_notes = ("JPEGs under train/ (class folders) and test/ (flat), unpacked or zipped. The test split is "
                    "no evaluation benchmark here: its labels were never released and RS pretraining corpora "
                    "use all one million images, so no split is excluded by default. Image sizes range from "
                    "~100 px to many thousands: small images stay whole, large ones are tiled.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): 0.5-153 m")
    layout_notes += " Unverified: licence (TorchGeo lists none)."
    patterns = ("**/*.jpg",)
    split_names = {"train": "train", "test": "test"}

    def split_of(self, found: Found, context: object) -> str | None:
        # Only the top folder (or the archive's name) says the split: class folders such as train_station don't.
        first = found.logical.split("/", 1)[0].lower()
        if first in self.split_names:
            return self.split_names[first]
        return split_from_path(found.archive, self.split_names) if found.archive else None
