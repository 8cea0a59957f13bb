"""DOTA v1.0, v1.5 and v2.0: object detection on Google Earth, Gaofen-2, Jilin-1 and aerial scenes (tiled).

Layout (official download and TorchGeo's archives alike)::

    train/images/P0000.png                     (official: train/images/part1.zip → images/P0000.png)
    train/labelTxt/... | train/annotations/version1.0/P0000.txt      (never taken)
    val/images/...   test/images/...           (v2.0: test-dev/images/, test-challenge/images/)
    dotav1.0_images_train.tar.gz → train/images/P0000.png

v1.0 and v1.5 share their 2,806 images; v2.0 keeps them and adds more (11,268 in all), so several archives
hold the same ``train/images/P0000.png``: it is taken once. iSAID (``isaid``) annotates the v1.0 images.
"""

from __future__ import annotations

from rs4m.sources.layouts import COMMON_SPLIT_NAMES, LayoutAdapter
from rs4m.sources.base import register_source

_CITATION = ("Xia et al., DOTA: A Large-scale Dataset for Object Detection in Aerial Images, CVPR 2018; "
             "Ding et al., Object Detection in Aerial Images: A Large-Scale Benchmark and Challenges, TPAMI 2021")


@register_source
class DOTAv1(LayoutAdapter):
    name = "dota_v1"
    title = "DOTA v1.0"
    citation = _CITATION
    licence = "DOTA: academic use only"
    sensor = "Google Earth, Gaofen-2, Jilin-1, aerial (CycloMedia)"
    gsd_m = (0.1, 4.5)
    bands = "RGB (a few grey)"
    grey = "replicate"  # the Gaofen-2 / Jilin-1 scenes are single-band grey
    splits = {"train": 1411, "val": 458, "test": 937}
    test_splits = ("test",)
    tiling = "tile"
    layout_notes = ("Images are <split>/images/*.png, unpacked or inside archives (part*.zip, TorchGeo's "
                    "dotav1.x_images_<split>.tar.gz); v2.0 archives are skipped. An unpacked folder cannot tell "
                    "versions apart: point dota_v1 at a folder of v1.0 images.")
    facts_source = ("https://captain-whu.github.io/DOTA/dataset.html: academic use only; grey images from the "
                    "GF-2 / JL-1 panchromatic bands")
    layout_notes += (" Unverified: GSD range (TorchGeo's table lists the licence as CC-BY-NC-4.0; the dataset's "
                     "page says academic use only, commercial use prohibited).")
    patterns = ("**/images/*.png",)
    skip_archives = ("**/dotav2*",)


@register_source
class DOTAv15(DOTAv1):
    name = "dota_v15"
    title = "DOTA v1.5"
    layout_notes = "The DOTA v1.0 images (v1.5 adds small-object annotations only). " + DOTAv1.layout_notes


@register_source
class DOTAv2(DOTAv1):
    name = "dota_v2"
    title = "DOTA v2.0"
    splits = {"train": 1830, "val": 593, "test_dev": 2792, "test_challenge": 6053}
    test_splits = ("test_dev", "test_challenge")
    layout_notes = ("Images are <split>/images/*.png with split train, val, test-dev, test-challenge (a plain "
                    "test/ counts as test-dev), unpacked or inside any DOTA images archive (v1.x archives hold "
                    "the v1.0 images, which v2.0 keeps; each image is taken once).")
    split_names = {**COMMON_SPLIT_NAMES, "test": "test_dev", "test-dev": "test_dev", "test_dev": "test_dev",
                   "test-challenge": "test_challenge", "test_challenge": "test_challenge"}
    skip_archives = ()
