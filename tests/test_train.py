"""The training run: bit-exact resume (in process and after SIGKILL), metrics, checkpoints, export, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from pretrain import checkpoint as ckpt
from pretrain import data
from pretrain.engine import NonFiniteLoss, TrainConfig, lr_at, resolve
from pretrain.train import train
from rs4m.errors import ConfigError, OutputError
from tests.pretrain_corpus import build_corpus, kill_at_first_checkpoint, no_host_syncs, run_pretrain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "out")


def tiny(manifest: Path, run: Path, **kw) -> TrainConfig:
    base = dict(manifest=str(manifest), run=str(run), model="vit_test", steps=4, batch_size=4, workers=0,
                log_every=1, ckpt_every=2, seed=3, blr=1e-2, warmup_steps=2, device="cpu")
    return TrainConfig(**{**base, **kw})


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


@pytest.fixture(scope="module")
def uninterrupted(manifest, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    summary = train(tiny(manifest, run))
    assert summary["finished"]
    return run


def test_metrics_and_files_of_a_run(uninterrupted):
    records = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "lr", "images_per_s", "data_wait_pct", "mfu", "corrupt_tiles", "epoch"):
        assert key in records[0]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait_pct"] <= 100 and r["mfu"] is None for r in records)
    config = json.loads((uninterrupted / "config.json").read_text())
    assert config["total_steps"] == 4 and config["micro_batch"] == 4
    assert config["lr"] == pytest.approx(0.25 / 0.85 * 1e-2 * 4 / 256)
    assert [r["lr"] for r in records] == pytest.approx([lr_at(s, config["lr"], 2, 4) for s in range(4)])
    assert records[0]["epoch"] == pytest.approx(4 / config["num_samples"])
    state = torch.load(uninterrupted / "checkpoint.pt", weights_only=True)  # no pickle needed
    assert state["step"] == 4 and state["samples"] == 16 and state["config"]["seed"] == 3


def test_resume_after_stop_is_bit_exact(manifest, uninterrupted, tmp_path):
    run = tmp_path / "split"
    first = train(tiny(manifest, run, stop_at=3))
    assert not first["finished"] and not (run / "encoder.safetensors").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert len(losses(run)) == 3
    train(tiny(manifest, run, resume=True))
    assert losses(run) == losses(uninterrupted)  # exact float equality, every step
    a = ckpt.load_checkpoint(run / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(uninterrupted / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_sigkill_is_bit_exact(manifest, uninterrupted, tmp_path):
    run = tmp_path / "killed"
    saved = kill_at_first_checkpoint(run, ["--manifest", str(manifest), "--model", "vit_test", "--steps", "4",
                                           "--batch-size", "4", "--workers", "1", "--log-every", "1", "--ckpt-every",
                                           "2", "--seed", "3", "--blr", "1e-2", "--warmup-steps", "2", "--device",
                                           "cpu"])
    assert saved < 4, "the run finished before it could be killed"
    train(tiny(manifest, run, resume=True, workers=1))  # resumed in this process: same result as a new one
    assert losses(run) == losses(uninterrupted)


def test_restart_after_a_kill_before_the_first_checkpoint_logs_each_step_once(manifest, uninterrupted, tmp_path):
    run = tmp_path / "early"
    args = [sys.executable, "-m", "pretrain", "--manifest", str(manifest), "--run", str(run), "--model", "vit_test",
            "--steps", "4", "--batch-size", "4", "--workers", "0", "--log-every", "1", "--ckpt-every", "1000",
            "--seed", "3", "--blr", "1e-2", "--warmup-steps", "2", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.exists() or not metrics.read_text().strip()) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoint.pt").exists(), "the run reached its checkpoint before it could be killed"
    assert metrics.read_text().strip(), "nothing was logged before the kill"
    train(tiny(manifest, run, ckpt_every=1000, resume=True))
    assert losses(run) == losses(uninterrupted)  # steps 1..4 once each (losses() checks), same values


def poison_step(monkeypatch, bad_step: int) -> None:
    """Make the model's loss NaN on training step ``bad_step`` (1-based; one micro-batch per step)."""
    from pretrain import train as train_module

    real = train_module.create_model

    def create(*args, **kw):
        model = real(*args, **kw)
        forward, calls = model.forward, [0]

        def poisoned(imgs, progress=0.0, **more):
            calls[0] += 1
            loss, pred, info = forward(imgs, progress=progress, **more)
            return (loss * float("nan") if calls[0] == bad_step else loss), pred, info
        model.forward = poisoned
        return model
    monkeypatch.setattr(train_module, "create_model", create)


