"""InfoBatch-style data pruning: an explicit per-epoch sampler plus loss weights. Off unless the trainer asks.

The authors' released loop wraps its dataset in InfoBatch (not described in the paper): at the start of each
epoch, a random ``prune_ratio`` of the samples whose last recorded loss lies below the mean of all recorded
losses is left out of that epoch, and the kept below-mean samples get weight 1 / (1 − prune_ratio) (×2 for
half) so the expected gradient is unchanged. From ``stop_fraction`` of the epochs on, every sample is used
with weight 1. Samples without a recorded loss are always kept.

Use it the same way for SelectiveMAE and MAE when comparing them, never for one only::

    pruner = InfoBatch(len(dataset), num_epochs)
    for epoch in range(num_epochs):
        indices = pruner.epoch_indices(epoch)            # feed these to the data loader, in this order
        for batch_indices, imgs in ...:
            w = pruner.weights(batch_indices)            # [B] float, to model(..., sample_weight=w)
            loss, _, info = model(imgs, progress, sample_weight=w)
            pruner.update(batch_indices, info["loss_per_sample"])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class InfoBatch:
    """Per-epoch pruning of well-learned samples, with the matching loss up-weighting.

    ``num_samples``: dataset size; ``num_epochs``: the run's length in epochs; ``seed``: makes each epoch's
    order and pruning a pure function of (seed, epoch), so a resumed run draws the same ones.
    """

    def __init__(self, num_samples: int, num_epochs: int, prune_ratio: float = 0.5, stop_fraction: float = 0.875,
                 seed: int = 0) -> None:
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio must lie in [0, 1), got {prune_ratio}")
        if num_samples < 1 or num_epochs < 1:
            raise ValueError(f"need at least one sample and one epoch, got {num_samples} and {num_epochs}")
        self.num_samples, self.num_epochs = num_samples, num_epochs
        self.prune_ratio, self.stop_fraction, self.seed = prune_ratio, stop_fraction, seed
        self.losses = np.full(num_samples, np.nan, dtype=np.float64)
        self._weights = np.ones(num_samples, dtype=np.float32)

    def pruning_active(self, epoch: int) -> bool:
        """Whether ``epoch`` (counted from 0) still prunes: before ``stop_fraction`` of the run."""
        return self.prune_ratio > 0 and epoch < int(self.stop_fraction * self.num_epochs)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The shuffled sample indices [M] to train on in ``epoch``; also sets the weights ``weights`` returns."""
        rng = np.random.default_rng((self.seed, epoch))
        self._weights = np.ones(self.num_samples, dtype=np.float32)
        keep = np.ones(self.num_samples, dtype=bool)
        seen = ~np.isnan(self.losses)
        if self.pruning_active(epoch) and seen.any():
            well_learned = seen & (self.losses < self.losses[seen].mean())
            candidates = np.flatnonzero(well_learned)
            dropped = candidates[rng.random(candidates.size) < self.prune_ratio]
            keep[dropped] = False
            self._weights[well_learned] = 1.0 / (1.0 - self.prune_ratio)
        indices = np.flatnonzero(keep)
        rng.shuffle(indices)
        return indices

    def weights(self, indices: Tensor | np.ndarray) -> Tensor:
        """Loss weights [B] float32 for the samples ``indices`` [B] of the current epoch."""
        idx = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
        return torch.from_numpy(self._weights[idx])

    def update(self, indices: Tensor | np.ndarray, losses: Tensor) -> None:
        """Record the latest per-sample losses [B] (this copies them to the host: a sync on GPU)."""
        idx = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
        self.losses[idx] = losses.detach().float().cpu().numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The recorded losses, for checkpoints."""
        return {"losses": self.losses.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state_dict``'s losses."""
        losses = np.asarray(state["losses"], dtype=np.float64)
        if losses.shape != (self.num_samples,):
            raise ValueError(f"saved losses are for {losses.shape[0]} samples, this dataset has {self.num_samples}")
        self.losses = losses.copy()
