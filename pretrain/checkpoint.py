"""Training checkpoints: atomic save, pickle-free load, and the encoder export to safetensors with timm keys.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``::

    {"model": state_dict, "optimizer": state_dict, "step": int, "epoch": int, "samples": int,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "numpy": [...], "python": [...]},
     "config": {...resolved run config...}, "num_samples": int, "corrupt_tiles": int}

``step`` counts finished optimiser steps; ``samples`` is the sampler position (samples consumed by all
ranks together), from which the data stream resumes; ``epoch`` = samples // num_samples, for people.
A run with ``--infobatch`` also holds ``"infobatch": {"scores", "epoch_losses": float32 [N] (NaN: none),
"epoch", "step": 0-d int64}`` (``pretrain.infobatch.InfoBatchStream.state_dict``), from which its stream
resumes instead; its ``epoch`` is then the stream's.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import save_file

from pretrain.config import MODEL_CONFIGS, TIMM_NAMES
from pretrain.model import IMAGENET_MEAN, IMAGENET_STD, MaskedViT
from rs4m.errors import OutputError

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"


def rng_state() -> dict[str, Any]:
    """The process's RNG states (torch CPU and CUDA, numpy's and Python's global generators), pickle-free."""
    np_state = cast(tuple[Any, ...], np.random.get_state())  # the legacy tuple form, never the dict
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_version, list(py_internal), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``'s output (CUDA states only where this process has as many devices)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any], previous: Path | None = None) -> None:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    With ``previous``, the checkpoint ``path`` held so far is first renamed to ``previous`` (so two good
    checkpoints exist; between the two renames only ``previous`` does, which ``latest_checkpoint`` finds).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest_checkpoint(run: Path) -> Path | None:
    """``run/checkpoint.pt``, else ``run/checkpoint.prev.pt`` (a save interrupted between its renames), else None."""
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        if (Path(run) / name).is_file():
            return Path(run) / name
    return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling code (``weights_only=True``).

    Raises ``OutputError`` (one line) when ``path`` is missing or is not a checkpoint of ``rs4m pretrain``.
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises many types on foreign bytes (UnpicklingError, RuntimeError, ...)
        message = " ".join(str(err).split())[:300] or type(err).__name__
        raise OutputError(f"checkpoint {path} cannot be read ({type(err).__name__}: {message}); it is damaged or "
                          "not a checkpoint of rs4m pretrain") from None
    if not isinstance(state, dict) or "model" not in state:
        raise OutputError(f"checkpoint {path} cannot be read (no model weights in it); it is damaged or not a "
                          "checkpoint of rs4m pretrain")
    return state


def encoder_weights(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder entries of a full model state dict, under timm ``vit_*_patch16_224`` names."""
    return {k: v for k, v in model_state.items() if k.startswith(MaskedViT.ENCODER_PREFIXES)}


def encoder_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """What a user of the exported encoder needs: timm architecture, input size, patch size, normalisation
    (ImageNet mean / std on [0, 1] pixels, not timm's ViT default of 0.5), the method and its settings."""
    config = state.get("config", {})
    model = str(config.get("model", ""))
    options = config.get("model_options") or {}
    size = MODEL_CONFIGS.get(model)
    return {
        "format": "timm-vit", "architecture": TIMM_NAMES.get(model, ""), "method": str(config.get("method", "")),
        "model": model, "step": int(state.get("step", 0)),
        "img_size": int(options.get("img_size", size.img_size if size else 224)),
        "patch_size": size.patch if size else 16, "in_chans": 3, "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD), "input_range": [0.0, 1.0], "global_pool": "token", "class_token": True,
        "num_classes": 0, "settings": {**options, **{k: config.get(k) for k in EXPORTED_SETTINGS if k in config}},
    }


#: run settings recorded in the export beside the model options (how the encoder was trained)
EXPORTED_SETTINGS = ("steps", "total_steps", "batch_size", "lr", "blr", "warmup_steps", "weight_decay",
                     "min_scale", "seed", "num_samples", "where")


def export_encoder(ckpt: Path, out: Path) -> dict[str, str]:
    """Write the encoder of checkpoint ``ckpt`` to ``out`` (.safetensors, timm keys) and ``out`` with suffix
    ``.json`` (the same metadata, readable without safetensors); return the safetensors metadata.

    The safetensors metadata holds strings only: each value of ``encoder_metadata`` is stored as text (JSON for
    lists and dicts), so ``json.loads(meta["mean"])`` gives the mean back.
    """
    state = load_checkpoint(ckpt)
    weights = {k: v.detach().float().contiguous() for k, v in encoder_weights(state["model"]).items()}
    info = encoder_metadata(state)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(weights, tmp, metadata=meta)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sidecar = out.with_suffix(".json")
    tmp_json = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp_json.write_text(json.dumps(info, indent=2) + "\n")
    tmp_json.replace(sidecar)
    return meta

