"""`rs4m stats` / `rs4m inspect`: counts equal those computed independently (DuckDB over the Parquet files),
pictures are PNGs sized by what they show, and stored bytes come back exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from rs4m.cli import get_cli
from rs4m.config import FilterConfig
from rs4m.report import compute_stats, format_stats
from rs4m.tiling import grid_windows


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


TILE_PX = 256


@pytest.fixture(scope="module")
def build(tmp_path_factory, aerial_sources) -> Path:
    """Two sources: a Landsat-like scene and its quadrants (nodata-filtered tiles, exact and geo duplicates) plus
    two broken files (error rows), and two DOTA-like PNGs."""
    root = tmp_path_factory.mktemp("report")
    landsat = root / "landsat"
    shutil.copytree(aerial_sources.landsat, landsat)
    data = (landsat / "scene.tif").read_bytes()
    (landsat / "truncated.tif").write_bytes(data[: len(data) // 3])
    (landsat / "text.tif").write_bytes(b"this is not an image\n" * 20)
    out = root / "out"
    result = run_cli("build", out, "--source", f"folder={landsat}", "--source", f"folder={aerial_sources.dota}",
                     "--tile-size", TILE_PX, "--workers", 1, "-q", "--keep-dropped")
    assert result.exit_code == 0, result.output
    return out


def sql(query: str, out: Path) -> list[tuple]:
    q = query.format(tiles=f"read_parquet('{out}/tiles/part-*.parquet')", dedup=f"'{out}/dedup.parquet'",
                     manifest=f"'{out}/manifest.parquet'", errors=f"'{out}/errors.parquet'",
                     shards=f"'{out}/shards.parquet'", scenes=f"'{out}/scenes.parquet'")
    return duckdb.sql(q).fetchall()


STATUS = """CASE WHEN t.filter_reason IS NOT NULL THEN 'filtered' WHEN d.dup_reason = 'leak' THEN 'leaked'
            WHEN d.dup_of IS NOT NULL THEN 'duplicate' ELSE 'kept' END"""


def test_totals_match_parquet(build):
    s = compute_stats(build)
    assert s["scenes"] == sql("SELECT count(*) FROM {scenes}", build)[0][0]
    assert s["tiles_total"] == sql("SELECT count(*) FROM {tiles}", build)[0][0]
    assert s["tiles_kept"] == sql("SELECT count(*) FROM {manifest}", build)[0][0]
    assert s["shards"] == sql("SELECT count(*) FROM {shards}", build)[0][0]
    assert s["bytes"]["shards"] == sql("SELECT sum(bytes) FROM {shards}", build)[0][0]
    assert s["bytes"]["kept"] == sql("SELECT sum(length) FROM {manifest}", build)[0][0]
    statuses = dict(sql(f"SELECT {STATUS}, count(*) FROM {{tiles}} t LEFT JOIN {{dedup}} d USING (tile_id) "
                        "GROUP BY 1", build))
    assert s["filtered"]["total"] == statuses["filtered"] > 0
    assert s["duplicates"]["total"] == statuses["duplicate"] > 0
    assert s["leaked"]["total"] == statuses.get("leaked", 0)
    assert s["tiles_kept"] == statuses["kept"]


def mostly_nodata_windows(sources) -> int:
    """How many grid windows of the scenes hold more nodata than the filter allows, from the pixels written."""
    limit = FilterConfig().max_nodata_frac
    return sum(scene.nodata_frac(*win) > limit for scene in sources.landsat_scenes + sources.dota_scenes
               for win in grid_windows(scene.width, scene.height, TILE_PX))


def test_reasons_match_parquet(build, aerial_sources):
    s = compute_stats(build)
    dup = dict(sql("SELECT dup_reason, count(*) FROM {dedup} WHERE dup_of IS NOT NULL AND dup_reason <> 'leak' "
                   "GROUP BY 1", build))
    assert s["duplicates"]["by_reason"] == dup and set(dup) >= {"exact", "geo"}
    filt = dict(sql("SELECT regexp_replace(filter_reason, ' \\(.*\\)$', ''), count(*) FROM {tiles} "
                    "WHERE filter_reason IS NOT NULL GROUP BY 1", build))
    assert s["filtered"]["by_reason"] == filt == {"mostly nodata": mostly_nodata_windows(aerial_sources)}
    errors = sql("SELECT stage, reason, count(*) FROM {errors} GROUP BY 1, 2", build)
    assert s["errors"]["total"] == sum(n for *_, n in errors) >= 2
    for stage, reason, n in errors:
        assert s["errors"]["by_stage_reason"][stage][reason] == n
    report = json.loads((build / "dedup.json").read_text())
    assert s["duplicates"]["by_source_pair"] == report["pairs_by_source"] != {}


@pytest.mark.parametrize("by,group", [("source", "sources"), ("licence", "licences"), ("format", "formats")])
def test_per_key_counts(build, by, group):
    s = compute_stats(build, by=by)
    rows = sql(f"SELECT coalesce(t.{by}, '(none)'), count(*), count(DISTINCT t.scene_id), "
               f"count(*) FILTER (WHERE {STATUS} = 'filtered'), count(*) FILTER (WHERE {STATUS} = 'duplicate') "
               "FROM {tiles} t LEFT JOIN {dedup} d USING (tile_id) GROUP BY 1", build)
    kept = dict(sql(f"SELECT {by}, count(*) FROM {{manifest}} GROUP BY 1", build))
    assert set(s[group]) == {r[0] for r in rows}
    for key, total, scenes, filtered, dups in rows:
        c = s[group][key]
        assert (c["tiles_total"], c["scenes"], c["filtered"], c["duplicates"]) == (total, scenes, filtered, dups)
        assert c["tiles_kept"] == kept.get(key, 0)
    assert sum(c["tiles_kept"] for c in s[group].values()) == s["tiles_kept"]
    if by == "source":
        assert len(s[group]) == 2


def test_distributions_match_manifest(build):
    s = compute_stats(build)
    for name in ("width", "gsd_m", "richness"):
        lo, med, hi, n = sql(f"SELECT min({name}), quantile_cont({name}, 0.5), max({name}), count({name}) "
                             "FROM {manifest}", build)[0]
        d = s["distributions"][name]
        assert d["count"] == n and d["min"] == pytest.approx(lo, rel=1e-5)
        assert d["p50"] == pytest.approx(med, rel=1e-5) and d["max"] == pytest.approx(hi, rel=1e-5)


def test_stats_cli_json_and_text(build):
    result = run_cli("stats", build, "--json", "--by", "licence")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(compute_stats(build, by="licence")))
    text = run_cli("stats", build)
    assert text.exit_code == 0 and text.stderr == ""
    assert text.stdout.strip() == format_stats(compute_stats(build)).strip()  # the result on stdout
    assert f"kept {data['tiles_kept']}," in text.stdout and "folder/images" in text.stdout


def test_stats_without_manifest_is_one_line(tmp_path):
    result = run_cli("stats", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "manifest.parquet" in result.stderr


def test_plot_grows_with_sources(build, tmp_path):
    one = compute_stats(build)
    many = dict(one, sources={f"src{k}": c for k in range(12) for c in one["sources"].values()})
    from rs4m.report import plot_stats

    sizes = []
    for name, stats in (("one", one), ("many", many)):
        path = plot_stats(stats, tmp_path / f"{name}.png")
        with Image.open(path) as img:
            assert img.format == "PNG"
            sizes.append(img.size)
    assert sizes[0][0] == sizes[1][0] and sizes[1][1] > sizes[0][1]
    result = run_cli("stats", build, "--plot", tmp_path / "cli.png")
    assert result.exit_code == 0 and Image.open(tmp_path / "cli.png").size == sizes[0]


# ---- inspect and contact sheets ----------------------------------------------------------------------------

import hashlib  # noqa: E402
import tarfile  # noqa: E402

from rs4m import manifest as mf  # noqa: E402
from rs4m.codec import decode  # noqa: E402
from rs4m.report import PAD_PX, contact_sheet, duplicate_groups, records, select_tiles  # noqa: E402


def tar_member(out: Path, shard: str, name: str) -> bytes:
    with tarfile.open(out / "shards" / shard) as tar:
        return tar.extractfile(name).read()


def manifest(out: Path) -> list[dict]:
    return mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()


def test_inspect_bytes_are_the_stored_bytes(build, tmp_path):
    rows = manifest(build)
    for row in (rows[0], rows[-1]):
        target = tmp_path / f"{row['tile_id']}.{row['format']}"
        result = run_cli("inspect", build, "--tile-id", row["tile_id"], "--bytes", target)
        assert result.exit_code == 0, result.output
        data = target.read_bytes()
        assert data == tar_member(build, row["shard"], f"{row['tile_id']}.{row['format']}")
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["length"]


def test_inspect_dropped_tile_says_why(build, tmp_path):
    dedup = mf.read_table(build / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()
    dup = next(d for d in dedup if d["dup_of"] is not None)
    result = run_cli("inspect", build, "--tile-id", dup["tile_id"], "--json", "--bytes", tmp_path / "dup.jpg")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert (row["status"], row["dup_of"], row["dup_group"]) == ("duplicate", dup["dup_of"], dup["dup_group"])
    assert (tmp_path / "dup.jpg").read_bytes() == tar_member(build, row["shard"], f"{dup['tile_id']}.jpg")
    missing = run_cli("inspect", build, "--tile-id", "0" * 32)
    assert missing.exit_code == 2 and "is in no tiles part" in missing.stderr


def test_inspect_where_and_source(build):
    cut = float(np.median([r["richness"] for r in manifest(build)]))
    expected = sql(f"SELECT tile_id FROM {{manifest}} WHERE richness > {cut} AND source = 'folder/images' "
                   "ORDER BY tile_id", build)
    result = run_cli("inspect", build, "--where", f"richness > {cut}", "--source", "folder/images", "--json",
                     "-n", 1000)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["count"] == len(expected) > 0
    assert [r["tile_id"] for r in data["rows"]] == [t for (t,) in expected]
    few = json.loads(run_cli("inspect", build, "-n", 3, "--json").stdout)
    assert len(few["rows"]) == 3 and few["count"] == len(manifest(build))


@pytest.mark.parametrize("expr", ["richness >", "no_such_column > 3", "richness"])
def test_inspect_bad_where_is_one_line(build, expr):
    result = run_cli("inspect", build, "--where", expr)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("rs4m: error: --where")


def _cell(sheet: np.ndarray, row: int, col: int, thumb: int, label_h: int) -> np.ndarray:
    y, x = PAD_PX + row * (thumb + label_h + PAD_PX), PAD_PX + col * (thumb + PAD_PX)
    return sheet[y:y + thumb, x:x + thumb]


def _thumb(out: Path, row: dict, thumb: int) -> np.ndarray:
    data = tar_member(out, row["shard"], f"{row['tile_id']}.{row['format']}")
    img = Image.fromarray(decode(data))
    img.thumbnail((thumb, thumb))
    return np.asarray(img)


@pytest.mark.parametrize("n,cols,lines", [(1, 1, 1), (4, 2, 2), (10, 4, 3)])
def test_contact_sheet_grid(build, tmp_path, n, cols, lines):
    thumb = 64
    rows = records(select_tiles(build).head(n))
    path = contact_sheet(build, rows, tmp_path / "grid.png", thumb=thumb)
    with Image.open(path) as img:
        assert img.format == "PNG"
        sheet = np.asarray(img.convert("RGB"))
    height, width = sheet.shape[:2]
    assert width == cols * (thumb + PAD_PX) + PAD_PX
    label_h = (height - PAD_PX) // lines - thumb - PAD_PX
    assert height == lines * (thumb + label_h + PAD_PX) + PAD_PX and label_h > 10
    last = rows[-1]
    expected = _thumb(build, last, thumb)  # full-size 256 px tiles fill the cell exactly
    got = _cell(sheet, (n - 1) // cols, (n - 1) % cols, thumb, label_h)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_contact_sheet_dups_one_group_per_line(build, tmp_path):
    thumb = 48
    groups = duplicate_groups(build, 3)
    assert len(groups) == 3
    for g in groups:
        assert g[0]["dup_of"] is None and all(r["dup_of"] == g[0]["tile_id"] for r in g[1:])
        assert len({r["dup_group"] for r in g}) == 1
    path = contact_sheet(build, groups, tmp_path / "dups.png", thumb=thumb)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    cols = max(len(g) for g in groups)
    assert sheet.shape[1] == cols * (thumb + PAD_PX) + PAD_PX
    label_h = (sheet.shape[0] - PAD_PX) // 3 - thumb - PAD_PX
    for line, g in enumerate(groups):
        kept = _thumb(build, g[0], thumb)
        h, w = kept.shape[:2]
        cell = _cell(sheet, line, 0, thumb, label_h)
        oy, ox = (thumb - h) // 2, (thumb - w) // 2
        assert np.abs(cell[oy:oy + h, ox:ox + w].astype(int) - kept.astype(int)).max() <= 1
    result = run_cli("inspect", build, "--dups", "-n", 2, "--grid", tmp_path / "cli.png", "--json", "--thumb", thumb)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [g["tiles"][0]["tile_id"] for g in data["groups"]] == [g[0]["tile_id"] for g in groups[:2]]
    assert Image.open(tmp_path / "cli.png").size[1] < sheet.shape[0]


def test_the_keep_rule_agrees_between_catalog_reports_and_verify():
    from itertools import product

    from rs4m.keep import kept_mask, left_by_dedup, statuses

    combos = list(product([None, "blank"], [None, "t0"], [None, "phash", "leak"]))
    table = pa.table({"filter_reason": [c[0] for c in combos], "dup_of": [c[1] for c in combos],
                      "dup_reason": [c[2] for c in combos]})
    status = statuses(np.array([c[0] is not None for c in combos]), np.array([c[2] == "leak" for c in combos]),
                      np.array([c[1] is not None for c in combos]))
    kept = np.asarray(kept_mask(table), bool)
    assert (kept == (status == "kept")).all() and kept.sum() == 2  # unfiltered, no dup_of, not leaked
    assert status[combos.index(("blank", "t0", "leak"))] == "filtered"
    assert status[combos.index((None, "t0", "leak"))] == "leaked"
    assert status[combos.index((None, "t0", "phash"))] == "duplicate"
    left = np.asarray(left_by_dedup(table), bool)
    assert (left == np.array([c[1] is not None or c[2] == "leak" for c in combos])).all()
