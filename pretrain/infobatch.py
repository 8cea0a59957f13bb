"""InfoBatch data pruning (Qin et al., ICLR 2024), as the authors' released SelectiveMAE loop applies it (the paper
does not mention it): which samples each epoch trains on, their loss weights, and the bookkeeping that decides
the next epoch. Off unless ``--infobatch``; use it for both methods or for neither when comparing them.

Rule. A sample's score is its latest per-sample reconstruction loss; a sample not seen yet has none and is always
kept. At the start of epoch ``e`` (from 0), while ``e < delta · epochs``, each sample whose score lies below the
mean of the recorded scores is left out with probability ``ratio``, and the kept ones get loss weight
1 / (1 − ratio), so the expected gradient is unchanged; every other sample has weight 1. From epoch
``delta · epochs`` on every sample is used with weight 1. Epoch ``e``'s draw is a pure function of
(seed, e, the scores at the end of epoch e − 1).

Step budget. The run keeps its length in epochs, so a pruned epoch takes fewer optimiser steps and the run ends
before its nominal ``total_steps`` (its upper bound). The lr schedule and the PSTS stages follow the epochs:
a step at fraction p of the run's epochs gets the lr of nominal step p · total_steps.

Cost. During an epoch the per-sample losses stay on the device (one ``index_copy_`` per micro-batch into an [N]
buffer, no host sync). At each epoch's end the buffer is copied to the host (one sync and, under DDP, one
all-reduce of N floats), folded into the scores, and the next epoch drawn; the loader does not prefetch across
that boundary (the next epoch's list needs this epoch's last losses), so each epoch starts with its pipeline
filling. Only whole global batches are used: an epoch's last ``len % batch_size`` samples (random ones, the list
being shuffled) are left out of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from pretrain.data import EpochSampler
from rs4m.errors import ConfigError

#: "not seen this epoch" in ``LossBuffer`` (a reconstruction loss is a mean square, never negative)
UNSEEN = -1.0


class InfoBatch:
    """The scores and each epoch's draw. Pure numpy, on the host.

    ``num_samples``: dataset size N; ``epochs``: the run's length in epochs (may be fractional); ``ratio``: the
    prune probability r; ``delta``: the fraction of the epochs after which pruning stops.
    """

    def __init__(self, num_samples: int, epochs: float, ratio: float = 0.5, delta: float = 0.875,
                 seed: int = 0) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
        if num_samples < 1 or epochs <= 0:
            raise ValueError(f"need at least one sample and a positive length, got {num_samples} and {epochs}")
        self.num_samples, self.epochs, self.ratio, self.delta, self.seed = num_samples, epochs, ratio, delta, seed
        self.scores = np.full(num_samples, np.nan, dtype=np.float32)  # NaN: not seen yet

    def pruning_active(self, epoch: int) -> bool:
        """Whether ``epoch`` (from 0) prunes: ``epoch < delta · epochs``."""
        return self.ratio > 0 and epoch < self.delta * self.epochs

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 [M] to train on in ``epoch``, shuffled; loss weights float32 [N] of every sample)."""
        rng = np.random.default_rng((self.seed, epoch))
        weights = np.ones(self.num_samples, dtype=np.float32)
        keep = np.ones(self.num_samples, dtype=bool)
        seen = ~np.isnan(self.scores)
        if self.pruning_active(epoch) and seen.any():
            mean = self.scores[seen].astype(np.float64).mean()
            well_learned = np.flatnonzero(seen & (self.scores < mean))
            keep[well_learned[rng.random(well_learned.size) < self.ratio]] = False
            weights[well_learned] = 1.0 / (1.0 - self.ratio)
        indices = np.flatnonzero(keep)
        rng.shuffle(indices)
        return indices, weights

    def fold(self, losses: np.ndarray) -> None:
        """Take the losses [N] of the epoch just ended as the scores of the samples it saw (NaN: not seen)."""
        seen = ~np.isnan(losses)
        self.scores[seen] = losses[seen]

    def state_dict(self) -> dict[str, Tensor]:
        return {"scores": torch.from_numpy(self.scores.copy())}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        scores = state["scores"].numpy().astype(np.float32)
        if scores.shape != (self.num_samples,):
            raise ValueError(f"saved InfoBatch scores are for {scores.shape[0]} samples, this training set has "
                             f"{self.num_samples}")
        self.scores = scores.copy()


