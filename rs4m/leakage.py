"""Benchmark leakage: pretraining tiles that copy a benchmark image. Pure functions on arrays, no file IO.

Each benchmark image becomes *entries* with pixel sha256, pHash and dHash:

* the whole image in its 8 flips/rotations (hashed from the transformed pixels, so exact for each);
* crops: windows of the sizes the tiles were cut at (``width × height`` in scene pixels), on a grid with
  stride ``stride_frac`` × size plus the last position flush with the right/bottom edge, i.e. the grid the
  tile stage itself uses on an image of that size.

A tile leaks an image when its ``pixel_sha256`` equals an entry's (``exact`` for the whole image, ``crop``
for a window; distance 0), or when its pHash and dHash are within the radii of an entry's (``near`` for the
whole image at any flip/rotation, ``crop`` for a window; distance in pHash bits).

Limits: a crop is found when the tile's window lies within a few percent of a window of that grid (pHash
tolerates small shifts, not half a tile) and at the image's own scale; crops are not searched flipped or
rotated; a tile that holds a benchmark image *inside it* (a benchmark image smaller than the tile) is only
found if the rest of the tile barely changes the hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rs4m.hamming import hamming_pairs_between
from rs4m.hashing import dihedral, hashes, pixel_hash

KINDS = ("exact", "near", "crop")  # strongest first


@dataclass(frozen=True)
class BenchmarkEntries:
    """Hashed views of benchmark images, ``[M]`` each: ``image`` (object, the image's name), ``crop`` (bool:
    a window rather than the whole image), ``pixel_sha256`` (object), ``phash`` and ``dhash`` (uint64)."""

    image: np.ndarray
    crop: np.ndarray
    pixel_sha256: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    @classmethod
    def concat(cls, parts: Iterable[BenchmarkEntries]) -> BenchmarkEntries:
        parts = list(parts)
        if not parts:
            obj = np.zeros(0, object)
            return cls(obj, np.zeros(0, bool), obj, np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("image", "crop", "pixel_sha256", "phash", "dhash")))


def crop_windows(width: int, height: int, sizes: Iterable[tuple[int, int]], stride_frac: float = 0.5):
    """Windows ``(x, y, w, h)`` of each size ``(w, h)`` smaller than the image, on a ``stride_frac`` grid
    whose last row and column sit flush with the image's right and bottom edges."""
    out = []
    for w, h in sorted(set(sizes)):
        if w > width or h > height or (w, h) == (width, height):
            continue
        sx, sy = max(1, int(w * stride_frac)), max(1, int(h * stride_frac))
        xs = sorted(set(range(0, width - w + 1, sx)) | {width - w})
        ys = sorted(set(range(0, height - h + 1, sy)) | {height - h})
        out += [(x, y, w, h) for y in ys for x in xs]
    return out


def benchmark_entries(name: str, rgb: np.ndarray, sizes: Iterable[tuple[int, int]] = (),
                      stride_frac: float = 0.5) -> BenchmarkEntries:
    """The entries of one benchmark image ``rgb uint8 [H, W, 3]``: 8 whole-image variants, then crops."""
    views = [np.ascontiguousarray(dihedral(rgb, k)) for k in range(8)]
    windows = crop_windows(rgb.shape[1], rgb.shape[0], sizes, stride_frac)
    views += [np.ascontiguousarray(rgb[y : y + h, x : x + w]) for x, y, w, h in windows]
    ph, dh = hashes(views)
    crop = np.arange(len(views)) >= 8
    pixels = np.array([pixel_hash(v) for v in views], dtype=object)
    return BenchmarkEntries(np.full(len(views), name, dtype=object), crop, pixels, ph, dh)


def _pixel_matches(tile_pixels: Sequence[str | None], entries: BenchmarkEntries) -> pd.DataFrame:
    tiles = pd.DataFrame({"pixel": pd.Series(tile_pixels, dtype=object), "tile": np.arange(len(tile_pixels))})
    ents = pd.DataFrame({"pixel": entries.pixel_sha256, "entry": np.arange(len(entries))})
    found = tiles.dropna().merge(ents, on="pixel")
    return found.assign(distance=0.0, exact=True)[["tile", "entry", "distance", "exact"]]


def leak_matches(tile_pixels: Sequence[str | None], tile_phash: np.ndarray, tile_dhash: np.ndarray,
                 entries: BenchmarkEntries, radius_bits: int, dhash_radius_bits: int,
                 searchable: np.ndarray | None = None) -> pd.DataFrame:
    """Tiles that copy a benchmark image: one row per (tile, benchmark image), the strongest match.

    Args:
        tile_pixels: ``N`` pixel sha256 (None allowed); tile_phash, tile_dhash: ``uint64 [N]``;
        entries: from :func:`benchmark_entries`; searchable: ``bool [N]`` rows taking part in near search.

    Returns:
        Columns ``tile`` (row index), ``image`` (benchmark image name), ``kind`` (:data:`KINDS`),
        ``distance`` (pHash bits; 0 for pixel matches), sorted by ``(tile, image)``.
    """
    rows = np.arange(len(tile_phash)) if searchable is None else np.flatnonzero(searchable)
    q = np.stack([np.asarray(tile_phash, np.uint64)[rows], np.asarray(tile_dhash, np.uint64)[rows]], axis=1)
    idx = np.stack([entries.phash, entries.dhash], axis=1)
    t, e, dist = hamming_pairs_between(q, idx, [radius_bits, dhash_radius_bits])
    near = pd.DataFrame({"tile": rows[t], "entry": e, "distance": dist[:, 0].astype(float), "exact": False})
    found = pd.concat([_pixel_matches(tile_pixels, entries), near], ignore_index=True)
    crop = entries.crop[found["entry"].to_numpy(np.int64)]
    kind = np.where(crop, "crop", np.where(found["exact"].to_numpy(bool), "exact", "near"))
    found = found.assign(image=entries.image[found["entry"].to_numpy(np.int64)], kind=kind,
                         strength=pd.Series(kind).map({k: i for i, k in enumerate(KINDS)}).to_numpy())
    found = found.sort_values(["tile", "image", "strength", "distance"], kind="stable")
    best = found.drop_duplicates(["tile", "image"], keep="first")
    return best[["tile", "image", "kind", "distance"]].reset_index(drop=True)
