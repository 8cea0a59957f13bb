"""The ``README.md`` dataset card of a Hugging Face export: what is in it, under which licences, how it was made.

The YAML header tells the Hub and ``datasets.load_dataset`` where the Parquet files are (``configs`` /
``data_files``); the body lists every source with its tile count, title and citation, every licence with the
tiles under it (and warnings for licences that forbid commercial use or redistribution, or are unknown), the
build's curation figures (filtered, duplicates, benchmark leakage) and its recipe, and the rs4m version and
command that made the export. The text is a function of the build and the export options (no clock times),
so a rerun writes the same card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rs4m import manifest as mf
from rs4m.errors import Rs4mError
from rs4m.export.runner import ExportJob, Plan
from rs4m.version import __version__

NON_COMMERCIAL = re.compile(r"(\bNC\b|non-?commercial|academic|research)", re.IGNORECASE)
NO_REDISTRIBUTION = re.compile(r"no redistribution|not (be )?redistribut", re.IGNORECASE)
UNKNOWN = re.compile(r"^\s*(unknown|none|)\s*$", re.IGNORECASE)
#: licences the Hub knows by id (lower-case SPDX); anything else is ``license: other``
HUB_LICENCES = {"cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
                "cc-by-sa-3.0", "cc-by-nc-sa-3.0", "cc-by-3.0", "mit", "apache-2.0", "odbl", "pddl"}


def licence_warnings(by_licence: dict[str, int]) -> list[str]:
    """One line per kind of restriction found among the exported licences (empty when there is none)."""
    total = sum(by_licence.values())
    checks = (
        (NON_COMMERCIAL, "forbid commercial use or are for research / academic use only"),
        (NO_REDISTRIBUTION, "forbid redistribution: check the terms before you publish this export"),
        (UNKNOWN, "are unknown: the source declares no licence"),
    )
    lines = []
    for pattern, what in checks:
        hit = {lic: n for lic, n in by_licence.items() if pattern.search(lic)}
        if hit:
            names = ", ".join(f"{lic} ({n})" for lic, n in sorted(hit.items()))
            lines.append(f"**Warning:** {sum(hit.values())} of {total} tiles carry licences that {what}: {names}.")
    return lines


def adapter_facts(record: dict[str, Any]) -> dict[str, dict]:
    """source → the adapter's declared facts (title, citation, licence), where the adapter is known."""
    from rs4m.sources import get_source

    facts: dict[str, dict] = {}
    for src in record.get("sources") or []:
        name = src.get("adapter")
        if not name:
            continue
        try:
            facts[src["source"]] = get_source(name).facts()
        except Rs4mError:  # an adapter this installation lacks: the card says so instead of failing
            facts[src["source"]] = {}
    return facts


def _yaml_header(plan: Plan, rows: int) -> list[str]:
    licences = {lic.lower() for lic in plan.by_licence}
    licence = licences.pop() if len(licences) == 1 and next(iter(licences)) in HUB_LICENCES else "other"
    size = next(label for bound, label in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"),
                                           (1e6, "100K<n<1M"), (1e7, "1M<n<10M"), (float("inf"), "n>10M"))
                if rows < bound)
    lines = ["---", f"license: {licence}"]
    if licence == "other":
        lines += ["license_name: per-tile", "license_details: every row's licence is in its `licence` column"]
    return lines + ["task_categories:", "- image-feature-extraction", "tags:", "- remote-sensing",
                    "- earth-observation", "- rs4m", "size_categories:", f"- {size}", "configs:",
                    "- config_name: default", "  data_files:", "  - split: train", "    path: data/train-*", "---"]


def _sources_table(plan: Plan, facts: dict[str, dict]) -> list[str]:
    lines = ["| source | tiles | title | licence |", "|---|---:|---|---|"]
    for source, n in sorted(plan.by_source.items()):
        licences = sorted(lic for (s, lic) in plan.by_source_licence if s == source)
        lines.append(f"| {_cell(source)} | {n} | {_cell(facts.get(source, {}).get('title') or '-')} | "
                     f"{_cell('; '.join(licences))} |")
    return lines