class LossBuffer:
    """The per-sample losses of the current epoch, on the device: float32 [N], ``UNSEEN`` where not seen.

    ``record`` is one ``index_copy_`` (no host sync). Under DDP each rank records its own samples; ``gather``
    combines the ranks with an all-reduce MAX, which is also right after a resume, when every rank holds the
    saved buffer of all ranks (MAX of equal values is that value).
    """

    def __init__(self, num_samples: int, device: torch.device) -> None:
        self.values = torch.full((num_samples,), UNSEEN, dtype=torch.float32, device=device)

    def record(self, indices: Tensor, losses: Tensor) -> None:
        """``indices`` int64 [B] and ``losses`` [B], both on the device."""
        self.values.index_copy_(0, indices, losses.detach().float())

    def gather(self, world_size: int) -> np.ndarray:
        """Every rank's losses so far, on the host: float32 [N], NaN where not seen (a host sync; a collective
        under DDP)."""
        values = self.values.clone()
        if world_size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        host = values.cpu().numpy()
        return np.where(host >= 0, host, np.nan).astype(np.float32)

    def reset(self) -> None:
        self.values.fill_(UNSEEN)

    def load(self, losses: np.ndarray) -> None:
        self.values.copy_(torch.from_numpy(np.nan_to_num(losses, nan=UNSEEN)))


def damaged(what: str) -> ConfigError:
    return ConfigError(f"--resume: the checkpoint's InfoBatch state is damaged ({what}); resume from "
                       "checkpoint.prev.pt (move it to checkpoint.pt) or start a new --run")


def check_state(state: Any, num_samples: int) -> None:
    """Refuse (:class:`ConfigError`, one line) a saved :meth:`InfoBatchStream.state_dict` that is not one
    of a run over ``num_samples`` samples: scores and epoch losses float [N], NaN or finite and ≥ 0 (a loss is
    a mean square), epoch and step 0-d integers ≥ 0."""
    if state is None:
        raise damaged("the checkpoint of an --infobatch run has no 'infobatch' entry")
    if not isinstance(state, dict):
        raise damaged(f"a {type(state).__name__}, not a dict")
    missing = [k for k in ("scores", "epoch_losses", "epoch", "step") if k not in state]
    if missing:
        raise damaged(f"no {missing[0]!r}")
    for key in ("scores", "epoch_losses"):
        value = state[key]
        if not isinstance(value, Tensor) or not value.is_floating_point() or tuple(value.shape) != (num_samples,):
            got = f"shape {tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            raise damaged(f"{key!r} is {got}, not float [{num_samples}] (one per tile of this training set)")
        bad = ~torch.isnan(value) & ~(torch.isfinite(value) & (value >= 0))
        if bad.any():
            raise damaged(f"{key!r} holds {int(bad.sum())} values that are no loss (infinite or negative)")
    for key in ("epoch", "step"):
        value = state[key]
        if not isinstance(value, Tensor) or value.dim() or value.is_floating_point() or value.is_complex() \
                or int(value) < 0:
            raise damaged(f"{key!r} is {value!r}, not an integer >= 0")


