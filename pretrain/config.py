"""Typed settings of pretraining, read by both command lines (``rs4m pretrain``, ``python -m pretrain``) and the
trainer: the model sizes, the method names and :class:`TrainConfig`, whose fields are the flags.

Pure Python (no torch), so the ``rs4m`` CLI can build its options from it without importing PyTorch. Each
``TrainConfig`` field carries its help text (and choices) in ``field(metadata=...)``; a field ``batch_size``
is the flag ``--batch-size``, a ``bool`` field is an on/off switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rs4m.errors import ConfigError


@dataclass(frozen=True)
class ViTConfig:
    """Encoder and decoder shapes. ``decoder_depth`` is the authors' 8 unless overridden."""

    width: int
    depth: int
    heads: int
    decoder_width: int
    decoder_heads: int
    decoder_depth: int = 8
    img_size: int = 224
    patch: int = 16
    mlp_ratio: float = 4.0

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch) ** 2


#: Sizes named after timm's ``vit_*_patch16_224`` have exactly its encoder (width, depth, heads); ``vit_test``
#: is a small size of this project for tests and CPU smoke runs, with no timm counterpart.
MODEL_CONFIGS: dict[str, ViTConfig] = {
    "vit_test": ViTConfig(192, 4, 3, 128, 4, decoder_depth=2),
    "vit_tiny": ViTConfig(192, 12, 3, 128, 4),
    "vit_small": ViTConfig(384, 12, 6, 256, 8),
    "vit_base": ViTConfig(768, 12, 12, 512, 16),
    "vit_large": ViTConfig(1024, 24, 16, 512, 16),
}
#: timm model name of each size that has one (the encoder loads into it with ``strict=True``)
TIMM_NAMES = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224",
              "vit_base": "vit_base_patch16_224", "vit_large": "vit_large_patch16_224"}

METHOD_NAMES = ("selectivemae", "mae")
#: each method's default mask ratio m (fraction of the patches not encoded)
DEFAULT_MASK_RATIO = {"selectivemae": 0.85, "mae": 0.75}
SCORES = ("hog", "uniform")
TARGET_CHOICES = ("top", "sample")
#: settings of SelectiveMAE only: giving one with ``--method mae`` is an error
SELECTIVEMAE_ONLY = ("recon_ratio", "score", "target", "decoder_self_attn")
#: settings of InfoBatch pruning: giving one without ``--infobatch`` is an error
INFOBATCH_ONLY = ("infobatch_ratio", "infobatch_delta")
LOW_LR = 1e-5  # below this peak lr a short run barely moves (warned at start)


