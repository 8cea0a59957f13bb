"""InfoBatch pruning: each epoch's draw and weights, the sampler and stream that feed it to the trainer, the flags,
and a pruned run that is killed and resumed equal to the uninterrupted one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pretrain import checkpoint as ckpt
from pretrain.data import EpochSampler
from pretrain.engine import TrainConfig, lr_at, resolve, resume_differences
from pretrain.infobatch import InfoBatch, InfoBatchStream, LossBuffer
from pretrain.train import train
from rs4m.errors import ConfigError
from tests.pretrain_corpus import build_corpus, kill_at_first_checkpoint, no_host_syncs, run_pretrain

ROOT = Path(__file__).resolve().parents[1]


def seeded(n: int = 1000, epochs: float = 8, **kw) -> InfoBatch:
    pruner = InfoBatch(n, epochs, **kw)
    pruner.fold(np.arange(n, dtype=np.float32))  # loss i for sample i; mean 499.5
    return pruner


# ----------------------------------------------------------------------------------------------- the draw


def test_first_epoch_without_losses_keeps_everything():
    indices, weights = InfoBatch(100, 8).draw(0)
    assert sorted(indices.tolist()) == list(range(100)) and np.array_equal(weights, np.ones(100))


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_prunes_ratio_of_the_below_mean_samples_and_up_weights_the_rest(ratio):
    indices, weights = seeded(ratio=ratio).draw(1)
    kept = set(indices.tolist())
    assert len(kept) == len(indices)  # no sample twice
    assert set(range(500, 1000)) <= kept  # at or above the mean: always kept
    dropped = 500 - len(kept & set(range(500)))
    sd = (500 * ratio * (1 - ratio)) ** 0.5
    assert abs(dropped - 500 * ratio) < 4 * sd  # binomial(500, ratio)
    assert len(indices) == 1000 - dropped
    assert np.allclose(weights[:500], 1 / (1 - ratio)) and np.array_equal(weights[500:], np.ones(500))


def test_unseen_samples_are_always_kept_and_not_in_the_mean():
    pruner = InfoBatch(10, 8)
    pruner.fold(np.array([0, 1, 2, 3, np.nan, np.nan, np.nan, np.nan, np.nan, 100], dtype=np.float32))
    assert np.array_equal(pruner.scores[4:9], np.full(5, np.nan), equal_nan=True)
    for epoch in range(1, 6):
        indices, weights = pruner.draw(epoch)
        assert {4, 5, 6, 7, 8, 9} <= set(indices.tolist())  # unseen, or above the mean 106/5
        assert np.array_equal(weights, [2, 2, 2, 2, 1, 1, 1, 1, 1, 1])


def test_weighted_epochs_are_unbiased():
    pruner = seeded(ratio=0.3)
    total = np.zeros(1000)
    for epoch in range(6):  # 6 < 0.875 · 8: pruning on
        indices, weights = pruner.draw(epoch)
        total[indices] += weights[indices]
    assert total[:500].mean() == pytest.approx(6.0, rel=0.03) and np.array_equal(total[500:], np.full(500, 6.0))


def test_pruning_stops_at_delta_of_the_epochs():
    pruner = seeded(epochs=8)
    assert pruner.pruning_active(6) and not pruner.pruning_active(7)  # 0.875 · 8 = 7
    indices, weights = pruner.draw(7)
    assert len(indices) == 1000 and np.array_equal(weights, np.ones(1000))
    fractional = seeded(epochs=3, delta=0.5)  # stops at epoch 1.5: epochs 0 and 1 prune
    assert fractional.pruning_active(1) and not fractional.pruning_active(2)
    assert not seeded(ratio=0.0).pruning_active(0)


def test_draws_are_deterministic_and_differ_by_epoch_and_seed():
    a, b = seeded(seed=3), seeded(seed=3)
    assert np.array_equal(a.draw(2)[0], b.draw(2)[0])
    assert not np.array_equal(a.draw(2)[0], a.draw(3)[0])
    assert not np.array_equal(a.draw(2)[0], seeded(seed=4).draw(2)[0])


def test_fold_replaces_the_scores_of_the_samples_seen_only():
    pruner = seeded(n=4)
    pruner.fold(np.array([np.nan, 7.0, np.nan, 0.5], dtype=np.float32))
    assert pruner.scores.tolist() == [0.0, 7.0, 2.0, 0.5]


def test_state_roundtrip_and_size_check():
    pruner = seeded()
    other = InfoBatch(1000, 8)
    other.load_state_dict(pruner.state_dict())
    assert np.array_equal(other.draw(1)[0], pruner.draw(1)[0])
    with pytest.raises(ValueError, match="1000 samples"):
        InfoBatch(10, 8).load_state_dict(pruner.state_dict())


def test_loss_buffer_keeps_the_latest_loss_and_marks_the_unseen():
    buffer = LossBuffer(5, torch.device("cpu"))
    buffer.record(torch.tensor([3, 1]), torch.tensor([0.5, 2.0]))
    buffer.record(torch.tensor([3]), torch.tensor([0.25]))
    assert np.array_equal(buffer.gather(1), [np.nan, 2.0, np.nan, 0.25, np.nan], equal_nan=True)
    again = LossBuffer(5, torch.device("cpu"))
    again.load(buffer.gather(1))
    assert torch.equal(again.values, buffer.values)


# ----------------------------------------------------------------------------------------------- the sampler


def take_epoch(sampler: EpochSampler) -> list[tuple[int, int]]:
    return list(iter(sampler))


def test_epoch_sampler_shares_whole_steps_out_over_ranks():
    indices = np.random.default_rng(0).permutation(40)[:36]  # 36 = 3 steps of 2 ranks × 2 micro × 3
    ranks = []
    for rank in range(2):
        sampler = EpochSampler(3, rank, 2, accum_steps=2)
        sampler.set_epoch(5, indices)
        ranks.append(take_epoch(sampler))
        assert len(sampler) == len(ranks[-1]) == 18
    assert {e for keys in ranks for e, _ in keys} == {5}
    assert sorted(i for keys in ranks for _, i in keys) == sorted(indices.tolist())
    single = EpochSampler(3, 0, 1, accum_steps=4)  # one process, W·A = 4 micro-batches: the same keys per step
    single.set_epoch(5, indices)
    keys = take_epoch(single)
    for step in range(3):
        for micro in range(2):
            for rank in range(2):
                chunk = (step * 2 + micro) * 3
                assert ranks[rank][chunk:chunk + 3] == keys[((step * 2 + micro) * 2 + rank) * 3:][:3]


def test_epoch_sampler_resumes_at_a_step_and_refuses_partial_steps():
    indices = np.arange(24)
    full, resumed = EpochSampler(4, 1, 2), EpochSampler(4, 1, 2)
    full.set_epoch(0, indices)
    resumed.set_epoch(0, indices, start_step=2)
    assert take_epoch(resumed) == take_epoch(full)[8:]
    with pytest.raises(ValueError, match="whole steps"):
        full.set_epoch(0, np.arange(10))


# ----------------------------------------------------------------------------------------------- the stream


class Keys(Dataset):
    """A dataset whose sample is its own key: (tensor [epoch, index], index, 0 corrupt)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        epoch, index = key
        return torch.tensor([epoch, index]), index, 0


