"""Perceptual and exact hashes of RGB tiles: pHash and dHash bit-identical to ``imagehash``, batched.

* :func:`hashes` gives, for a batch of ``uint8 [H, W, 3]`` tiles, the 64-bit pHash and dHash as ``uint64``
  equal to ``int(str(imagehash.phash(img)), 16)`` (and ``dhash``) for ``img = Image.fromarray(rgb)``. Each
  image goes through Pillow's ``L`` conversion once and the LANCZOS resizes imagehash makes (Pillow's own
  arithmetic, as matrix products where a shape repeats: :mod:`rs4m.resample`), so the bytes agree; the DCT of
  the whole batch is one batched scipy call, shared by pHash and the canonical hashes.
* :func:`pixel_hash` is a sha256 of the shape and raw pixels: identical pixels stored in different encodings
  group as exact duplicates.
* Overhead imagery has no "up": :func:`dihedral_hashes` hashes the 8 flips/rotations of a tile and
  :func:`canonical_hash` picks a canonical one; :func:`phash_dihedral` / :func:`dhash_dihedral` estimate the
  hashes of a transformed tile from its stored hashes alone (bit permutations and inversions; see their
  docstrings for how exact that is).

Bit order follows ``imagehash``: the 8×8 bit matrix is read row-major, its first bit is the most significant.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.fftpack
from PIL import Image

from rs4m import resample

HASH_SIZE = 8
PHASH_IMG = 32  # imagehash: hash_size * highfreq_factor
_LANCZOS = Image.Resampling.LANCZOS
#: a new tile shape is probed for the matrix resize (≈ 4 thumbnail sets of work) once it occurs this often
#: in a batch; grid tiling gives one shape, random crops rarely repeat one
PROBE_MIN_TILES = 4
#: a DCT coefficient this close to the median (relative to the largest one) might compare differently in the
#: batched DCT and in imagehash's one-image call; such images are redone one by one.
_TIE_RTOL = 1e-9

#: the 8 elements of the dihedral group D4, applied to an ``[H, W]`` image: transpose first (bit 2), then
#: flip left-right (bit 0), then flip up-down (bit 1).
DIHEDRAL_NAMES = ("identity", "flip_lr", "flip_ud", "rot180", "transpose", "rot90_cw", "rot90_ccw",
                  "anti_transpose")


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """``bool [B, 64]`` (row-major 8×8, first bit most significant) → ``uint64 [B]``."""
    packed = np.packbits(np.asarray(bits, dtype=bool).reshape(len(bits), 64), axis=1)
    return packed.view(">u8").ravel().astype(np.uint64)


def uint64_to_bits(values: np.ndarray) -> np.ndarray:
    """``uint64 [B]`` → ``bool [B, 64]``, the inverse of :func:`bits_to_uint64`."""
    be = np.asarray(values, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(be, axis=1).astype(bool)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {rgb.dtype} {rgb.shape}")


def _grey(rgb: np.ndarray) -> Image.Image:
    """Pillow's ``L`` conversion of one tile, imagehash's first step."""
    _check_rgb(rgb)
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").convert("L")


def _thumbnails(rgbs: Sequence[np.ndarray], vertical: bool = False,
                greys: Sequence[Image.Image] | None = None) -> tuple[np.ndarray, ...]:
    """Pillow L + LANCZOS thumbnails, exactly as imagehash makes them: ``[B, 32, 32]`` and ``[B, 8, 9]``
    (and with ``vertical`` the ``[B, 9, 8]`` one that differences along columns need).

    One ``L`` conversion per tile feeds all its thumbnails. Tiles of a shape seen before, or occurring
    :data:`PROBE_MIN_TILES` times in the batch, are resized by :mod:`rs4m.resample`, Pillow's arithmetic as
    matrix products (≈ 3× faster, the same bytes); a rarer new shape, whose probe would cost more than it saves,
    or one whose Pillow pass order the probe cannot reproduce, goes through Pillow itself.
    """
    sizes = ((PHASH_IMG, PHASH_IMG), (HASH_SIZE + 1, HASH_SIZE)) + (((HASH_SIZE, HASH_SIZE + 1),) if vertical else ())
    out = [np.empty((len(rgbs), h, w), np.uint8) for w, h in sizes]
    shapes = [rgb.shape[:2] for rgb in rgbs]
    counts = Counter(shapes)
    for i, rgb in enumerate(rgbs):
        gray = _grey(rgb) if greys is None else greys[i]
        shape = shapes[i]
        known = resample.is_probed(shape, sizes)
        orders = resample.pass_orders(shape, sizes) if known or counts[shape] >= PROBE_MIN_TILES else None
        if orders is None:
            thumbs = [np.asarray(gray.resize(size, _LANCZOS)) for size in sizes]
        else:
            thumbs = resample.resize_all(np.asarray(gray), sizes, orders)
        for dest, thumb in zip(out, thumbs, strict=True):
            dest[i] = thumb
    return tuple(out)


def _phash_bits_scipy(small: np.ndarray) -> np.ndarray:
    """imagehash's own computation for one ``[32, 32]`` thumbnail: ``bool [64]``."""
    dct = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return (low > np.median(low)).ravel()


