"""InfoBatch-style pruning: which samples an epoch drops, their weights, the stop point, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain.infobatch import InfoBatch


def seeded(n: int = 1000, epochs: int = 8, **kw) -> InfoBatch:
    pruner = InfoBatch(n, epochs, **kw)
    pruner.update(np.arange(n), torch.arange(n, dtype=torch.float32))  # loss i for sample i; mean 499.5
    return pruner


def test_first_epoch_without_losses_keeps_everything():
    pruner = InfoBatch(100, 8)
    indices = pruner.epoch_indices(0)
    assert sorted(indices.tolist()) == list(range(100))
    assert torch.equal(pruner.weights(indices), torch.ones(100))


def test_prunes_half_of_the_below_mean_samples_and_doubles_the_rest():
    pruner = seeded()
    indices = pruner.epoch_indices(1)
    kept = set(indices.tolist())
    assert set(range(500, 1000)) <= kept  # at or above the mean: always kept
    dropped_low = 500 - len(kept & set(range(500)))
    assert 200 < dropped_low < 300  # a random half of the 500 below the mean
    weights = pruner.weights(torch.as_tensor(indices))
    assert torch.equal(weights[torch.as_tensor(indices) < 500], torch.full((500 - dropped_low,), 2.0))
    assert torch.equal(weights[torch.as_tensor(indices) >= 500], torch.ones(500))
    assert len(set(indices.tolist())) == len(indices)


def test_expected_weight_of_pruned_samples_is_one():
    pruner = seeded(prune_ratio=0.3)
    counts = np.zeros(1000)
    for epoch in range(6):  # 6 < 0.875 · 8 → pruning active
        counts[pruner.epoch_indices(epoch)] += pruner.weights(pruner.epoch_indices(epoch)).numpy()
    assert counts[:500].mean() == pytest.approx(6.0, rel=0.05)
    assert counts[500:].mean() == 6.0


def test_stops_pruning_at_the_stop_fraction():
    pruner = seeded(epochs=8)
    assert pruner.pruning_active(6) and not pruner.pruning_active(7)
    indices = pruner.epoch_indices(7)
    assert len(indices) == 1000 and torch.equal(pruner.weights(indices), torch.ones(1000))


def test_epochs_are_deterministic_and_differ():
    a, b = seeded(seed=3), seeded(seed=3)
    assert np.array_equal(a.epoch_indices(2), b.epoch_indices(2))
    assert not np.array_equal(a.epoch_indices(2), a.epoch_indices(3))


def test_state_roundtrip_and_size_check():
    pruner = seeded()
    other = InfoBatch(1000, 8)
    other.load_state_dict(pruner.state_dict())
    assert np.array_equal(other.epoch_indices(1), pruner.epoch_indices(1))
    with pytest.raises(ValueError, match="1000 samples"):
        InfoBatch(10, 8).load_state_dict(pruner.state_dict())