def test_a_nan_never_overwrites_the_last_good_checkpoint(manifest, tmp_path, monkeypatch):
    run = tmp_path / "nan"
    poison_step(monkeypatch, 7)
    with pytest.raises(NonFiniteLoss, match="step 7") as err:  # found at the step-8 checkpoint, named step 7
        train(tiny(manifest, run, steps=12, log_every=3, ckpt_every=4))
    assert err.value.step == 7 and "holds step 4" in str(err.value) and "\n" not in str(err.value)
    state = ckpt.load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "checkpoint.prev.pt").exists()  # step 4 was the first save; nothing rotated over it
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 3, 6]


def test_checkpoints_rotate_to_prev(manifest, tmp_path, monkeypatch):
    run = tmp_path / "rotate"
    poison_step(monkeypatch, 6)
    with pytest.raises(NonFiniteLoss, match="step 6"):
        train(tiny(manifest, run, steps=8, ckpt_every=2))  # log_every 1: found on step 6 itself
    assert ckpt.load_checkpoint(run / "checkpoint.pt")["step"] == 4
    assert ckpt.load_checkpoint(run / "checkpoint.prev.pt")["step"] == 2


def test_resume_falls_back_to_prev_when_a_save_was_cut_between_renames(manifest, uninterrupted, tmp_path):
    run = tmp_path / "cut"
    train(tiny(manifest, run, stop_at=3))
    (run / "checkpoint.pt").rename(run / "checkpoint.prev.pt")
    train(tiny(manifest, run, resume=True))
    assert losses(run) == losses(uninterrupted)


def test_resume_from_something_that_is_not_a_checkpoint_is_one_line(manifest, tmp_path):
    run = tmp_path / "junk"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(OutputError, match="cannot be read .* not a checkpoint of rs4m pretrain") as err:
        train(tiny(manifest, run, resume=True))
    assert "\n" not in str(err.value)


def test_exported_encoder_has_timm_keys(uninterrupted, tmp_path):
    out = tmp_path / "enc.safetensors"
    meta = ckpt.export_encoder(uninterrupted / "checkpoint.pt", out)
    assert meta["method"] == "selectivemae" and meta["model"] == "vit_test"
    # what the encoder expects, as text in the safetensors header and as JSON beside it
    with safe_open(out, "pt") as f:
        header = f.metadata()
    side = json.loads(out.with_suffix(".json").read_text())
    assert header == meta and json.loads(header["mean"]) == side["mean"] == [0.485, 0.456, 0.406]
    assert side["std"] == [0.229, 0.224, 0.225] and side["input_range"] == [0.0, 1.0]
    assert (side["img_size"], side["patch_size"], side["step"]) == (224, 16, 4)
    assert side["architecture"] == "" and side["method"] == "selectivemae"  # vit_test has no timm counterpart
    assert side["settings"]["score"] == "hog" and side["settings"]["mask_ratio"] == 0.85
    assert side["settings"]["lr"] == pytest.approx(0.25 / 0.85 * 1e-2 * 4 / 256)
    per_block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                 "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                 "mlp.fc2.weight", "mlp.fc2.bias"]
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                "norm.bias"} | {f"blocks.{i}.{name}" for i in range(4) for name in per_block}
    state = ckpt.load_checkpoint(uninterrupted / "checkpoint.pt")["model"]
    with safe_open(out, "pt") as f:
        assert set(f.keys()) == expected
        assert f.get_tensor("pos_embed").shape == (1, 197, 192)
        assert f.get_tensor("blocks.3.attn.qkv.weight").shape == (576, 192)
        assert all(torch.equal(f.get_tensor(k), state[k]) for k in expected)
    with safe_open(uninterrupted / "encoder.safetensors", "pt") as f:  # written at the end of the run
        assert set(f.keys()) == expected


