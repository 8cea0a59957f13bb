"""Recipe TOML → frozen dataclasses; unknown keys and bad values are errors naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from rs4m.config import Recipe, TileConfig, load_recipe, recipe_from_mapping
from rs4m.errors import ConfigError


def test_defaults_and_per_source_override():
    r = recipe_from_mapping({"build": {"tile_size": 256, "format": "png"},
                             "sources": [{"name": "dota_v1", "mode": "random", "crop_max": 800},
                                         {"name": "ucmerced", "splits": ["train"]}]})
    assert isinstance(r, Recipe) and r.build.tile_size == 256
    a, b = r.sources
    assert (a.tile.mode, a.tile.crop_max, a.tile.tile_size, a.tile.format) == ("random", 800, 256, "png")
    assert (b.tile.mode, b.splits) == ("grid", ("train",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.tile.tile_size = 1  # type: ignore[misc]


@pytest.mark.parametrize("data,fragment", [
    ({"build": {"tilesize": 256}}, "unknown key 'tilesize'; valid keys: crop_max"),
    ({"sources": [{"name": "x", "tile_sise": 3}]}, "unknown key 'tile_sise'"),
    ({"sources": [{"path": "x"}]}, "missing key 'name'"),
    ({"build": {"mode": "spiral"}}, "mode must be one of grid, random"),
    ({"build": {"format": "gif"}}, "format must be one of jpg, png, webp"),
    ({"build": {"tile_size": "big"}}, "tile_size must be int"),
    ({"build": {"crop_min": 900, "crop_max": 100}}, "crop_min (900) is larger"),
    ({"filterz": {}}, "unknown table 'filterz'"),
])
def test_bad_recipes_name_the_problem(data, fragment):
    with pytest.raises(ConfigError) as info:
        recipe_from_mapping(data)
    assert fragment in str(info.value)


def test_load_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[build\ntile_size = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


def test_stride_defaults_to_tile_size():
    assert TileConfig(tile_size=300).stride_px == 300
    assert TileConfig(tile_size=300, stride=100).stride_px == 100