def stream_of(n: int, epochs: float, workers: int, batch: int = 4, start: bool = True, delta: float = 0.875,
              ) -> InfoBatchStream:
    sampler = EpochSampler(batch)
    loader = DataLoader(Keys(n), batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0)
    stream = InfoBatchStream(loader, sampler, InfoBatch(n, epochs, delta=delta, seed=1), torch.device("cpu"), batch, 1)
    if start:
        stream.start()
    return stream


def drive(stream: InfoBatchStream, steps: int | None = None) -> list[list[int]]:
    """Run ``steps`` steps (or to the end), recording loss = index; the keys of each step."""
    out = []
    while not stream.finished and (steps is None or len(out) < steps):
        keys, indices, _ = next(stream)
        stream.record(indices, indices.float())
        out.append(keys.flatten().tolist())
        stream.step_done()
    return out


def epochs_of(steps: list[list[int]], count: int) -> list[list[int]]:
    """The indices each epoch trained on, from ``drive``'s flattened [epoch, index] keys."""
    return [[s[i + 1] for s in steps for i in range(0, len(s), 2) if s[i] == e] for e in range(count)]


def test_stream_prunes_low_loss_samples_after_the_first_epoch():
    stream = stream_of(40, epochs=4, workers=0, batch=1, delta=0.75)
    epochs = epochs_of(drive(stream), 4)
    assert sorted(epochs[0]) == list(range(40))  # nothing recorded yet: everything
    for epoch in epochs[1:3]:  # 1, 2 < 0.75 · 4: pruned; the below-mean (index < 19.5) about halved
        assert sorted(set(epoch)) == sorted(epoch) and set(range(20, 40)) <= set(epoch)
        assert 20 + 3 <= len(epoch) <= 40 - 3
    assert sorted(epochs[3]) == list(range(40))  # 3 = 0.75 · 4: the full set again
    assert stream.finished and stream.progress() == 1.0


