"""Local features of a build's tiles on disk: one row per stored tile, written by the tile stage per work unit
(``OUT/features/part-NNNNN.parquet``, :data:`rs4m.manifest.FEATURES_SCHEMA`) and read back for the overlap
search: whole (:func:`read_features`), or a part at a time into byte planes for the candidate search
(:func:`write_planes`) and only the rows of its candidates for verification (:func:`read_feature_rows`).

A tile's row holds the features of the tile and of its left-right mirror (:func:`rs4m.overlap.extract_both`),
:data:`KEYPOINTS` each: with the mirror's features stored, a comparison of two stored tiles covers all 8 flips
and rotations, which features of one orientation cannot (ORB is rotation- but not mirror-invariant). At 18
bytes a keypoint that is 2 × 112 × 18 = 4032 bytes a tile. The part records the extraction settings and the
number of rows in its ``rs4m.features`` metadata, which the tile stage checks when it resumes.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from rs4m import manifest as mf
from rs4m.overlap.features import DESC_BYTES, Features

#: keypoints kept per orientation (two orientations a tile: 4032 bytes)
KEYPOINTS = 112
#: the longer side a tile is brought to before detection (reduced, or enlarged at most 2×)
WORK_PX = 512
#: bumped when the stored features change meaning (extractor, descriptor bytes); 2: detection to 19 px of the
#: border, small tiles enlarged to WORK_PX (features of version 1 are redone when a build resumes); 3: FAST
#: threshold 20 in tiles that are not enlarged (the same features in most tiles, not in all)
FEATURES_VERSION = 3


def settings() -> dict:
    """The extraction settings a features part records."""
    return {"version": FEATURES_VERSION, "keypoints": KEYPOINTS, "work_px": WORK_PX}


def tile_features_row(tile_id: str, scene_id: str, rgb: np.ndarray) -> dict:
    """The features row of one tile from its pixels ``[H, W, 3]``; a failure is a row with no features and
    the reason in ``feature_error`` (never an exception: the tile and its scene stay in the build)."""
    from rs4m.overlap.features import extract_both

    row = {"tile_id": tile_id, "scene_id": scene_id, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}
    try:
        feats, mirror = extract_both(rgb, KEYPOINTS, WORK_PX)
    except Exception as err:  # noqa: BLE001 - any extractor failure is this tile's row, not the scene's
        row["feature_error"] = "".join(traceback.format_exception_only(type(err), err)).strip()
        return row
    row.update(desc=feats.desc.tobytes(), xy=feats.xy_q.tobytes(), mirror_desc=mirror.desc.tobytes(),
               mirror_xy=mirror.xy_q.tobytes())
    return row


def write_features_part(path: Path, rows: list[dict]) -> None:
    """Write one unit's features rows (temp file + rename) with the settings and the row count."""
    mf.write_table(mf.table_from_rows(rows, mf.FEATURES_SCHEMA), path, mf.FEATURES_SCHEMA,
                   metadata={"features": {**settings(), "tiles": len(rows)}})


def part_is_current(path: Path, stored_tiles: int | None = None) -> bool:
    """Whether a features part is readable and was made with the current extraction settings (and, given
    ``stored_tiles``, holds that many rows)."""
    try:
        meta = mf.read_metadata(path, "features")
    except Exception:  # noqa: BLE001 - missing or unreadable: not current (the unit is redone)
        return False
    if not meta or (stored_tiles is not None and meta.get("tiles") != stored_tiles):
        return False
    return all(meta.get(k) == v for k, v in settings().items())