def _licences_table(plan: Plan) -> list[str]:
    lines = ["| licence | tiles | sources |", "|---|---:|---|"]
    for licence, n in sorted(plan.by_licence.items()):
        sources = sorted(s for (s, lic) in plan.by_source_licence if lic == licence)
        lines.append(f"| {_cell(licence)} | {n} | {_cell(', '.join(sources))} |")
    return lines


def _curation_table(record: dict[str, Any], plan: Plan) -> list[str]:
    catalog = (record.get("stages") or {}).get("catalog") or {}
    per_source = catalog.get("sources") or {}
    keys = ("tiles_total", "filtered", "duplicates", "leaked", "tiles_kept")
    lines = ["| source | tiles cut | filtered | duplicates | benchmark leaks | kept | exported |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for source in sorted(set(per_source) | set(plan.by_source)):
        counts = per_source.get(source, {})
        lines.append(f"| {_cell(source)} | " + " | ".join(str(counts.get(k, "-")) for k in keys)
                     + f" | {plan.by_source.get(source, 0)} |")
    if catalog:
        lines.append("| **all** | " + " | ".join(str(catalog.get(k, "-")) for k in keys) + f" | {plan.rows} |")
    return lines


def _leakage_lines(out: Path) -> list[str]:
    path = out / "leakage.parquet"
    if not path.exists():
        return []
    table = mf.read_table(path, mf.LEAKAGE_SCHEMA, columns=["tile_id", "benchmark"])
    counts = table.group_by("benchmark").aggregate([("tile_id", "count_distinct")]).to_pylist()
    return ["", "Tiles matched against benchmark test images (and removed):", ""] + [
        f"- {_cell(r['benchmark'])}: {r['tile_id_count_distinct']} tiles" for r in sorted(counts, key=str)]


def _recipe(record: dict[str, Any]) -> str:
    """The build's resolved plan without local folder paths (they mean nothing to a reader of the card)."""
    sources = [{k: v for k, v in s.items() if k != "root"} for s in record.get("sources") or []]
    recipe = record.get("recipe")
    return json.dumps({"recipe": Path(recipe).name if recipe else None, "sources": sources,
                       "filters": record.get("filters"), "dedup": record.get("dedup")}, indent=2, sort_keys=True)


def _citations(plan: Plan, facts: dict[str, dict]) -> list[str]:
    lines = []
    for source in sorted(plan.by_source):
        fact = facts.get(source, {})
        cite = fact.get("citation") or "no citation declared by the source's adapter"
        lines.append(f"- **{_cell(source)}** ({_cell(fact.get('title') or 'unknown dataset')}): {_cell(cite)}")
    return lines


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return str(text).replace("|", "/").replace("\n", " ")


def render_card(job: ExportJob, record: dict[str, Any], title: str) -> str:
    """The whole card as Markdown text."""
    plan, facts = job.plan, adapter_facts(record)
    built_with = (record.get("versions") or {}).get("rs4m", "unknown")
    where = f" --where {json.dumps(job.selection.where)}" if job.selection.where else ""
    body = [f"# {title}", "",
            (f"{plan.rows} remote-sensing RGB tiles from {len(plan.by_source)} sources, curated with rs4m "
             "(scan → tile → dedup → catalog) and exported with the stored image bytes unchanged."), "",
            "```python", "from datasets import load_dataset", "ds = load_dataset(\"PATH/OR/REPO\", split=\"train\")",
            "ds[0][\"image\"]  # PIL image; every manifest column is beside it", "```", "",
            "## Sources", "", *_sources_table(plan, facts), "",
            "## Licences", "", *_licences_table(plan), "", *licence_warnings(dict(plan.by_licence)), "",
            "## Curation", "", *_curation_table(record, plan), *_leakage_lines(job.out), "",
            "## Recipe", "", "```json", _recipe(record), "```", "",
            "## Citations", "", *_citations(plan, facts), "",
            "## How this export was made", "",
            f"- built with rs4m {built_with}; exported with rs4m {__version__}",
            f"- command: `rs4m export hf {job.out.name} {job.dest.name} --shard-size {job.shard_bytes}{where}`",
            (f"- {len(plan.files)} Parquet files, {plan.bytes} bytes of tile data; each file was re-read and every "
             "tile's sha256 checked against the build's manifest")]
    return "\n".join(_yaml_header(plan, plan.rows) + [""] + body) + "\n"