def test_stream_uses_whole_batches_of_each_epoch():
    steps = drive(stream_of(42, epochs=4, workers=0, batch=4))
    epochs = epochs_of(steps, 4)
    assert len(epochs[0]) == 40 and all(len(e) % 4 == 0 for e in epochs)  # 42 % 4 left out of epoch 0
    assert len(steps) == sum(len(e) for e in epochs) // 4 < 40


@pytest.mark.parametrize("workers", [0, 1])
def test_stream_resumed_from_its_state_draws_the_same_keys(workers):
    reference = drive(stream_of(40, epochs=4, workers=0))
    for cut in (3, 10, 17):  # mid-epoch 0, the end of epoch 0, inside epoch 1
        first = stream_of(40, epochs=4, workers=workers)
        head = drive(first, cut)
        state = first.state_dict()
        second = stream_of(40, epochs=4, workers=workers, start=False)
        second.start(state)
        assert head + drive(second) == reference


def test_stream_ends_inside_a_fractional_last_epoch():
    steps = drive(stream_of(40, epochs=0.5, workers=0))
    assert len(steps) == 5  # half of epoch 0's 10 steps


# ----------------------------------------------------------------------------------------------- flags


def test_flags_reach_both_command_lines_and_are_checked():
    from pretrain.__main__ import parse_args
    from rs4m.cli.pretrain import pretrain

    flags = ["--manifest", "m.parquet", "--run", "r", "--epochs", "4", "--infobatch", "--infobatch-ratio", "0.3",
             "--infobatch-delta", "0.5"]
    want = TrainConfig(manifest="m.parquet", run="r", epochs=4, infobatch=True, infobatch_ratio=0.3,
                       infobatch_delta=0.5)
    assert parse_args(flags) == want
    params = pretrain.make_context("pretrain", flags).params
    assert TrainConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in params.items()}) == want
    off = ["--manifest", "m.parquet", "--run", "r", "--epochs", "4", "--infobatch", "--no-infobatch"]
    assert not parse_args(off).infobatch and not pretrain.make_context("pretrain", off).params["infobatch"]
    assert not TrainConfig(manifest="m", run="r").infobatch  # off by default
    for kw, match in (({"infobatch_ratio": 0.3}, "with --infobatch only"), ({"infobatch_delta": 0.5}, "only"),
                      ({"infobatch": True, "infobatch_ratio": 1.0}, "ratio must lie"),
                      ({"infobatch": True, "infobatch_delta": 1.5}, "delta must lie")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(manifest="m", run="r", steps=1, **kw).check()
    with pytest.raises(ConfigError, match="larger than the 3 tiles"):
        resolve(TrainConfig(manifest="m", run="r", steps=1, batch_size=4, infobatch=True), 3, 1, "cpu")


def test_run_length_is_in_epochs():
    cfg = TrainConfig(manifest="m", run="r", steps=10, batch_size=4, infobatch=True)
    assert resolve(cfg, 20, 1, "cpu")["infobatch_epochs"] == 2.0  # 10 steps × 4 / 20 tiles
    by_epochs = resolve(TrainConfig(manifest="m", run="r", epochs=1.5, batch_size=4, infobatch=True), 19, 1, "cpu")
    assert (by_epochs["infobatch_epochs"], by_epochs["total_steps"]) == (1.5, 8)  # ceil(1.5 · 19 / 4): at most
    assert "infobatch_epochs" not in resolve(TrainConfig(manifest="m", run="r", steps=10), 20, 1, "cpu")


def test_a_checkpoint_older_than_the_flags_resumes_with_them_off():
    cfg = TrainConfig(manifest="m", run="r", steps=10, batch_size=4)
    settings = resolve(cfg, 20, 1, "cpu")
    older = {k: v for k, v in settings.items() if not k.startswith("infobatch")}
    assert resume_differences(older, settings) == []
    turned_on = resolve(TrainConfig(manifest="m", run="r", steps=10, batch_size=4, infobatch=True), 20, 1, "cpu")
    assert any(line.startswith("infobatch:") for line in resume_differences(older, turned_on))


# ----------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "out")  # 19 tiles


def tiny(manifest: Path, run: Path, **kw) -> TrainConfig:
    """3 epochs of 19 tiles in batches of 4: at most 4 steps an epoch; epochs 1 and 2 pruned (< 0.875 · 3)."""
    base = dict(manifest=str(manifest), run=str(run), model="vit_test", epochs=3, batch_size=4, workers=0,
                log_every=1, ckpt_every=3, seed=3, blr=1e-2, warmup_steps=2, device="cpu", infobatch=True)
    return TrainConfig(**{**base, **kw})


def records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return rows


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in records(run)]


