"""Training data: manifest filter, ranged reads, augmentation, corrupt tiles, the resumable rank sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pretrain import data
from pretrain.data import (
    ResumableSampler,
    TileDataset,
    load_manifest,
    random_resized_crop_box,
)
from rs4m.errors import ConfigError, OutputError, Rs4mError
from rs4m.shards import ShardReader
from tests.pretrain_corpus import build_corpus


@pytest.fixture(scope="module")
def corpus_manifest(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "out")


def test_manifest_has_jpeg_tiles(corpus_manifest):
    df = pd.read_parquet(corpus_manifest)
    assert len(df) >= 15 and set(df["format"]) == {"jpg"}
    assert set(df["scene_path"]) == {"scene0.png", "scene1.png", "scene2.png"}


def test_where_filters_what_is_read(corpus_manifest, monkeypatch):
    full = pd.read_parquet(corpus_manifest)
    wanted = full[full["scene_path"] == "scene1.png"]
    ds = TileDataset(corpus_manifest, where="scene_path == 'scene1.png'")
    assert 0 < len(ds) == len(wanted) < len(full)
    reads: list[tuple[str, int]] = []
    original = ShardReader.read

    def spy(self, shard, offset, length):
        reads.append((shard, int(offset)))
        return original(self, shard, offset, length)

    monkeypatch.setattr(ShardReader, "read", spy)
    for i in range(len(ds)):
        img, index, corrupt = ds[(0, i)]
        assert img.dtype == torch.uint8 and img.shape == (3, 224, 224) and (index, corrupt) == (i, 0)
    assert sorted(reads) == sorted(zip(wanted["shard"], wanted["offset"].astype(int)))


def test_where_on_numeric_column(corpus_manifest):
    full = pd.read_parquet(corpus_manifest)
    threshold = float(full["richness"].median())
    df = load_manifest(corpus_manifest, where=f"richness > {threshold}")
    assert set(df["tile_id"]) == set(full.loc[full["richness"] > threshold, "tile_id"])


@pytest.mark.parametrize("expr", ["no_such_column > 3", "richness >", "source == 'nowhere'"])
def test_bad_where_names_the_columns(corpus_manifest, expr):
    with pytest.raises((ValueError, Rs4mError)) as err:
        load_manifest(corpus_manifest, where=expr)
    assert "richness" in str(err.value) and "licence" in str(err.value)


def test_where_selecting_nothing_is_one_line(corpus_manifest):
    n = len(pd.read_parquet(corpus_manifest))
    with pytest.raises(ConfigError, match=f"selects none of the {n} tiles") as err:
        load_manifest(corpus_manifest, where="richness > 1e9")
    assert "\n" not in str(err.value) and "richness" in str(err.value)


def test_manifest_without_tiles_is_one_line(corpus_manifest, tmp_path):
    empty = tmp_path / "manifest.parquet"
    pq.write_table(pq.read_table(corpus_manifest).slice(0, 0), empty)
    with pytest.raises(OutputError, match="lists no kept tiles") as err:
        load_manifest(empty)
    assert "\n" not in str(err.value)


def test_sample_is_a_pure_function_of_seed_epoch_index(corpus_manifest):
    ds, other_seed = TileDataset(corpus_manifest, seed=1), TileDataset(corpus_manifest, seed=2)
    a, b = ds[(3, 5)][0], ds[(3, 5)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds[(4, 5)][0])
    assert not torch.equal(a, other_seed[(3, 5)][0])
    assert torch.equal(ds[5][0], ds[(0, 5)][0])


def test_loader_output_does_not_depend_on_worker_count(corpus_manifest):
    ds = TileDataset(corpus_manifest, seed=7)

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = ResumableSampler(len(ds), chunk=4, seed=7)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
        it = iter(loader)
        out = [next(it)[0] for _ in range(3)]
        del it
        return out

    for x, y in zip(batches(0), batches(2)):
        assert torch.equal(x, y)


def test_crop_boxes_respect_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = int(rng.integers(64, 600)), int(rng.integers(64, 600))
        top, left, ch, cw = random_resized_crop_box(h, w, rng)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        if 3 / 4 <= w / h <= 4 / 3:  # a fallback crop is the whole image, otherwise scale/ratio hold (±rounding)
            assert 0.2 * h * w * 0.9 <= ch * cw <= h * w
            assert 3 / 4 * 0.9 <= cw / ch <= 4 / 3 * 1.1


def test_augment_crops_resizes_and_flips_half_the_time():
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (256, 256, 3)).copy()
    flips, n = 0, 400
    for i in range(n):
        out = data.augment(ramp, np.random.default_rng(i))
        assert out.shape == (3, 224, 224) and out.dtype == np.uint8
        row = out[0, 112].astype(int)
        assert abs(row[-1] - row[0]) > 40  # a crop of at least 20 % of the area spans a good part of the ramp
        flips += row[-1] < row[0]
    assert 0.4 < flips / n < 0.6


def test_corrupt_tile_is_skipped_and_counted(corpus_manifest, tmp_path):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(corpus_manifest.parent, out)
    ds = TileDataset(out / "manifest.parquet", seed=3)
    bad = 4
    shard = out / "shards" / ds.shard_names[ds.shard_codes[bad]]
    with open(shard, "r+b") as fh:  # overwrite the JPEG data of tile `bad` with garbage
        fh.seek(int(ds.offsets[bad]))
        fh.write(b"\x00" * int(ds.lengths[bad]))
    img, index, corrupt = ds[(0, bad)]
    assert (index, corrupt) == (bad, 1) and img.shape == (3, 224, 224)
    again = TileDataset(out / "manifest.parquet", seed=3)[(0, bad)]
    assert torch.equal(img, again[0])  # the replacement is deterministic
    assert all(ds[(0, i)][2] == 0 for i in range(len(ds)) if i != bad)
    loader = DataLoader(ds, batch_size=len(ds), sampler=ResumableSampler(len(ds), chunk=len(ds)))
    assert int(next(iter(loader))[2].sum()) == 1


def test_too_many_corrupt_tiles_stop_with_a_clear_error(mini_build, monkeypatch):
    out, _ = mini_build
    ds = TileDataset(out / "manifest.parquet")
    monkeypatch.setattr(data, "decode_tile", lambda raw, fmt: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(data.BrokenShards, match="rs4m verify"):
        ds[(0, 0)]


def take(sampler: ResumableSampler, n: int) -> list[tuple[int, int]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("world,chunk,n", [(1, 4, 10), (2, 3, 10), (3, 2, 11), (4, 5, 7)])
def test_sampler_ranks_are_disjoint_and_cover_every_epoch(world, chunk, n):
    epochs = 3
    per_rank = epochs * n // (chunk * world) * chunk  # whole rounds of chunks only
    streams = [take(ResumableSampler(n, chunk, seed=5, rank=r, world_size=world), per_rank) for r in range(world)]
    keys = [k for s in streams for k in s]
    assert len(set(keys)) == len(keys)  # disjoint, and no sample twice within an epoch
    full_epochs = per_rank * world // n
    for e in range(full_epochs):
        assert sorted(i for ep, i in keys if ep == e) == list(range(n))


def test_sampler_orders_differ_between_epochs_and_seeds():
    s = ResumableSampler(50, 50, seed=1)
    first, second = take(s, 100)[:50], take(s, 100)[50:]
    assert [i for _, i in first] != [i for _, i in second]
    assert take(ResumableSampler(50, 50, seed=2), 50) != first


def test_sampler_resumes_mid_epoch():
    full = take(ResumableSampler(13, 3, seed=9, rank=1, world_size=2), 30)
    resumed = take(ResumableSampler(13, 3, seed=9, rank=1, world_size=2, start=18), 21)
    assert resumed == full[9:]
    with pytest.raises(ValueError, match="multiple"):
        ResumableSampler(13, 3, world_size=2, start=4)


def test_ranks_equal_the_single_process_micro_batches():
    n, chunk, world = 17, 2, 2
    single = take(ResumableSampler(n, chunk, seed=4), 8 * chunk)
    ranks = [take(ResumableSampler(n, chunk, seed=4, rank=r, world_size=world), 4 * chunk) for r in range(world)]
    for step in range(4):
        for r in range(world):
            k = step * world + r  # micro-batch k of the single process is rank r's micro-batch `step`
            assert ranks[r][step * chunk:(step + 1) * chunk] == single[k * chunk:(k + 1) * chunk]


def test_npy_tiles_must_be_uint8():
    import io

    for arr, ok in ((np.zeros((4, 4, 3), np.uint8), True), (np.full((4, 4, 3), 300, np.uint16), False)):
        buf = io.BytesIO()
        np.save(buf, arr)
        if ok:
            assert data.decode_tile(buf.getvalue(), "npy").shape == (4, 4, 3)
        else:
            with pytest.raises(ValueError, match="uint16"):
                data.decode_tile(buf.getvalue(), "npy")
