"""Manifest-backed training data: the filtered tile table, a map-style dataset that reads each tile with one
ranged read from its shard, the SelectiveMAE augmentation, and a resumable sampler shared out over ranks.

Determinism. Every random choice is a pure function of its coordinates, never of the process that makes it:

- the order of epoch ``e`` is ``default_rng((seed, e)).permutation(N)``;
- the crop and flip of a sample are drawn from ``default_rng((seed, e, index))``.

So a sample looks the same whichever DataLoader worker, rank or restart produces it, and a run resumed from a
sample count sees exactly the samples and pixels the uninterrupted run would have seen.

Keys. The sampler yields ``(epoch, index)`` pairs; the dataset's ``__getitem__`` takes such a pair (or a bare
index, meaning epoch 0) and returns ``(image uint8 [3, S, S], index, corrupt)`` where ``corrupt`` counts the
unreadable tiles that were skipped to produce this sample (0 almost always); the training loop sums it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from rs4m import codec
from rs4m.errors import ConfigError, OutputError, Rs4mError
from rs4m.filters import filter_frame, referenced_columns
from rs4m.manifest import MANIFEST_SCHEMA, read_table
from rs4m.shards import ShardReader

#: the columns the loader itself needs; ``where`` may use any other manifest column but ``geometry``
READ_COLUMNS = ["tile_id", "shard", "offset", "length", "format"]
#: consecutive unreadable tiles tolerated before a sample gives up (a sign the shards are broken, not a few tiles)
MAX_CORRUPT_RETRIES = 16


class BrokenShards(OutputError):
    """Too many unreadable tiles in a row: the shards, not a few tiles, are broken."""

    @classmethod
    def one_line(cls, err: Exception) -> BrokenShards:
        """The same error with one line: a DataLoader worker re-raises it with the worker's traceback added."""
        last = [line for line in str(err).splitlines() if line.strip()][-1]
        return cls(last.split(f"{cls.__name__}: ", 1)[-1])


# ----------------------------------------------------------------------------------------------- manifest


def load_manifest(path: Path, where: str | None = None) -> pd.DataFrame:
    """The manifest's tiles as a DataFrame of ``READ_COLUMNS``, optionally filtered by ``where``.

    ``where`` is a filter in rs4m's filter language (:mod:`rs4m.filters`) over the manifest columns, e.g.
    ``"source == 'folder/images' and richness > 40"``. A bad expression, or one that keeps no tile, raises
    :class:`ConfigError` naming the columns it may use; a manifest without tiles an ``OutputError`` (one line
    each). Only the columns the expression names are read.
    """
    if not Path(path).is_file():
        raise OutputError(f"{path} does not exist; give the manifest.parquet of an rs4m build")
    schema_names = [n for n in pq.read_schema(path).names if n in MANIFEST_SCHEMA.names and n != "geometry"]
    usable = ", ".join(schema_names)
    try:
        extra = referenced_columns(where, schema_names) if where else []
        columns = READ_COLUMNS + [c for c in extra if c not in READ_COLUMNS]
        df = read_table(Path(path), MANIFEST_SCHEMA, columns=columns).to_pandas()
        if where:
            df = filter_frame(df, where).reset_index(drop=True)
    except ConfigError as err:
        raise ConfigError(f"{err}. Columns: {usable}") from None
    if len(df) == 0:
        raise _no_tiles(Path(path), where, usable)
    return df[READ_COLUMNS].reset_index(drop=True)


def _no_tiles(path: Path, where: str | None, usable: str) -> Rs4mError:
    """The one-line error of a training set with no tile: an empty manifest, or a filter that keeps none."""
    total = pq.read_metadata(path).num_rows
    if total == 0:
        return OutputError(f"{path} lists no kept tiles (every tile was filtered, a duplicate or leaked): see "
                           "`rs4m stats` on the build")
    return ConfigError(f"--where {where!r} selects none of the {total} tiles of {path}; columns: {usable}")