@pytest.fixture(scope="module")
def uninterrupted(manifest, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    assert train(tiny(manifest, run))["finished"]
    return run


def test_pruned_run_is_shorter_and_records_its_settings(uninterrupted):
    config = json.loads((uninterrupted / "config.json").read_text())
    assert (config["infobatch"], config["infobatch_ratio"], config["infobatch_delta"]) == (True, 0.5, 0.875)
    assert config["infobatch_epochs"] == 3 and config["total_steps"] == 15  # ceil(3 · 19 / 4): the upper bound
    rows = records(uninterrupted)
    assert 8 <= len(rows) < 12  # epoch 0: 4 steps (16 of 19 tiles); epochs 1 and 2 pruned: 2-3 steps each
    assert rows[3]["epoch"] == 1.0 and rows[-1]["epoch"] == 3.0
    # each step's lr is that of the nominal step at the same fraction of the epochs (the run's position
    # before the step), so the cosine ends with the epochs, not at step 15
    before = [0.0] + [r["epoch"] for r in rows[:-1]]
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(e / 3 * 15, config["lr"], 2, 15) for e in before])
    state = ckpt.load_checkpoint(uninterrupted / "checkpoint.pt")
    assert state["step"] == len(rows) and int(state["infobatch"]["epoch"]) == 3
    assert (~torch.isnan(state["infobatch"]["scores"])).sum() >= 16  # at least epoch 0's tiles have a score
    assert (uninterrupted / "encoder.safetensors").exists()


