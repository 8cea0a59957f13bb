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


SOURCE = {"name": "folder", "path": "x"}


@pytest.mark.parametrize("data,fragment", [
    # exact types: a boolean is no number, a number no boolean
    ({"build": {"tile_size": True}}, "[build]: tile_size must be int, not a boolean"),
    ({"build": {"quality": 95.0}}, "quality must be int"),
    ({"filters": {"drop_blank": 1}}, "[filters]: drop_blank must be bool, not 1"),
    ({"filters": {"max_nodata_frac": False}}, "max_nodata_frac must be float, not a boolean"),
    ({"filters": {"min_richness": float("nan")}}, "min_richness must be a finite number"),
    ({"sources": [{**SOURCE, "tile_size": False}]}, "(folder): tile_size must be int, not a boolean"),
    # ranges
    ({"build": {"tile_size": 100_000}}, "tile_size must be within 1..16384, not 100000"),
    ({"build": {"out_size": -1}}, "out_size must be within 0..16384"),
    ({"build": {"crop_max": 10**6}}, "crop_max must be within 1..16384"),
    ({"build": {"stride": 20_000}}, "stride must be within 0..16384"),
    ({"build": {"scenes_per_unit": 0}}, "scenes_per_unit must be within 1..100000"),
    ({"build": {"max_pixels": 0}}, "max_pixels must be at least 1"),
    ({"filters": {"max_nodata_frac": 1.5}}, "max_nodata_frac must be within 0.0..1.0, not 1.5"),
    ({"filters": {"min_richness": -1}}, "min_richness must be at least 0.0"),
    # [dedup] is checked with the rest, before any work
    ({"dedup": {"radius": 5}}, "[dedup]: unknown key 'radius'; valid keys: dhash_radius_bits"),
    ({"dedup": {"geo": 1}}, "[dedup]: geo must be bool, not 1"),
    ({"dedup": {"radius_bits": True}}, "radius_bits must be int, not a boolean"),
    ({"dedup": {"radius_bits": 40}}, "radius_bits must be within 0..16 bits"),
    ({"dedup": {"geo_measure": "area"}}, "geo_measure must be one of containment, iou"),
    ({"dedup": {"source_priority": "dota"}}, "source_priority must be a list of strings"),
    ({"dedup": {"source_priority": [1, 2]}}, "source_priority must be a list of strings"),
    ({"dedup": {"gsd_ratio": 0.5}}, "gsd_ratio must be at least 1.0"),
    ({"dedup": [1]}, "[dedup] must be a table of keys"),
    # source keys of the wrong type
    ({"sources": [{**SOURCE, "glob": 3}]}, "glob must be a string, not 3"),
    ({"sources": [{"name": "folder", "path": 5}]}, "path must be a string, not 5"),
    ({"sources": [{**SOURCE, "options": "licence=x"}]}, "options must be a table, not 'licence=x'"),
    ({"sources": [{**SOURCE, "max_images": -1}]}, "max_images must be at least 0 (0: no cap), not -1"),
    ({"sources": [{**SOURCE, "max_images": True}]}, "max_images must be an integer, not True"),
    ({"sources": [{**SOURCE, "max_images": "10"}]}, "max_images must be an integer, not '10'"),
    ({"sources": [{**SOURCE, "splits": "train"}]}, "splits must be a list of strings, not 'train'"),
    ({"sources": [{**SOURCE, "splits": [1]}]}, "splits must be a list of strings, not [1]"),
    ({"sources": [{"name": 3}]}, "name must be a string, not 3"),
    ({"sources": {"name": "folder"}}, "sources must be an array of tables"),
    ({"sources": ["folder"]}, "[[sources]] #1 must be a table"),
])
def test_recipe_values_are_checked_exactly(data, fragment):
    with pytest.raises(ConfigError) as info:
        recipe_from_mapping(data)
    assert fragment in str(info.value)


def test_valid_values_still_pass():
    r = recipe_from_mapping({"build": {"tile_size": 16384, "out_size": 0, "stride": 0},
                             "filters": {"max_nodata_frac": 1, "min_richness": 0, "drop_blank": False},
                             "dedup": {"radius_bits": 0, "geo_iou": 1, "source_priority": ["a", "b"]},
                             "sources": [{**SOURCE, "max_images": 0, "splits": [], "options": {}}]})
    assert r.build.tile_size == 16384 and r.filters.max_nodata_frac == 1
    assert r.dedup == {"radius_bits": 0, "geo_iou": 1, "source_priority": ["a", "b"]}
    assert r.sources[0].splits == () and r.sources[0].max_images == 0


def test_geo_measures_match_the_dedup_module():
    from rs4m import dedup
    from rs4m.config import GEO_MEASURES

    assert GEO_MEASURES == dedup.GEO_MEASURES


def test_bad_dedup_key_stops_the_build_before_any_work(tmp_path):
    from tests.tiny import make_images, run, stderr_lines

    make_images(tmp_path / "src", n=1, copies=0)
    rec = tmp_path / "recipe.toml"
    rec.write_text(f'[dedup]\nradius = 3\n[[sources]]\nname = "folder"\npath = "{tmp_path / "src"}"\n')
    result = run("build", tmp_path / "out", "--recipe", rec, "--workers", 1)
    assert result.exit_code == 2
    assert "[dedup]: unknown key 'radius'" in stderr_lines(result)[-1] and len(stderr_lines(result)) == 1
    assert not (tmp_path / "out").exists()


def test_catalog_on_an_empty_folder_is_one_line(tmp_path):
    from tests.tiny import run, stderr_lines

    (tmp_path / "empty").mkdir()
    result = run("catalog", tmp_path / "empty")
    assert result.exit_code == 2
    assert stderr_lines(result) == [f"rs4m: error: {tmp_path / 'empty'} has no tiles parts to catalog; run "
                                    f"`rs4m build {tmp_path / 'empty'} --source ...` (or `rs4m scan` and "
                                    f"`rs4m tile {tmp_path / 'empty'}`) first"]
    assert not (tmp_path / "empty" / "manifest.parquet").exists()