# ----------------------------------------------------------------------------------------------- transform


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float] = (0.2, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect ``ratio``, as torchvision's
    ``RandomResizedCrop.get_params``: ten tries, then the largest centred crop of clamped aspect."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment(rgb: np.ndarray, rng: np.random.Generator, size: int = 224, scale: tuple[float, float] = (0.2, 1.0),
            ) -> np.ndarray:
    """RandomResizedCrop(size, scale, ratio 3/4–4/3, bicubic) then a horizontal flip with probability ½.

    ``rgb``: uint8 [H, W, 3] → uint8 [3, size, size] (contiguous, channels first).
    """
    top, left, h, w = random_resized_crop_box(rgb.shape[0], rgb.shape[1], rng, scale)
    img = Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    out = np.asarray(img)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def decode_tile(data: bytes, fmt: str) -> np.ndarray:
    """Stored tile bytes → RGB uint8 [H, W, 3] (jpg through simplejpeg, npy through numpy, the rest Pillow)."""
    if fmt == "npy":
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] < 3:  # a cast would wrap uint16 silently
            raise ValueError(f"npy tile is {arr.dtype} {arr.shape}, expected uint8 [H, W, >= 3]")
        return np.ascontiguousarray(arr[..., :3])
    rgb = codec.decode(data, fmt)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"decoded to {rgb.dtype} {rgb.shape}, expected uint8 [H, W, 3]")
    return rgb


# ----------------------------------------------------------------------------------------------- dataset


class TileDataset(Dataset):
    """Tiles of a manifest, read by (shard, offset, length), decoded and augmented.

    ``dataset[(epoch, index)]`` → ``(uint8 [3, size, size], index, corrupt)``. A tile that cannot be read or
    decoded is replaced by another one drawn from the same per-sample RNG (so the replacement is deterministic)
    and counted in ``corrupt``. The shard reader opens lazily in each DataLoader worker.
    """

    def __init__(self, manifest: Path, where: str | None = None, shards_dir: Path | None = None,
                 seed: int = 0, size: int = 224, scale: tuple[float, float] = (0.2, 1.0)) -> None:
        manifest = Path(manifest)
        df = load_manifest(manifest, where)
        self.shards_dir = Path(shards_dir) if shards_dir is not None else manifest.parent / "shards"
        # Numeric arrays and small category tables: cheap to share with forked workers (no per-row objects).
        shard = pd.Categorical(df["shard"])
        fmt = pd.Categorical(df["format"])
        self.shard_names, self.shard_codes = list(shard.categories), shard.codes.astype(np.int32)
        self.format_names, self.format_codes = list(fmt.categories), fmt.codes.astype(np.int32)
        self.offsets = df["offset"].to_numpy(np.int64)
        self.lengths = df["length"].to_numpy(np.int64)
        self.seed, self.size, self.scale = seed, size, scale
        self._reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, index: int) -> np.ndarray:
        """Decoded RGB uint8 [H, W, 3] of tile ``index`` (raises on unreadable bytes)."""
        if self._reader is None:
            self._reader = ShardReader(self.shards_dir)
        data = self._reader.read(self.shard_names[self.shard_codes[index]], self.offsets[index], self.lengths[index])
        return decode_tile(data, self.format_names[self.format_codes[index]])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        current, corrupt = int(index), 0
        while True:
            try:
                rgb = self.read(current)
                break
            except (OSError, EOFError, ValueError, RuntimeError):  # simplejpeg / Pillow / numpy decode errors
                corrupt += 1
                if corrupt > MAX_CORRUPT_RETRIES:
                    raise BrokenShards(f"{corrupt} unreadable tiles in a row from index {index}: the shards "
                                       f"under {self.shards_dir} look broken; run `rs4m verify`") from None
                current = int(rng.integers(len(self)))
        return torch.from_numpy(augment(rgb, rng, self.size, self.scale)), int(index), corrupt

    def __getstate__(self) -> dict:
        # Open file descriptors never travel to a worker; each worker opens its own reader.
        return {**self.__dict__, "_reader": None}


# ----------------------------------------------------------------------------------------------- sampler