class InfoBatchStream:
    """The batches of an InfoBatch run and where it stands: one loader pass per drawn epoch.

    Position: ``epoch`` and ``step`` (optimiser steps done in it, of ``steps_in_epoch``). The loop calls
    ``weights`` and ``record`` for each micro-batch and ``step_done`` after each optimiser step; at an epoch's
    end ``step_done`` folds the epoch's losses in and draws the next epoch. ``finished``: no step is left.
    """

    def __init__(self, loader: DataLoader, sampler: EpochSampler, pruner: InfoBatch, device: torch.device,
                 batch_size: int, world_size: int) -> None:
        self.loader, self.sampler, self.pruner = loader, sampler, pruner
        self.batch_size, self.world_size, self.device = batch_size, world_size, device
        self.losses = LossBuffer(pruner.num_samples, device)
        self.epoch, self.step, self.steps_in_epoch, self.finished = 0, 0, 0, False
        self._weights = torch.ones(pruner.num_samples, device=device)
        self._batches: Any = iter(())

    def start(self, state: dict[str, Any] | None = None) -> None:
        """Draw the first epoch, or the saved ``state``'s epoch and continue it at its saved step (a
        :class:`ConfigError` when the state is damaged: never a run on garbage scores or positions)."""
        if state is not None:
            check_state(state, self.pruner.num_samples)
            self.pruner.load_state_dict(state)
            self.losses.load(state["epoch_losses"].numpy())
        epoch, step = (int(state["epoch"]), int(state["step"])) if state is not None else (0, 0)
        if step and step >= len(self.pruner.draw(epoch)[0]) // self.batch_size:  # a saved step lies inside its epoch
            raise damaged(f"step {step} of epoch {epoch}, which has "
                          f"{len(self.pruner.draw(epoch)[0]) // self.batch_size} steps")
        self._begin(epoch, step)

    def _begin(self, epoch: int, step: int = 0) -> None:
        """Draw ``epoch`` (and later ones while an epoch has no whole batch) and start its loader at ``step``."""
        while True:
            self.epoch, self.step = epoch, step
            indices, weights = self.pruner.draw(epoch)
            self.steps_in_epoch = len(indices) // self.batch_size
            if not self._step_exists():
                self.finished = True
                return
            if self.steps_in_epoch > 0:
                break
            epoch, step = epoch + 1, 0
        self._weights = torch.from_numpy(weights).to(self.device)  # a host-to-device copy, once per epoch
        self.sampler.set_epoch(epoch, indices[: self.steps_in_epoch * self.batch_size], step)
        self._batches = iter(self.loader)

    def _step_exists(self) -> bool:
        """Whether the current position lies inside the run (before ``epochs`` epochs)."""
        return self.epoch + self.step / max(1, self.steps_in_epoch) < self.pruner.epochs

    def __iter__(self) -> InfoBatchStream:
        return self

    def __next__(self) -> Any:
        return next(self._batches)

    def progress(self) -> float:
        """Fraction of the run's epochs done at the current position."""
        if self.finished:
            return 1.0
        return (self.epoch + self.step / self.steps_in_epoch) / self.pruner.epochs

    def weights(self, indices: Tensor) -> Tensor:
        """Loss weights [B] of the samples ``indices`` [B] (on the device; a gather, no host sync)."""
        return self._weights[indices]

    def record(self, indices: Tensor, losses: Tensor) -> None:
        self.losses.record(indices, losses)

    def step_done(self) -> None:
        """Advance one optimiser step; at the epoch's end fold its losses in and draw the next epoch."""
        self.step += 1
        if self.step < self.steps_in_epoch:
            self.finished = not self._step_exists()
            return
        self.pruner.fold(self.losses.gather(self.world_size))  # once per epoch: a host sync (+ all-reduce)
        self.losses.reset()
        self._begin(self.epoch + 1)

    def state_dict(self) -> dict[str, Tensor]:
        """The position, the scores that drew this epoch and this epoch's losses so far (a collective)."""
        return {**self.pruner.state_dict(), "epoch": torch.tensor(self.epoch), "step": torch.tensor(self.step),
                "epoch_losses": torch.from_numpy(self.losses.gather(self.world_size))}