def _flat(column: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A binary column of fixed-width records → ``uint8 [M, width]`` (all rows' records) and ``int64 [n + 1]``
    row offsets into it (nulls are empty rows)."""
    arr = column.combine_chunks() if len(column) else pa.array([], pa.binary())
    arr = arr.fill_null(b"")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    flat = data[offsets[0] : offsets[-1]].reshape(-1, width)
    return flat, (offsets - offsets[0]) // width


@dataclass
class FeatureSet:
    """Features of many images in flat arrays: row ``r``'s descriptors are ``desc[start[r] : start[r + 1]]``
    (``uint8 [K, 16]``), its positions ``xy_q`` alike; ``mirror_*`` those of its mirror image (empty when not
    known). ``group`` says which images can never be overlap duplicates of each other (one scene)."""

    ids: list[str]
    group: np.ndarray  # int64 [N]
    width: np.ndarray  # int64 [N]
    height: np.ndarray  # int64 [N]
    desc: np.ndarray  # uint8 [M, 16]
    xy_q: np.ndarray  # uint8 [M, 2]
    start: np.ndarray  # int64 [N + 1]
    mirror_desc: np.ndarray
    mirror_xy_q: np.ndarray
    mirror_start: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def features(self, row: int, mirrored: bool = False) -> Features:
        """The :class:`Features` of one row (of its mirror image with ``mirrored``)."""
        desc, xy, start = (self.mirror_desc, self.mirror_xy_q, self.mirror_start) if mirrored else \
            (self.desc, self.xy_q, self.start)
        lo, hi = start[row], start[row + 1]
        return Features(desc[lo:hi], xy[lo:hi], int(self.width[row]), int(self.height[row]))

    @classmethod
    def from_features(cls, ids: list[str], pairs: list[tuple[Features, Features | None]],
                      group: np.ndarray | None = None) -> FeatureSet:
        """A set of in-memory features (e.g. benchmark images), each with its mirror's (or None)."""
        def stack(items: list[Features | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            empty = Features(np.zeros((0, DESC_BYTES), np.uint8), np.zeros((0, 2), np.uint8), 0, 0)
            items_ = [f if f is not None else empty for f in items]
            counts = np.array([len(f.desc) for f in items_], np.int64)
            return (np.concatenate([f.desc for f in items_] + [empty.desc]),
                    np.concatenate([f.xy_q for f in items_] + [empty.xy_q]),
                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        desc, xy, start = stack([f for f, _ in pairs])
        mdesc, mxy, mstart = stack([m for _, m in pairs])
        return cls(list(ids), np.arange(len(ids)) if group is None else np.asarray(group, np.int64),
                   np.array([f.width for f, _ in pairs], np.int64), np.array([f.height for f, _ in pairs], np.int64),
                   desc, xy, start, mdesc, mxy, mstart)


def _valid_rows(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One features part's rows with features (those whose extraction failed are left out)."""
    table = mf.read_table(path, mf.FEATURES_SCHEMA, columns=columns)
    return table.filter(table["desc"].is_valid())


def _feature_set(table: pa.Table) -> FeatureSet:
    desc, start = _flat(table["desc"], DESC_BYTES)
    xy, _ = _flat(table["xy"], 2)
    mdesc, mstart = _flat(table["mirror_desc"], DESC_BYTES)
    mxy, _ = _flat(table["mirror_xy"], 2)
    scenes = table["scene_id"].combine_chunks().dictionary_encode() if len(table) else None
    group = scenes.indices.to_numpy(zero_copy_only=False).astype(np.int64) if scenes is not None else \
        np.zeros(0, np.int64)
    return FeatureSet(table["tile_id"].to_pylist(), group, table["width"].to_numpy().astype(np.int64),
                      table["height"].to_numpy().astype(np.int64), desc, xy, start, mdesc, mxy, mstart)


def read_features(parts: list[Path]) -> FeatureSet:
    """Every row with features of the given features parts (rows whose extraction failed are left out), with
    one ``group`` per scene."""
    tables = [_valid_rows(p) for p in parts]
    return _feature_set(pa.concat_tables(tables) if tables else mf.FEATURES_SCHEMA.empty_table())


@dataclass(frozen=True)
class StoredFeatures:
    """The rows with features of features parts without their descriptors, which :func:`write_planes` wrote
    to a file as byte planes: row ``r`` (numbered through the parts in order, as :func:`read_features` numbers
    them) has ``start[r + 1] - start[r]`` keypoints (``mirror_start`` those of its mirror image); ``group`` one
    per scene, as :func:`read_features` makes it. ``blocks`` the ``(byte offset, keypoints)`` of each part's
    descriptors in the planes file, every part's in order, then every part's mirror descriptors: keypoint
    ``k`` of a block has byte ``c`` at ``offset + c * keypoints + k``."""

    parts: list[Path]
    ids: list[str]
    group: np.ndarray  # int64 [N]
    rows: np.ndarray  # int64 [parts]: rows with features in each part
    start: np.ndarray  # int64 [N + 1]
    mirror_start: np.ndarray  # int64 [N + 1]
    blocks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


def write_planes(parts: list[Path], out: BinaryIO) -> StoredFeatures:
    """Write the descriptors of every row with features of ``parts`` to ``out`` as byte planes, a part at a
    time (one part's descriptors held at once), and return what the candidate search needs besides them."""
    ids: list[str] = []
    scenes: list[pa.Array] = []
    rows, starts, mirror_starts = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    blocks: list[tuple[int, int]] = []
    mirror_blocks: list[tuple[int, int]] = []
    offset, total = 0, [0, 0]  # bytes written; keypoints so far of each orientation
    for path in parts:
        table = _valid_rows(path, ["tile_id", "scene_id", "desc", "mirror_desc"])
        ids += table["tile_id"].to_pylist()
        scenes.append(table["scene_id"].combine_chunks())
        rows.append(len(table))
        for side, (column, where, at) in enumerate((("desc", blocks, starts),
                                                    ("mirror_desc", mirror_blocks, mirror_starts))):
            flat, start = _flat(table[column], DESC_BYTES)
            out.write(np.ascontiguousarray(flat.T).tobytes())
            where.append((offset, len(flat)))
            offset += flat.size
            at.append(start[1:] + total[side])
            total[side] += len(flat)
        del table, flat
        pa.default_memory_pool().release_unused()  # the part's buffers, which the pool would keep beside the search
    out.flush()
    scene = pa.chunked_array(scenes, pa.string()).combine_chunks() if scenes else pa.array([], pa.string())
    group = scene.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64) if len(scene) else \
        np.zeros(0, np.int64)
    return StoredFeatures(list(parts), ids, group, np.array(rows, np.int64), np.concatenate(starts),
                          np.concatenate(mirror_starts), blocks + mirror_blocks)


def read_feature_rows(stored: StoredFeatures, rows: np.ndarray) -> FeatureSet:
    """The features of the rows ``rows`` (sorted, distinct row numbers of ``stored``) alone, read a part at a
    time: row ``k`` of the result is row ``rows[k]``."""
    rows = np.asarray(rows, np.int64)
    bounds = np.concatenate([[0], np.cumsum(stored.rows)])
    tables = []
    for p, path in enumerate(stored.parts):
        lo, hi = np.searchsorted(rows, bounds[p : p + 2])
        if hi > lo:
            tables.append(_valid_rows(path).take(pa.array(rows[lo:hi] - bounds[p])))
            pa.default_memory_pool().release_unused()  # the rest of the part
    return _feature_set(pa.concat_tables(tables) if tables else mf.FEATURES_SCHEMA.empty_table())
