"""One plan, one runner: the plan is checked whole before any work, the library runs the build with progress
as a callback, build.json is read once and written at stage boundaries, and the CLI gives the same build."""

from __future__ import annotations

import dataclasses

import pytest

from rs4m import manifest as mf
from rs4m.config import DedupConfig
from rs4m.errors import ConfigError
from rs4m.plan import (
    BuildPlan,
    EngineSettings,
    plan_from_flags,
    plan_from_recipe,
    plan_from_record,
)
from rs4m.record import BuildRecord
from rs4m.stages.build import Tick, run_build
from tests.tiny import build, make_images


def test_plan_is_checked_whole_and_frozen(tmp_path):
    make_images(tmp_path / "src", n=1, copies=0)
    rec = tmp_path / "r.toml"
    rec.write_text(f'[dedup]\nradius_bits = 3\n[[sources]]\nname = "folder"\npath = "{tmp_path / "src"}"\n'
                   'tile_size = 32\n')
    plan = plan_from_recipe(rec)
    assert isinstance(plan, BuildPlan) and plan.dedup == DedupConfig(radius_bits=3)
    assert plan.tile_configs()["folder/src"].tile_size == 32 and plan.tile_configs()["folder/src"].grey == "refuse"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.dedup = DedupConfig()  # type: ignore[misc]
    rec.write_text(rec.read_text().replace("radius_bits = 3", "radius_bits = 99"))
    with pytest.raises(ConfigError, match=r"\[dedup\]: radius_bits must be within 0..16"):
        plan_from_recipe(rec)
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        EngineSettings("spark")
    with pytest.raises(ConfigError, match="nothing to read"):
        plan_from_flags([])


def test_library_build_equals_cli_build_with_progress_and_few_record_writes(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_images(src, n=3, size=96)
    assert build(tmp_path / "cli", src).exit_code == 0
    plan = plan_from_flags([f"folder={src}"], {"tile_size": 64}, EngineSettings(workers=1))
    ticks: list[Tick] = []
    loads, saves = [], []
    real_load, real_save = BuildRecord.load.__func__, BuildRecord.save
    counting = classmethod(lambda cls, *a, **k: loads.append(1) or real_load(cls, *a, **k))
    monkeypatch.setattr(BuildRecord, "load", counting)
    monkeypatch.setattr(BuildRecord, "save", lambda self: saves.append(1) or real_save(self))
    report = run_build(tmp_path / "lib", plan, progress=ticks.append)
    assert report.ok and report.counts["catalog"]["tiles_kept"] > 0
    assert len(loads) == 1 and len(saves) == 7  # start, scan, tile, dedup, catalog, compact, finished
    tile_ticks = [t for t in ticks if t.stage == "tile"]
    assert tile_ticks[0].total == 1 and sum(t.advance for t in tile_ticks) == 1
    assert sum(t.advance for t in ticks if t.stage == "scan") == 4
    cli = mf.read_table(tmp_path / "cli" / "manifest.parquet", mf.MANIFEST_SCHEMA)
    lib = mf.read_table(tmp_path / "lib" / "manifest.parquet", mf.MANIFEST_SCHEMA)
    assert cli.drop_columns(["scene_id"]).equals(lib.drop_columns(["scene_id"]))
    record = BuildRecord.load(tmp_path / "lib")
    assert plan_from_record(record).tile_configs() == plan.tile_configs()
    assert plan_from_record(record, {"radius_bits": 2}).dedup.radius_bits == 2


def test_single_stage_runs_use_the_recorded_plan(tmp_path):
    src = tmp_path / "src"
    make_images(src, n=2, size=64)
    plan = plan_from_flags([f"folder={src}"], {"tile_size": 32}, EngineSettings(workers=1))
    out = tmp_path / "out"
    assert run_build(out, plan, ("scan",)).counts["scan"]["scenes"] == 3
    assert not (out / "tiles").exists()
    record = BuildRecord.load(out)
    report = run_build(out, plan_from_record(record), ("catalog", "tile", "dedup"), record=record)
    assert list(report.counts)[:3] == ["tile", "errors", "dedup"]  # run in stage order, whatever the order given
    assert report.counts["catalog"]["tiles_kept"] == 8  # 2 distinct 64² images in 32² tiles; the copy is a dup
    with pytest.raises(ConfigError, match="unknown stage 'index'"):
        run_build(out, plan, ("index",))


def test_output_table_decides_the_final_compaction(tmp_path):
    from rs4m.config import recipe_from_mapping
    from rs4m.plan import plan_from_cli

    with pytest.raises(ConfigError, match=r"\[output\]: unknown key 'keep'"):
        recipe_from_mapping({"output": {"keep": True}})
    with pytest.raises(ConfigError, match=r"\[output\]: keep_dropped must be bool"):
        recipe_from_mapping({"output": {"keep_dropped": "yes"}})
    make_images(tmp_path / "src", n=1, copies=0)
    rec = tmp_path / "r.toml"
    rec.write_text(f'[output]\nkeep_dropped = true\n[[sources]]\nname = "folder"\npath = "{tmp_path / "src"}"\n')
    assert plan_from_recipe(rec).stages() == ("scan", "tile", "dedup", "catalog")
    rec.write_text(rec.read_text().replace("true", "false"))
    assert plan_from_recipe(rec).stages()[-1] == "compact"
    flags = plan_from_cli(rec, None, (), False, {}, EngineSettings(), keep_dropped=True)
    assert flags.stages()[-1] == "catalog"  # the flag wins over the recipe


def test_dedup_flags_win_over_the_recipe_and_the_build_command_turns_dihedral_off(tmp_path):
    import json

    from click.testing import CliRunner

    from rs4m.cli import get_cli
    from rs4m.plan import plan_from_cli

    make_images(tmp_path / "src", n=2, copies=0)
    rec = tmp_path / "r.toml"
    rec.write_text(f'[dedup]\ndihedral = true\noverlap = false\n[[sources]]\nname = "folder"\n'
                   f'path = "{tmp_path / "src"}"\n')
    plan = plan_from_cli(rec, None, (), False, {}, EngineSettings(), dedup_flags={"dihedral": False, "overlap": None})
    assert plan.dedup.dihedral is False and plan.dedup.overlap is False  # None: the recipe's value stays
    for flag, want in (("--no-dihedral", False), (None, True)):
        out = tmp_path / f"out-{want}"
        args = ["build", str(out), "--recipe", str(rec), "--workers", "1", "-q"] + ([flag] if flag else [])
        result = CliRunner().invoke(get_cli(), args)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "build.json").read_text())["dedup"]["dihedral"] is want
        assert json.loads((out / "dedup.json").read_text())["dihedral"] == ("canonical" if want else "off")