def test_where_sets_the_training_set(manifest, tmp_path):
    run = tmp_path / "filtered"
    train(tiny(manifest, run, steps=1, where="scene_path == 'scene1.png'"))
    wanted = (pd.read_parquet(manifest)["scene_path"] == "scene1.png").sum()
    assert json.loads((run / "config.json").read_text())["num_samples"] == wanted


def test_corrupt_tiles_reach_the_metrics(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(manifest.parent, out)
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    with open(out / "shards" / row["shard"], "r+b") as fh:
        fh.seek(int(row["offset"]))
        fh.write(b"\x00" * int(row["length"]))
    n = len(pd.read_parquet(out / "manifest.parquet"))
    run = tmp_path / "run"
    train(tiny(out / "manifest.parquet", run, steps=1, batch_size=n, log_every=1))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["corrupt_tiles"] == 1  # one full epoch in one step reads the bad tile exactly once
    assert ckpt.load_checkpoint(run / "checkpoint.pt")["corrupt_tiles"] == 1
    assert "1 corrupt tile(s) were skipped" in capsys.readouterr().err.splitlines()[-1]  # said at the end


def test_broken_shards_stop_the_run_with_one_line(manifest, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(manifest.parent, out)
    for shard in (out / "shards").iterdir():
        shard.write_bytes(b"\x00" * shard.stat().st_size)  # every tile unreadable
    with pytest.raises(data.BrokenShards, match="unreadable tiles in a row") as err:
        train(tiny(out / "manifest.parquet", tmp_path / "run", steps=1, workers=1))  # raised in a worker
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_resume_refuses_a_different_run(manifest, uninterrupted, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    with pytest.raises(ConfigError, match="total_steps"):
        train(tiny(manifest, run, steps=8, resume=True))
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny(manifest, run))


def test_config_rules():
    cfg = TrainConfig(manifest="m", run="r", method="mae", steps=10, batch_size=512, accum_steps=2)
    settings = resolve(cfg, num_samples=1000, world_size=4, device="cpu")
    assert settings["lr"] == pytest.approx(1.5e-4 * 2) and settings["micro_batch"] == 64
    assert settings["warmup_steps"] == 1  # 5 % of 10 steps, rounded half up
    epochs = resolve(replace(cfg, steps=None, epochs=2), num_samples=1000, world_size=1, device="cpu")
    assert epochs["total_steps"] == 4  # ceil(2 · 1000 / 512)
    with pytest.raises(ConfigError, match="divisible"):
        resolve(cfg, num_samples=1000, world_size=3, device="cpu")
    with pytest.raises(ConfigError, match="exactly one"):
        TrainConfig(manifest="m", run="r").check()
    with pytest.raises(ConfigError, match="vit_test"):
        TrainConfig(manifest="m", run="r", steps=1, model="vit_huge").check()


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 1.0, 10, 100) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 1e-3


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process_accumulation(manifest, tmp_path):
    """2 gloo ranks × micro-batch 4 == 1 process × 2 accumulation micro-batches of 4, same global batch 8."""
    common = ["--manifest", str(manifest), "--model", "vit_test", "--steps", "3", "--batch-size", "8",
              "--workers", "0", "--log-every", "1", "--seed", "1", "--blr", "1e-2", "--device", "cpu"]
    run_pretrain(tmp_path / "ddp", common, ranks=2, port=29517, timeout=300)
    run_pretrain(tmp_path / "single", ["--accum-steps", "2", *common], timeout=300)
    assert losses(tmp_path / "ddp") == losses(tmp_path / "single")  # bit-exact, see ResumableSampler
    a = ckpt.load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- CLI


def run_cli(*args):
    from click.testing import CliRunner

    from rs4m.cli import get_cli
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


def test_cli_trains_and_exports(manifest, tmp_path):
    run = tmp_path / "cli"
    result = run_cli("pretrain", "--manifest", manifest, "--run", run, "--model", "vit_test", "--method", "mae",
                     "--steps", "2", "--batch-size", "4", "--workers", "0", "--log-every", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "config.json").read_text())["lr"] == pytest.approx(1.5e-4 * 4 / 256)  # mae: no r/m
    start = next(line for line in result.output.splitlines() if line.startswith("pretrain: "))
    for part in ("mae vit_test", "M parameters", "on cpu", "tiles", "steps 1–2", "batch 4", "peak lr 2.34e-06"):
        assert part in start
    warning = [line for line in result.output.splitlines() if line.startswith("warning: peak lr")]
    assert len(warning) == 1 and "--lr" in warning[0]
    logs = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in logs] == ["1/2", "2/2"] and all(" eta " in line for line in logs)
    quiet = run_cli("pretrain", "--manifest", manifest, "--run", tmp_path / "lr", "--model", "vit_test", "--steps",
                    "1", "--batch-size", "4", "--workers", "0", "--lr", "1e-3", "--device", "cpu")
    assert quiet.exit_code == 0 and "peak lr 0.001" in quiet.output and "warning" not in quiet.output
    out = tmp_path / "enc.safetensors"
    result = run_cli("pretrain", "export", run / "checkpoint.pt", out)
    assert result.exit_code == 0, result.output
    with safe_open(out, "pt") as a, safe_open(run / "encoder.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_cli_errors_are_one_line(manifest, tmp_path):
    bad = run_cli("pretrain", "--manifest", manifest, "--run", tmp_path / "r", "--steps", "1", "--where", "colour > 1")
    assert bad.exit_code == 2 and "rs4m: error:" in bad.output and "richness" in bad.output
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    missing = run_cli("pretrain", "--run", tmp_path / "r", "--steps", "1")
    assert missing.exit_code == 2 and "--manifest" in missing.output
    both = run_cli("pretrain", "--manifest", manifest, "--run", tmp_path / "r")
    assert both.exit_code == 2 and "--steps" in both.output
    notckpt = tmp_path / "x.pt"
    notckpt.write_bytes(b"not a checkpoint")
    assert run_cli("pretrain", "export", notckpt, tmp_path / "y.safetensors").exit_code == 2


def test_cli_without_torch_says_what_to_install(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    result = run_cli("pretrain", "--manifest", manifest, "--run", tmp_path / "r", "--steps", "1")
    assert result.exit_code == 2 and "pip install 'rs4m[train]'" in result.output


def test_cli_defaults_equal_the_config_defaults():
    from rs4m.cli.pretrain import pretrain
    ctx = pretrain.make_context("pretrain", ["--manifest", "m.parquet", "--run", "r"])
    params = {k: str(v) if isinstance(v, Path) else v for k, v in ctx.params.items()}
    assert TrainConfig(**params) == TrainConfig(manifest="m.parquet", run="r")


def test_rs4m_cli_does_not_import_torch():
    code = "import sys; from rs4m.cli import get_cli; get_cli(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------------------------- method flags


def built(**kw):
    """The model the trainer builds for these flags (vit_test, CPU)."""
    from pretrain.train import build_model_and_optimizer

    cfg = TrainConfig(manifest="m", run="r", model="vit_test", steps=10, batch_size=4, device="cpu", **kw)
    return build_model_and_optimizer(resolve(cfg, num_samples=100, world_size=1, device="cpu"))[0]


def half_textured(size: int = 224) -> torch.Tensor:
    """One uint8 image [1, 3, size, size]: random texture in the top half, flat grey below."""
    img = torch.full((1, 3, size, size), 128, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    img[..., : size // 2, :] = torch.randint(0, 256, (1, 3, size // 2, size), generator=gen, dtype=torch.uint8)
    return img


def seed_share_in_top_half(model, draws: int = 200) -> float:
    """Fraction of PSTS seed patches (the first draw, before expansion) that lie in the image's top half."""
    from pretrain import selection

    img = half_textured().expand(draws, -1, -1, -1)
    x_norm, x01 = model.prepare(img, None, need_x01=True)
    tokens = model.embed_patches(x_norm)
    scores = (selection.uniform_scores(draws, tokens.shape[1]) if model.score == "uniform"
              else model.patch_scores(x01))
    torch.manual_seed(0)
    seeds = selection.seed_patches(scores, selection.expansion_sizes(model.num_encode)[0])
    return (seeds < tokens.shape[1] // 2).float().mean().item()


def test_score_flag_uniform_gives_uniform_seed_sampling():
    assert built().score == "hog" and built(score="uniform").score == "uniform"
    hog, uniform = seed_share_in_top_half(built()), seed_share_in_top_half(built(score="uniform"))
    assert hog > 0.8  # the HOG score puts most seeds on the texture (z ≈ +1 vs −1: e² ≈ 7× per patch)
    assert uniform == pytest.approx(0.5, abs=0.03)  # 2800 draws: 3 standard deviations ≈ 0.028


def test_decoder_depth_flag_changes_the_parameter_count():
    default, deeper = built(), built(decoder_depth=5)
    per_block = sum(p.numel() for p in default.decoder_blocks[0].parameters())
    assert len(default.decoder_blocks) == 2 and len(deeper.decoder_blocks) == 5
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert count(deeper) - count(default) == 3 * per_block
    assert count(built(method="mae", decoder_depth=5)) > count(built(method="mae"))


def test_ratio_flags_set_the_token_budget_and_the_lr_rule():
    assert (built().num_encode, built().num_target) == (29, 49)
    assert (built(mask_ratio=0.75, recon_ratio=0.5).num_encode, built(recon_ratio=0.5).num_target) == (49, 98)
    assert built(method="mae").num_keep == 49 and built(method="mae", mask_ratio=0.5).num_keep == 98
    cfg = TrainConfig(manifest="m", run="r", steps=1, batch_size=256, mask_ratio=0.8, recon_ratio=0.4)
    assert resolve(cfg, 10, 1, "cpu")["lr"] == pytest.approx(0.4 / 0.8 * 1.5e-4)
    assert resolve(replace(cfg, lr=3e-4), 10, 1, "cpu")["lr"] == 3e-4  # --lr is the absolute peak


def test_target_flag_top_or_sampled():
    from pretrain import selection

    img = half_textured().expand(16, -1, -1, -1)
    for target, always_top in (("top", True), ("sample", False)):
        model = built(target=target)
        torch.manual_seed(0)
        with torch.no_grad():
            _, _, info = model(img, progress=0.9)
        scores = model.patch_scores(model.prepare(img, None, True)[1])
        encoded = torch.zeros_like(scores, dtype=torch.bool).scatter(1, info["ids_encode"], True)
        top = selection.choose_targets(scores, encoded, model.num_target, "top")
        # ties among the flat patches make "top" sets differ in the flat part only: compare score sums
        got = scores.gather(1, info["ids_target"]).sum(1)
        best = scores.gather(1, top).sum(1)
        assert torch.allclose(got, best, atol=1e-4) == always_top


def test_decoder_self_attn_flag():
    assert built().decoder_blocks[0].self_attn is None
    assert built(decoder_self_attn=True).decoder_blocks[0].self_attn is not None


def test_selectivemae_flags_are_refused_for_mae():
    for kw in ({"score": "uniform"}, {"target": "sample"}, {"recon_ratio": 0.5}, {"decoder_self_attn": True}):
        with pytest.raises(ConfigError, match="selectivemae only"):
            TrainConfig(manifest="m", run="r", method="mae", steps=1, **kw).check()
    with pytest.raises(ConfigError, match="--score"):
        TrainConfig(manifest="m", run="r", steps=1, score="entropy").check()


def test_config_json_records_every_setting_and_resume_compares_them(manifest, uninterrupted, tmp_path):
    from dataclasses import fields

    config = json.loads((uninterrupted / "config.json").read_text())
    assert {f.name for f in fields(TrainConfig)} <= set(config)
    assert config["model_options"] == {"img_size": 224, "mask_ratio": 0.85, "recon_ratio": 0.25, "score": "hog",
                                       "target": "top", "decoder_self_attn": False}
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    for kw in ({"score": "uniform"}, {"decoder_depth": 3}, {"target": "sample"}, {"compile": True},
               {"lr": 1e-3}):
        with pytest.raises(ConfigError, match=next(iter(kw))):
            train(tiny(manifest, run, resume=True, **kw))


def test_both_command_lines_reach_every_setting():
    from dataclasses import fields

    from pretrain.__main__ import parse_args
    from rs4m.cli.pretrain import pretrain

    flags = ["--manifest", "m.parquet", "--run", "r", "--steps", "5", "--score", "uniform", "--target", "sample",
             "--decoder-depth", "12", "--mask-ratio", "0.8", "--recon-ratio", "0.3", "--lr", "0.001",
             "--decoder-self-attn", "--img-size", "128"]
    want = TrainConfig(manifest="m.parquet", run="r", steps=5, score="uniform", target="sample", decoder_depth=12,
                       mask_ratio=0.8, recon_ratio=0.3, lr=1e-3, decoder_self_attn=True, img_size=128)
    assert parse_args(flags) == want
    params = pretrain.make_context("pretrain", flags).params
    assert TrainConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in params.items()}) == want
    # -q/-v (given to every command, not passed on) aside
    assert {p.name for p in pretrain.params if p.expose_value} == {f.name for f in fields(TrainConfig)}


# ----------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["selectivemae", "mae"])
@pytest.mark.parametrize("compiled", [False, True])
def test_training_steps_do_not_synchronise_on_cuda(method, compiled):
    """A few full steps (bf16 autocast, fused AdamW, NaN tracking) under sync debug mode "error"."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from pretrain.engine import Loop, new_meter, train_step
    from pretrain.train import build_model_and_optimizer

    cfg = TrainConfig(manifest="m", run="r", method=method, model="vit_test", steps=100, batch_size=8,
                      device="cuda", compile=compiled, lr=1e-4)
    settings = resolve(cfg, num_samples=1000, world_size=1, device="cuda:0")
    model, optimizer = build_model_and_optimizer(settings)

    def batches():
        while True:  # what a pin_memory DataLoader hands over: pinned uint8 images, corrupt counts on the host
            yield (torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8).pin_memory(), None,
                   torch.zeros(8, dtype=torch.int64))
    loop = Loop(torch.compile(model) if compiled else model, optimizer, batches(), settings)
    meter = new_meter(torch.device("cuda:0"))
    for step in range(2):  # warm-up: compilation, cuBLAS handles, optimiser state
        train_step(loop, step, meter)
    with no_host_syncs():
        for step in range(2, 6):
            train_step(loop, step, meter)
    assert meter.steps == 6 and torch.isfinite(meter.loss_sum).item()


def test_export_metadata_names_timms_architecture_and_the_input():
    state = {"config": {"model": "vit_tiny", "method": "mae", "lr": 1e-3,
                        "model_options": {"img_size": 128, "mask_ratio": 0.75}}, "step": 9}
    meta = ckpt.encoder_metadata(state)
    assert (meta["architecture"], meta["img_size"], meta["patch_size"], meta["step"]) == \
        ("vit_tiny_patch16_224", 128, 16, 9)
    assert meta["settings"] == {"img_size": 128, "mask_ratio": 0.75, "lr": 1e-3}