def _low_dct(small: np.ndarray) -> np.ndarray:
    """The 8×8 lowest DCT-II coefficients of ``uint8 [B, 32, 32]`` thumbnails, flattened: ``float64 [B, 64]``.

    imagehash's transform (scipy's FFT-based DCT, rows then columns), batched. Not a BLAS product: on a
    machine where every core is busy, OpenBLAS's threads spin after each call and slow the per-tile work that
    follows several-fold (measured: richness 10 → 80 ms per tile on 2 loaded cores).
    """
    dct = scipy.fftpack.dct(scipy.fftpack.dct(small.astype(np.float64), axis=1), axis=2)
    return dct[:, :HASH_SIZE, :HASH_SIZE].reshape(len(small), HASH_SIZE * HASH_SIZE)


def phash_from_thumbnails(small: np.ndarray, coef: np.ndarray | None = None) -> np.ndarray:
    """pHash of ``uint8 [B, 32, 32]`` grey thumbnails → ``uint64 [B]``: one batched DCT.

    Where a coefficient lies within rounding distance of the median, the image is redone alone with scipy
    exactly as imagehash calls it, so the result stays bit-identical even if the batched transform rounded
    differently (flat tiles are the usual case). ``coef`` may pass in
    ``_low_dct(small)`` where the caller has it already.
    """
    coef = _low_dct(small) if coef is None else coef
    med = np.median(coef, axis=1, keepdims=True)
    bits = coef > med
    tol = _TIE_RTOL * (np.abs(coef).max(axis=1, keepdims=True) + 1.0)
    for i in np.flatnonzero((np.abs(coef - med) <= tol).any(axis=1)):
        bits[i] = _phash_bits_scipy(small[i])
    return bits_to_uint64(bits)


def dhash_from_thumbnails(diff: np.ndarray) -> np.ndarray:
    """dHash of ``uint8 [B, 8, 9]`` grey thumbnails → ``uint64 [B]`` (right pixel brighter than left)."""
    bits = diff[:, :, 1:] > diff[:, :, :-1]
    return bits_to_uint64(bits.reshape(len(diff), 64))


