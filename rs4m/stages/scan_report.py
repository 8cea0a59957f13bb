"""What the scan tells a person beyond its tables: sources that yielded nothing, and why; slow archives.

A source with no readable image says which of three things happened: no file matched the adapter's layout,
every image found lies in splits that are not read (benchmark test splits are left out by default), or every
image was refused (the most common reasons, counted). When no source yields anything the build stops there
with those reasons instead of failing later for want of tiles.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rs4m import archive
from rs4m.stages.sources import SourceInput
from rs4m.sources import SceneRef, ScanProblem

#: reasons shown per empty source
TOP_REASONS = 3


def _top(reasons: list[str]) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in Counter(reasons).most_common(TOP_REASONS))


def _split_counts(inp: SourceInput) -> Counter:
    """Images per split when every split is read (only asked when the selected splits gave nothing)."""
    items = inp.adapter().scenes(inp.root, None)
    return Counter(item.split or "no known split" for item in items if isinstance(item, SceneRef))


def why_nothing(inp: SourceInput, listed: int, errors: list[dict]) -> str:
    """Why source ``inp`` gave no scene: ``listed`` images were enumerated, ``errors`` are its scan rows."""
    mine = [e for e in errors if e["source"] == inp.source]
    if listed:
        return f"all {listed} images were refused: {_top([e['reason'] for e in mine])}"
    splits = inp.splits()
    if splits is not None:
        counts = _split_counts(inp)
        if counts:
            held = ", ".join(f"{split} {n}" for split, n in sorted(counts.items()))
            return (f"all {sum(counts.values())} images are in splits not read ({held}; read: "
                    f"{', '.join(splits)}; benchmark test splits are left out unless a recipe's splits name them)")
    details = [e for e in mine if e["path"] == "."]
    looked = f" ({details[0]['detail'].split('. ')[0]})" if details and details[0]["detail"] else ""
    others = [e["reason"] for e in mine if e["path"] != "."]
    problems = f"; scan problems: {_top(others)}" if others else ""
    return f"no images matched the layout under {inp.root}{looked}{problems}"


def empty_sources(inputs: list[SourceInput], listed: dict[str, int], rows: list[dict],
                  errors: list[dict]) -> dict[str, str]:
    """source → why it yielded no scene row, for every source that yielded none."""
    with_rows = {r["source"] for r in rows}
    return {inp.source: why_nothing(inp, listed[inp.source], errors)
            for inp in inputs if inp.source not in with_rows}


def slow_archives(inp: SourceInput, refs: list[SceneRef | ScanProblem]) -> list[str]:
    """One line per gzip-compressed tar whose members ``inp`` reads in place (slow: one compressed stream)."""
    counts: Counter = Counter()
    for ref in refs:
        if not isinstance(ref, SceneRef):
            continue
        for rel in ref.band_paths or (ref.scene_path,):
            split = archive.split_member(inp.root, rel)
            try:
                slow = split is not None and archive.is_slow(archive.archive_kind(split[0]))
            except OSError:
                slow = False
            if slow:
                counts[split[0]] += 1
    return [f"source {inp.source}: {n} images are read in place from {Path(path).name}, a gzip-compressed tar "
            f"(one compressed stream: each read decompresses it again, which is slow); for speed unpack it "
            f"beside itself (tar xzf {Path(path).name}) and the unpacked files are read instead"
            for path, n in sorted(counts.items())]