def flag(help: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata of a command-line flag."""
    return {"help": help, "choices": choices}


@dataclass(frozen=True)
class TrainConfig:
    """One pretraining run. Field names equal the CLI flags (``batch_size`` ↔ ``--batch-size``).

    ``batch_size`` is the global batch of one optimiser step (all ranks, all accumulation micro-batches): the
    batch of the lr scaling rule. Each rank runs micro-batches of ``batch_size / (world × accum_steps)``.
    ``steps`` is the run's total; with ``epochs`` instead, steps = ceil(epochs · tiles / batch_size).
    ``warmup_steps`` defaults to 5 % of the steps. ``stop_at`` ends this invocation after that step (with a
    checkpoint) without changing the schedule: for time-limited jobs, resumed later with ``--resume``.
    The peak lr is ``lr`` when given, else the authors' rule (r/m)·blr·batch/256 for SelectiveMAE and
    blr·batch/256 for MAE. ``None`` in ``mask_ratio`` / ``decoder_depth`` means the method's / size's default.
    With ``infobatch`` the run's length is its epochs (``epochs``, or steps · batch_size / tiles): pruned epochs
    take fewer steps, so the run ends before ``steps``, and the lr and PSTS schedules follow the epochs
    (``pretrain.infobatch``).
    """

    manifest: str = field(metadata=flag("manifest.parquet of an rs4m build (its shards/ folder beside it)."))
    run: str = field(metadata=flag("Run folder: config.json, metrics.jsonl, checkpoint.pt, encoder.safetensors."))
    method: str = field(default="selectivemae", metadata=flag("Pretraining method.", METHOD_NAMES))
    model: str = field(default="vit_base", metadata=flag("Model size (timm's encoder shapes; vit_test is a small "
                                                         "size for tests).", tuple(MODEL_CONFIGS)))
    steps: int | None = field(default=None, metadata=flag("The run's total optimiser steps (or give --epochs)."))
    epochs: float | None = field(default=None, metadata=flag("Run length in passes over the tiles."))
    batch_size: int = field(default=256, metadata=flag("Global batch of one optimiser step (all GPUs, all "
                                                       "accumulation micro-batches)."))
    accum_steps: int = field(default=1, metadata=flag("Gradient accumulation micro-batches per step."))
    workers: int = field(default=4, metadata=flag("DataLoader workers per process."))
    where: str | None = field(default=None, metadata=flag("Filter the manifest (rs4m's filter language), e.g. "
                                                          "\"source == 'dota' and richness > 40\"."))
    resume: bool = field(default=False, metadata=flag("Continue the run from RUN/checkpoint.pt (same flags)."))
    log_every: int = field(default=20, metadata=flag("Log every N steps (and step 1)."))
    ckpt_every: int = field(default=1000, metadata=flag("Checkpoint every N steps (and at the end)."))
    seed: int = field(default=0, metadata=flag("Seed of the weights, the data order and every random draw."))
    device: str = field(default="auto", metadata=flag("Where to train.", ("auto", "cpu", "cuda")))
    lr: float | None = field(default=None, metadata=flag("Absolute peak learning rate; overrides --blr's rule."))
    blr: float = field(default=1.5e-4, metadata=flag("Base lr: peak lr = blr·batch/256, × r/m for SelectiveMAE."))
    warmup_steps: int | None = field(default=None, metadata=flag("Linear warm-up steps [default: 5 % of the "
                                                                 "steps]."))
    weight_decay: float = field(default=0.05, metadata=flag("AdamW weight decay (not on biases and norms)."))
    min_scale: float = field(default=0.2, metadata=flag("RandomResizedCrop's smallest area fraction."))
    img_size: int = field(default=224, metadata=flag("Input size in pixels (a multiple of 16)."))
    mask_ratio: float | None = field(default=None, metadata=flag("Fraction of patches not encoded [default: "
                                                                 "0.85 SelectiveMAE, 0.75 MAE]."))
    recon_ratio: float = field(default=0.25, metadata=flag("SelectiveMAE: fraction of patches reconstructed."))
    score: str = field(default="hog", metadata=flag("SelectiveMAE: patch score (uniform = the released "
                                                    "code's behaviour).", SCORES))
    target: str = field(default="top", metadata=flag("SelectiveMAE: reconstruct the top-scoring patches, or "
                                                     "sample them by score.", TARGET_CHOICES))
    decoder_depth: int | None = field(default=None, metadata=flag("Decoder blocks [default: 8; vit_test 2]."))
    decoder_self_attn: bool = field(default=False, metadata=flag("SelectiveMAE: self-attention among the "
                                                                 "decoder queries."))
    infobatch: bool = field(default=False, metadata=flag(
        "InfoBatch data pruning: each epoch leaves out each sample whose last loss lies below the mean with "
        "probability --infobatch-ratio and weights the kept ones 1/(1 - ratio). Step budget: the run keeps its "
        "epochs (--epochs, or --steps x batch / tiles), so pruned epochs shorten it: it ends before its total "
        "steps, and the lr schedule follows the epochs."))
    infobatch_ratio: float = field(default=0.5, metadata=flag("InfoBatch: probability of leaving out a sample "
                                                              "whose last loss is below the mean."))
    infobatch_delta: float = field(default=0.875, metadata=flag("InfoBatch: fraction of the epochs after which "
                                                                "pruning stops and every sample is used."))
    compile: bool = field(default=False, metadata=flag("torch.compile the model."))
    stop_at: int | None = field(default=None, metadata=flag("End this invocation after this step (resume later)."))

    def check(self) -> None:
        """Raise ``ConfigError`` on values no run can use."""
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of --steps and --epochs")
        positive = {"batch_size": self.batch_size, "accum_steps": self.accum_steps, "log_every": self.log_every,
                    "ckpt_every": self.ckpt_every, "steps": self.steps or 1, "epochs": self.epochs or 1,
                    "lr": 1 if self.lr is None else self.lr, "blr": self.blr, "img_size": self.img_size,
                    "decoder_depth": self.decoder_depth or 1, "stop_at": self.stop_at or 1}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"unknown --{f.name.replace('_', '-')} {getattr(self, f.name)!r}; valid: "
                                  f"{', '.join(choices)}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ConfigError(f"--min-scale must lie in (0, 1], got {self.min_scale}")
        if self.img_size % 16:
            raise ConfigError(f"--img-size must be a multiple of 16, got {self.img_size}")
        self._check_method_settings()
        self._check_infobatch()

    def _check_method_settings(self) -> None:
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"--mask-ratio must lie in (0, 1), got {self.mask_ratio}")
        if not 0.0 < self.recon_ratio <= 1.0:
            raise ConfigError(f"--recon-ratio must lie in (0, 1], got {self.recon_ratio}")
        if self.method != "selectivemae":
            defaults = {f.name: f.default for f in fields(self)}
            changed = [n for n in SELECTIVEMAE_ONLY if getattr(self, n) != defaults[n]]
            if changed:
                raise ConfigError(f"--{changed[0].replace('_', '-')} applies to --method selectivemae only")

    def _check_infobatch(self) -> None:
        if not 0.0 <= self.infobatch_ratio < 1.0:
            raise ConfigError(f"--infobatch-ratio must lie in [0, 1), got {self.infobatch_ratio}")
        if not 0.0 <= self.infobatch_delta <= 1.0:
            raise ConfigError(f"--infobatch-delta must lie in [0, 1], got {self.infobatch_delta}")
        if not self.infobatch:
            defaults = {f.name: f.default for f in fields(self)}
            changed = [n for n in INFOBATCH_ONLY if getattr(self, n) != defaults[n]]
            if changed:
                raise ConfigError(f"--{changed[0].replace('_', '-')} applies with --infobatch only")

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of ``pretrain.model.create_model`` for this run's method settings."""
        options: dict[str, Any] = {"img_size": self.img_size,
                                   "mask_ratio": self.mask_ratio or DEFAULT_MASK_RATIO[self.method]}
        if self.decoder_depth is not None:
            options["decoder_depth"] = self.decoder_depth
        if self.method == "selectivemae":
            options.update(recon_ratio=self.recon_ratio, score=self.score, target=self.target,
                           decoder_self_attn=self.decoder_self_attn)
        return options


#: resolved-config keys that may differ when a run is resumed (how it runs, not what it computes);
#: every other setting must equal the checkpoint's
RESUME_MAY_CHANGE = ("manifest", "run", "resume", "workers", "log_every", "ckpt_every", "device", "stop_at",
                     "world_size", "accum_steps")

