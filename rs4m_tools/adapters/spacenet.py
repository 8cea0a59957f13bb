"""SpaceNet 1 (Rio de Janeiro) and SpaceNet 2 (Las Vegas, Paris, Shanghai, Khartoum): WorldView building chips.

Layout (the SpaceNet releases; TorchGeo unpacks them the same way)::

    SN1_buildings/train/3band/3band_AOI_1_RIO_img1.tif     (SN1_buildings_train_AOI_1_Rio_3band.tar.gz)
    SN1_buildings/train/8band/...   geojson/...            (multispectral, labels: never taken)
    SN1_buildings/test/3band/...
    AOI_2_Vegas_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_2_Vegas_img1.tif      (SN2_buildings_train_AOI_2_Vegas.tar.gz)
    AOI_2_Vegas_Train/{MUL,MUL-PanSharpen,PAN}/...  geojson/buildings/...     (never taken)
    AOI_2_Vegas_Test_public/RGB-PanSharpen/...

SpaceNet v1 is a downstream benchmark of SelectiveMAE; evaluations cut its train split themselves, so the
RS-4M recipe leaves SpaceNet 1 out entirely.
"""

from __future__ import annotations

from rs4m.sources.layouts import LayoutAdapter
from rs4m.sources.base import register_source

_CITATION = "Van Etten et al., SpaceNet: A Remote Sensing Dataset and Challenge Series, arXiv:1807.01232, 2018"


@register_source
class SpaceNet1(LayoutAdapter):
    name = "spacenet1"
    title = "SpaceNet 1 (buildings, Rio de Janeiro)"
    citation = _CITATION
    licence = "CC-BY-SA-4.0"
    sensor = "WorldView-2"
    gsd_m = (0.5, 0.5)
    bands = "RGB (pan-sharpened 3band product)"
    splits = {"train": 6940, "test": 2795}
    test_splits = ("test",)
    tiling = "whole"
    layout_notes = ("Only the 3band/ GeoTIFFs (about 400 x 440 px, pan-sharpened RGB) are taken, unpacked or "
                    "in the .tar.gz; 8band/ and geojson/ never are. Split from the train/test folder or "
                    "archive name.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): CC-BY-SA-4.0")
    patterns = ("**/3band/*.tif",)


@register_source
class SpaceNet2(LayoutAdapter):
    name = "spacenet2"
    title = "SpaceNet 2 (buildings, Las Vegas/Paris/Shanghai/Khartoum)"
    citation = _CITATION
    licence = "CC-BY-SA-4.0"
    sensor = "WorldView-3"
    gsd_m = (0.3, 0.3)
    bands = "RGB (pan-sharpened, 16-bit)"
    splits = {"train": 10592, "test": None}
    test_splits = ("test",)
    tiling = "whole"
    layout_notes = ("Only RGB-PanSharpen/ GeoTIFFs (650 x 650 px, uint16, stretched to 8 bit by the reader) "
                    "are taken; MUL, MUL-PanSharpen, PAN and labels never are. Split from the AOI_<n>_<city>_"
                    "Train / _Test_public folder or archive name. The train count is the sum over the four AOIs.")
    facts_source = ("TorchGeo datasets table (github.com/microsoft/torchgeo "
                    "docs/api/datasets/non_geo_datasets.csv): CC-BY-SA-4.0")
    patterns = ("**/RGB-PanSharpen/*.tif",)