def hashes(rgbs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """pHash and dHash of a batch of tiles.

    Args:
        rgbs: ``B`` arrays ``uint8 [H, W, 3]``; sizes may differ.

    Returns:
        ``(phash uint64 [B], dhash uint64 [B])``, each equal to ``int(str(imagehash.phash(img)), 16)``
        (resp. ``dhash``) for ``img = Image.fromarray(rgb)``.
    """
    if len(rgbs) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    small, diff = _thumbnails(rgbs)
    return phash_from_thumbnails(small), dhash_from_thumbnails(diff)


def hashes_with_canonical(rgbs: Sequence[np.ndarray],
                          greys: Sequence[Image.Image] | None = None) -> tuple[np.ndarray, ...]:
    """:func:`hashes` plus a flip/rotation-invariant hash pair, for dihedral dedup.

    The canonical pair of a tile is the (pHash, dHash) of the one of its 8 flips/rotations whose pHash is
    smallest (then whose dHash is). It is computed from the thumbnails, not from 8 transformed images: a flip
    negates the odd-frequency DCT coefficients along its axis and a transpose transposes them, and the dHash
    of a transposed tile differences the columns of a 9-row thumbnail (one extra resize). The choice is
    decided by the leading bits, i.e. the low, stable frequencies, so a recompressed or resized flipped copy
    usually picks the same variant and lands within a few bits.

    ``greys``: the tiles' Pillow ``L`` images (``Image.fromarray(rgb).convert("L")``, imagehash's first step)
    where the caller has them.

    Returns:
        ``(phash, dhash, phash_canonical, dhash_canonical)``, each ``uint64 [B]``.
    """
    if len(rgbs) == 0:
        return tuple(np.zeros(0, np.uint64) for _ in range(4))
    if greys is not None and len(greys) != len(rgbs):
        raise ValueError(f"{len(greys)} grey images for {len(rgbs)} tiles")
    small, diff, diff_v = _thumbnails(rgbs, vertical=True, greys=greys)
    flat_coef = _low_dct(small)
    ph, dh = phash_from_thumbnails(small, flat_coef), dhash_from_thumbnails(diff)
    coef = flat_coef.reshape(-1, HASH_SIZE, HASH_SIZE)
    odd = np.where(np.arange(HASH_SIZE) % 2 == 1, -1.0, 1.0)
    var_p = np.empty((len(rgbs), 8), np.uint64)
    var_d = np.empty((len(rgbs), 8), np.uint64)
    for k in range(8):
        c = coef.swapaxes(1, 2) if k & 4 else coef
        c = c * (odd[None, None, :] if k & 1 else 1.0) * (odd[None, :, None] if k & 2 else 1.0)
        flat = c.reshape(len(c), -1)
        var_p[:, k] = bits_to_uint64(flat > np.median(flat, axis=1, keepdims=True))
        var_d[:, k] = dhash_from_thumbnails(np.ascontiguousarray(dihedral_thumb(diff, diff_v, k)))
    best = _argmin_pair(var_p, var_d)
    rows = np.arange(len(rgbs))
    return ph, dh, var_p[rows, best], var_d[rows, best]


def _argmin_pair(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per row of ``[B, 8]``, the column with the smallest ``p``, ties broken by the smallest ``d``."""
    tied = p == p.min(axis=1, keepdims=True)
    d_masked = np.where(tied, d, np.uint64(0xFFFFFFFFFFFFFFFF))
    return np.argmin(d_masked, axis=1)


def dihedral_thumb(diff: np.ndarray, diff_v: np.ndarray, k: int) -> np.ndarray:
    """The ``[B, 8, 9]`` dHash thumbnail of ``dihedral(image, k)`` from the image's ``[B, 8, 9]`` and
    ``[B, 9, 8]`` thumbnails (Pillow's resize is mirror-symmetric, so flips commute with it)."""
    base = diff_v.swapaxes(1, 2) if k & 4 else diff
    if k & 1:
        base = base[:, :, ::-1]
    if k & 2:
        base = base[:, ::-1]
    return base


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 hex of ``b"<H>x<W>x<C>:<dtype>:"`` followed by the C-ordered pixel bytes of ``rgb [H, W, C]``.

    Equal for equal pixels whatever the file encoding was (a PNG and a lossless WebP of one tile agree).
    """
    arr = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{'x'.join(map(str, arr.shape))}:{arr.dtype.str}:".encode())
    h.update(arr.data.cast("B"))
    return h.hexdigest()


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7, see :data:`DIHEDRAL_NAMES`) of the dihedral group applied to ``[H, W, ...]``."""
    if k & 4:
        image = image.swapaxes(0, 1)
    if k & 1:
        image = image[:, ::-1]
    if k & 2:
        image = image[::-1]
    return image


def dihedral_hash_pairs(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pHash and dHash of the 8 flips/rotations of ``rgb [H, W, 3]``: ``(uint64 [8], uint64 [8])``,
    index ``k`` being the hash of ``dihedral(rgb, k)`` (exact, from the transformed pixels)."""
    return hashes([np.ascontiguousarray(dihedral(rgb, k)) for k in range(8)])


def dihedral_hashes(rgb: np.ndarray) -> np.ndarray:
    """pHash of the 8 flips/rotations of ``rgb [H, W, 3]``: ``uint64 [8]`` (index k: ``dihedral(rgb, k)``)."""
    return dihedral_hash_pairs(rgb)[0]


def canonical_hash(variants: np.ndarray) -> np.ndarray:
    """The smallest of the 8 dihedral hashes ``uint64 [..., 8]`` → ``uint64 [...]``.

    Equal for a tile and any flipped/rotated copy of it with the same pixels, so it suits exact search
    (a dict or a sort); for near search use the 8 variants themselves, since a few changed bits can change
    which variant is smallest.
    """
    return np.asarray(variants, dtype=np.uint64).min(axis=-1)


def _bit_matrix(values: np.ndarray) -> np.ndarray:
    return uint64_to_bits(values).reshape(-1, HASH_SIZE, HASH_SIZE)


def phash_dihedral(phash: np.ndarray) -> np.ndarray:
    """Estimate the pHash of the 8 flips/rotations of tiles from their pHash alone: ``uint64 [N] → [N, 8]``.

    Transposing an image transposes its DCT, so variant 4 is exact up to resize rounding. A flip negates the
    coefficients of odd frequency along its axis, which inverts their bits only if the median of the 64
    coefficients stays near zero; on real tiles the estimate of a flip is off by ~4 bits on average (a few
    tiles by much more), so compare flipped variants with a wider radius than plain ones.
    """
    bits = _bit_matrix(phash)
    odd = (np.arange(HASH_SIZE) % 2).astype(bool)
    out = np.empty((len(bits), 8), np.uint64)
    for k in range(8):
        b = bits.swapaxes(1, 2) if k & 4 else bits.copy()
        if k & 1:
            b = b ^ odd[None, None, :]
        if k & 2:
            b = b ^ odd[None, :, None]
        out[:, k] = bits_to_uint64(b.reshape(len(b), 64))
    return out


def dhash_dihedral(dhash: np.ndarray) -> np.ndarray:
    """Estimate the dHash of the 4 flips (k = 0..3) of tiles from their dHash: ``uint64 [N] → [N, 4]``.

    dHash compares horizontal neighbours, so an up-down flip reverses the rows and a left-right flip reverses
    each row and inverts it (wrong where two neighbours are equal). Transposed variants (k ≥ 4) cannot be
    derived: they would need vertical differences, which the hash does not hold.
    """
    bits = _bit_matrix(dhash)
    out = np.empty((len(bits), 4), np.uint64)
    for k in range(4):
        b = ~bits[:, :, ::-1] if k & 1 else bits
        b = b[:, ::-1] if k & 2 else b
        out[:, k] = bits_to_uint64(np.ascontiguousarray(b).reshape(len(b), 64))
    return out
