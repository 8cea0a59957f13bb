"""The built-in source adapters: one module per dataset, each registering its adapters with
:func:`rs4m.sources.register_source`. rs4m finds this package through the ``rs4m.adapters`` entry point
(``pyproject.toml``); importing it imports every module in it, so adding an adapter is adding one file.

``rs4m sources`` lists them. Most are :class:`~rs4m.sources.layouts.LayoutAdapter` subclasses that state
a dataset's facts and the globs of its images; :mod:`rs4m.sources.layouts` walks folders and the
archives datasets ship in. ``folder`` takes any folder of rasters, ``bandstack`` stacks per-band files.

Recipe TOML (``manifests/rs4m.toml``; read by :func:`rs4m.config.load_recipe`)::

    [build]            # defaults for every source
    tile_size = 512
    stride = 512
    mode = "grid"      # grid | random
    crop_min = 64      # random crops: side drawn within crop_min..crop_max
    crop_max = 1024
    format = "jpg"
    quality = 95
    out_size = 0       # 0 = keep tile size
    scenes_per_unit = 64
    [filters]
    max_nodata_frac = 0.5
    min_richness = 0.0
    [dedup]
    radius_bits = 5
    geo = true
    dihedral = true
    source_priority = ["dota_v2", ...]   # on duplicates, keep the tile of the source listed first
    [[sources]]
    name = "dota_v2"          # adapter name (``rs4m sources``)
    path = "dota"             # optional, relative to --root (default: the adapter name); absolute allowed
    splits = ["train", "val"] # optional; default: all splits minus the adapter's test_splits
    glob = "..."              # optional override of the adapter's image pattern
    max_images = 0            # optional cap (0 = all); deterministic (first N by a hash of the path)
    tile_size = 1024          # any [build] key may be overridden per source
    mode = "random"
    grey = "refuse"           # single grey-band images: "refuse" (error rows) or "replicate" (R = G = B);
                              # default: the adapter's ``grey`` ("replicate" for DOTA and iSAID)
    options = {licence = "..."}  # optional, adapter-specific (``folder``: licence)

On the command line the same per-source key follows the path: ``--source dota_v2=/data/dota,grey=refuse``.
A split a source names must be one of its adapter's ``splits`` (``tests/test_adapters.py`` checks every
shipped recipe); "whole" tiling is a ``tile_size`` at least as large as the images, since an image no larger
than the tile becomes exactly one tile.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