class ResumableSampler(Sampler):
    """An endless, deterministic stream of ``(epoch, index)`` keys, shared out over ranks; resumable.

    The global stream is the concatenation of epoch permutations ``default_rng((seed, e)).permutation(N)``
    for e = 0, 1, 2, .... It is cut into chunks of ``chunk`` keys (the per-rank micro-batch) and rank r takes
    chunks r, r + W, r + 2W, ... (a strided slice of chunks). Hence:

    - ranks are disjoint, and together they cover every epoch exactly once: nothing is padded or dropped,
      because an epoch's tail simply continues into the next epoch's head (batches may straddle epochs);
    - one optimiser step of W ranks × A accumulation micro-batches consumes global chunks
      [s·W·A, (s+1)·W·A): the same keys as one process with A' = W·A micro-batches of the same size, micro-batch
      k' = a·W + r of the single process being rank r's a-th micro-batch (the single-process equivalent);
    - ``start`` (samples consumed by all ranks together, a multiple of ``chunk · W``) resumes mid-epoch.
    """

    def __init__(self, num_samples: int, chunk: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        if num_samples < 1 or chunk < 1:
            raise ValueError(f"need num_samples ≥ 1 and chunk ≥ 1, got {num_samples} and {chunk}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if start % (chunk * world_size):
            raise ValueError(f"start {start} is not a multiple of chunk × world size = {chunk * world_size}")
        self.num_samples, self.chunk, self.seed = num_samples, chunk, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order [N] of ``epoch`` (cached for the current epoch)."""
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def key(self, position: int) -> tuple[int, int]:
        """The ``(epoch, index)`` at global stream ``position``."""
        epoch, offset = divmod(position, self.num_samples)
        return epoch, int(self.permutation(epoch)[offset])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        chunk_id = self.start // self.chunk + self.rank
        while True:
            base = chunk_id * self.chunk
            for position in range(base, base + self.chunk):
                yield self.key(position)
            chunk_id += self.world_size


class EpochSampler(Sampler):
    """This rank's ``(epoch, index)`` keys of one epoch whose index list comes from outside (InfoBatch's draw).

    ``set_epoch(epoch, indices, start_step)`` gives the list (a whole number of global batches) before each pass
    of the DataLoader; one pass yields that epoch only, so a loader never prefetches into an epoch not drawn yet.
    The list is cut into chunks of ``chunk`` keys (the per-rank micro-batch) laid out as ``ResumableSampler``'s:
    optimiser step s consumes global chunks [s·W·A, (s+1)·W·A) and rank r takes chunks r, r + W, ..., so W ranks
    × A micro-batches see the same keys as one process with W·A micro-batches. ``start_step`` resumes mid-epoch.
    """

    def __init__(self, chunk: int, rank: int = 0, world_size: int = 1, accum_steps: int = 1) -> None:
        if chunk < 1 or accum_steps < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need chunk ≥ 1, accum_steps ≥ 1 and 0 ≤ rank < world size, got {chunk}, "
                             f"{accum_steps}, {rank} and {world_size}")
        self.chunk, self.rank, self.world_size, self.accum_steps = chunk, rank, world_size, accum_steps
        self.epoch, self.indices, self.start_step = 0, np.empty(0, dtype=np.int64), 0

    @property
    def step_size(self) -> int:
        """Keys of one optimiser step over all ranks."""
        return self.chunk * self.world_size * self.accum_steps

    def set_epoch(self, epoch: int, indices: np.ndarray, start_step: int = 0) -> None:
        if len(indices) % self.step_size or not 0 <= start_step * self.step_size <= len(indices):
            raise ValueError(f"{len(indices)} indices from step {start_step} are not whole steps of "
                             f"{self.step_size} keys")
        self.epoch, self.indices, self.start_step = epoch, np.asarray(indices, dtype=np.int64), start_step

    def __len__(self) -> int:
        return (len(self.indices) // self.step_size - self.start_step) * self.accum_steps * self.chunk

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, indices, chunk = self.epoch, self.indices, self.chunk  # a later set_epoch leaves this pass alone
        first = self.start_step * self.world_size * self.accum_steps + self.rank
        for chunk_id in range(first, len(indices) // chunk, self.world_size):
            for index in indices[chunk_id * chunk:(chunk_id + 1) * chunk]:
                yield epoch, int(index)