def test_stop_and_resume_is_bit_exact(manifest, uninterrupted, tmp_path):
    run = tmp_path / "split"
    for stop in (2, 4, 6):  # inside epoch 0; at its end; inside the first pruned epoch
        first = train(tiny(manifest, run, stop_at=stop, resume=stop > 2))
        assert not first["finished"]
    train(tiny(manifest, run, resume=True))
    assert losses(run) == losses(uninterrupted)  # exact float equality, every step
    a = ckpt.load_checkpoint(run / "checkpoint.pt")
    b = ckpt.load_checkpoint(uninterrupted / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert np.array_equal(a["infobatch"]["scores"].numpy(), b["infobatch"]["scores"].numpy(), equal_nan=True)


def test_resume_after_sigkill_with_a_prefetching_worker_is_bit_exact(manifest, uninterrupted, tmp_path):
    run = tmp_path / "killed"
    saved = kill_at_first_checkpoint(run, ["--manifest", str(manifest), "--model", "vit_test", "--epochs", "3",
                                           "--batch-size", "4", "--workers", "1", "--log-every", "1", "--ckpt-every",
                                           "3", "--seed", "3", "--blr", "1e-2", "--warmup-steps", "2", "--device",
                                           "cpu", "--infobatch"])
    assert saved < len(losses(uninterrupted)), "the run finished before it could be killed"
    train(tiny(manifest, run, resume=True, workers=1))
    assert losses(run) == losses(uninterrupted)


def test_resume_refuses_a_change_of_the_infobatch_flags(manifest, uninterrupted, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    for kw in ({"infobatch": False}, {"infobatch_ratio": 0.3}, {"infobatch_delta": 0.5}):
        with pytest.raises(ConfigError, match=next(iter(kw))):
            train(tiny(manifest, run, resume=True, **kw))


def test_sample_weights_scale_each_samples_loss():
    from pretrain.model import create_model

    torch.manual_seed(0)
    model = create_model("mae", "vit_test")
    imgs = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    weights = torch.tensor([2.0, 1.0, 0.0])
    torch.manual_seed(1)
    weighted, _, info = model(imgs, sample_weight=weights)
    torch.manual_seed(1)
    plain, _, same = model(imgs)
    assert torch.equal(info["loss_per_sample"], same["loss_per_sample"])
    assert torch.allclose(weighted, (same["loss_per_sample"] * weights).mean())
    assert torch.allclose(plain, same["loss_per_sample"].mean()) and not torch.allclose(weighted, plain)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process_accumulation(manifest, tmp_path):
    """2 gloo ranks × micro-batch 2 == 1 process × 2 accumulation micro-batches of 2: the same epochs drawn."""
    common = ["--manifest", str(manifest), "--model", "vit_test", "--epochs", "3", "--batch-size", "4",
              "--workers", "0", "--log-every", "1", "--seed", "1", "--blr", "1e-2", "--device", "cpu", "--infobatch"]
    run_pretrain(tmp_path / "ddp", common, ranks=2, port=29519)
    run_pretrain(tmp_path / "single", ["--accum-steps", "2", *common])
    assert losses(tmp_path / "ddp") == losses(tmp_path / "single")
    assert len(losses(tmp_path / "ddp")) < 12  # pruned
    a = ckpt.load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    b = ckpt.load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert np.array_equal(a["infobatch"]["scores"].numpy(), b["infobatch"]["scores"].numpy(), equal_nan=True)
    # stopped inside epoch 1 by one process, resumed on 2 ranks: each rank loads the losses of the whole epoch
    run_pretrain(tmp_path / "moved", ["--accum-steps", "2", "--stop-at", "6", *common])
    run_pretrain(tmp_path / "moved", ["--resume", *common], ranks=2, port=29519)
    assert losses(tmp_path / "moved") == losses(tmp_path / "single")


class Noise(Dataset):
    """Random uint8 images [3, 224, 224] with their index and no corrupt tile."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, key):
        _, index = key
        return torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8), index, 0


@pytest.mark.gpu
def test_pruned_steps_do_not_synchronise_on_cuda():
    """Steps inside an epoch (weights gathered and losses recorded on the device) under sync debug mode "error";
    the one sync per epoch is at its end."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from pretrain.engine import Loop, new_meter, train_step
    from pretrain.train import build_model_and_optimizer

    cfg = TrainConfig(manifest="m", run="r", model="vit_test", epochs=3, batch_size=8, device="cuda", lr=1e-4,
                      infobatch=True)
    settings = resolve(cfg, num_samples=64, world_size=1, device="cuda:0")
    model, optimizer = build_model_and_optimizer(settings)
    sampler = EpochSampler(8)
    loader = DataLoader(Noise(), batch_size=8, sampler=sampler, pin_memory=True)
    stream = InfoBatchStream(loader, sampler, InfoBatch(64, 3), torch.device("cuda:0"), 8, 1)
    stream.start()
    loop = Loop(model, optimizer, stream, settings, pruning=stream)
    meter = new_meter(torch.device("cuda:0"))
    for step in range(9):  # epoch 0 (8 steps) and the first step of epoch 1, after the fold
        train_step(loop, step, meter)
    assert stream.epoch == 1 and not np.isnan(stream.pruner.scores).any()
    with no_host_syncs():
        for step in range(9, 11):
            train_step(loop, step, meter)
    assert stream.epoch == 1 and stream.step == 3


@pytest.mark.parametrize("damage", ["scores of 5 tiles", "one epoch loss", "no epoch losses", "infinite scores",
                                    "step past its epoch", "negative epoch", "not a dict", "no entry"])
def test_resume_refuses_a_damaged_infobatch_state(manifest, tmp_path, damage):
    run = tmp_path / "run"
    train(tiny(manifest, run, stop_at=3))
    state = ckpt.load_checkpoint(run / "checkpoint.pt")
    ib = state["infobatch"]
    if damage == "scores of 5 tiles":
        ib["scores"] = ib["scores"][:5]
    elif damage == "one epoch loss":  # would broadcast to every tile
        ib["epoch_losses"] = ib["epoch_losses"][:1]
    elif damage == "no epoch losses":
        del ib["epoch_losses"]
    elif damage == "infinite scores":
        ib["scores"] = torch.full_like(ib["scores"], float("inf"))
    elif damage == "step past its epoch":  # would end the run at once, as if finished
        ib["step"] = torch.tensor(99)
    elif damage == "negative epoch":
        ib["epoch"] = torch.tensor(-1)
    elif damage == "no entry":  # would start again at epoch 0 with the model of step 3
        del state["infobatch"]
    else:
        state["infobatch"] = "garbage"
    torch.save(state, run / "checkpoint.pt")
    saved, trained = (run / "checkpoint.pt").read_bytes(), (run / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="checkpoint's InfoBatch state is damaged") as err:
        train(tiny(manifest, run, resume=True))
    assert "\n" not in str(err.value)
    assert (run / "metrics.jsonl").read_text() == trained and len(trained.splitlines()) == 3  # no step trained
    assert (run / "checkpoint.pt").read_bytes() == saved and not (run / "encoder.safetensors").exists()
