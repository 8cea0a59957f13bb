"""Progressive semantic token selection (PSTS): which patches SelectiveMAE encodes and which it reconstructs.

Pure tensor functions, no parameters. One training step of SelectiveMAE uses them in this order:

1. ``hog_patch_scores`` (or ``uniform_scores``) → one semantic score per patch, ``standardize_scores`` per image.
2. ``seed_patches``: floor(K/2) patches sampled without replacement with probability softmax(score).
3. ``expand_selection``: the remaining encoder patches in re-scored rounds (7 then 8 for K = 29), chosen by the
   maximum cosine similarity of their input embeddings to the patches already selected. Whether the most
   similar ("near"), the least similar ("far") or random patches are added depends on the stage of training
   (``stage_mix``).
4. ``choose_targets``: the R top-scoring patches among those not encoded are reconstructed.

``select_tokens`` runs steps 2–4. Budgets come from ``token_budget``: K = floor(N(1-m)), R = floor(N r).

Where this departs from the authors' released code (MiliLab/SelectiveMAE):

* The score. The released code z-scores each patch's 108-value HOG vector and takes its mean, which is always
  0, so its softmax is uniform and its "semantic" sampling is uniform random. Here the score is the L2 norm of
  the un-normalised HOG vector, standardised across the patches of each image before the softmax, so sampling
  is neither uniform nor deterministic whatever the image's contrast. ``score="uniform"`` reproduces the
  released behaviour.
* The stage schedule is expressed as fractions of the run (35 / 37.5 / 72.5 / 75 %) instead of the epochs
  280 / 300 / 580 / 600 of 800 hard-coded there; in the blend windows each image draws its mode independently.
* InfoBatch pruning, which the released loop applies and the paper does not mention, is an explicit opt-in
  (``pretrain.infobatch``), never on by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.config import SCORES, TARGET_CHOICES  # noqa: F401  (one list, read by the CLI too)

HOG_BINS = 9
HOG_CELL_PX = 8

# Stage schedule as fractions of the run; the released code hard-codes epochs 280/300/580/600 of 800.
NEAR_END = 0.35
FAR_START = 0.375
FAR_END = 0.725
RANDOM_START = 0.75

MODE_NEAR, MODE_FAR, MODE_RANDOM = 0, 1, 2


# ----------------------------------------------------------------------------------------------- budgets


def token_budget(num_patches: int, mask_ratio: float, recon_ratio: float) -> tuple[int, int]:
    """Return (K, R): K = floor(N(1-m)) patches to encode, R = floor(N r) to reconstruct.

    196 patches with m = 0.85, r = 0.25 give (29, 49). Raises ``ValueError`` when the budget cannot be met.
    """
    if not 0.0 <= mask_ratio < 1.0 or not 0.0 < recon_ratio <= 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1) and recon_ratio in (0, 1]; got {mask_ratio}, {recon_ratio}")
    # The epsilon keeps e.g. 100 * (1 - 0.7) = 29.999999999999996 from flooring to 29.
    num_encode = math.floor(num_patches * (1.0 - mask_ratio) + 1e-9)
    num_target = math.floor(num_patches * recon_ratio + 1e-9)
    if num_encode < 1 or num_target < 1 or num_encode + num_target > num_patches:
        raise ValueError(
            f"{num_patches} patches with mask_ratio={mask_ratio}, recon_ratio={recon_ratio} give K={num_encode} "
            f"encoded and R={num_target} reconstructed patches; need K >= 1, R >= 1 and K + R <= {num_patches}. "
            "Use a larger input or different ratios."
        )
    return num_encode, num_target


def expansion_sizes(num_encode: int, rounds: int = 2) -> tuple[int, list[int]]:
    """Split K into a seed of max(1, floor(K/2)) and ``rounds`` expansion rounds as equal as possible.

    The later rounds take the remainder: K = 29 → (14, [7, 8]); K = 5 → (2, [1, 2]).
    """
    num_seed = max(1, num_encode // 2)
    rest = num_encode - num_seed
    sizes = [rest // rounds] * rounds
    for i in range(rest % rounds):
        sizes[rounds - 1 - i] += 1
    return num_seed, sizes


# ----------------------------------------------------------------------------------------------- scores


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel correlation with replicate padding, separable by shifted slices: [B, C, H, W] → gx, gy [B, C, H, W]."""
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    diff_w = xp[..., 2:] - xp[..., :-2]  # [-1, 0, 1] along W: [B, C, H+2, W]
    smooth_w = torch.add(xp[..., :-2] + xp[..., 2:], xp[..., 1:-1], alpha=2)  # [1, 2, 1] along W
    gx = torch.add(diff_w[..., :-2, :] + diff_w[..., 2:, :], diff_w[..., 1:-1, :], alpha=2)
    gy = smooth_w[..., 2:, :] - smooth_w[..., :-2, :]
    return gx, gy


def hog_patch_scores(x01: Tensor, patch: int = 16) -> Tensor:
    """Semantic score per patch: the L2 norm of the patch's un-normalised HOG vector.

    ``x01``: images [B, 3, H, W] with values in [0, 1]; H and W multiples of ``patch`` (a multiple of 16 for
    2×2 cells of 8×8 pixels). Returns [B, N], N = (H/patch)(W/patch), patches in row-major order.

    Definition (``rs4m.richness`` computes the same): Sobel gx = correlation with [[-1,0,1],[-2,0,2],[-1,0,1]],
    gy with its transpose, per channel, replicate padding of 1 pixel; magnitude sqrt(gx² + gy²); angle
    atan2(gy, gx) mod π; bin min(floor(angle / (π/9)), 8); histogram = sum of magnitudes per (channel, 8×8 cell,
    bin); the patch's vector is its cells × 3 channels × 9 bins (108 values for 16 px); score = its L2 norm.
    Gradients are taken on the 0–255 scale (the score is divided by 255 at the end), so for 8-bit images they
    are exact integers and the orientation bins do not depend on rounding.
    """
    b, c, h, w = x01.shape
    if patch % HOG_CELL_PX or h % patch or w % patch:
        raise ValueError(f"image {h}x{w} and patch {patch} must be multiples of {patch} and {HOG_CELL_PX}")
    gx, gy = _sobel(x01.float() * 255.0)
    # In-place chains: each op is one pass over B·3·H·W values, and memory traffic is what this costs.
    mag = torch.addcmul(gx * gx, gy, gy).sqrt_()
    angle = torch.atan2(gy, gx).remainder_(math.pi)
    bins = angle.div_(math.pi / HOG_BINS).floor_().clamp_(max=HOG_BINS - 1)
    hist = _cell_histogram(mag, bins, h // HOG_CELL_PX, w // HOG_CELL_PX)  # [B, C, Hc, Wc, 9]
    cells = patch // HOG_CELL_PX
    hp, wp = h // patch, w // patch
    hist = hist.view(b, c, hp, cells, wp, cells, HOG_BINS).permute(0, 2, 4, 1, 3, 5, 6)
    return hist.reshape(b, hp * wp, -1).norm(dim=-1) / 255.0


def _cell_histogram(mag: Tensor, bins: Tensor, cells_h: int, cells_w: int) -> Tensor:
    """Sum magnitudes [B, C, H, W] into (channel, cell, bin) with one scatter-add → [B, C, Hc, Wc, bins].

    ``bins`` holds whole numbers 0–8 as floats; the flat index is built in float32 (exact below 2²⁴) and
    converted to int64 once.
    """
    b, c, h, w = mag.shape
    if c * cells_h * cells_w * HOG_BINS >= 2**24:
        raise ValueError(f"image of {h}x{w} pixels is too large for the float32 histogram index")
    rows = torch.arange(h, device=mag.device) // HOG_CELL_PX
    cols = torch.arange(w, device=mag.device) // HOG_CELL_PX
    cell = rows[:, None] * cells_w + cols[None, :]  # [H, W]
    chan = torch.arange(c, device=mag.device)[:, None, None] * (cells_h * cells_w)
    base = ((chan + cell) * HOG_BINS).to(bins.dtype)  # [C, H, W], static part of the flat index
    index = bins.add_(base).view(b, -1).long()
    hist = mag.new_zeros(b, c * cells_h * cells_w * HOG_BINS)
    hist.scatter_add_(1, index, mag.reshape(b, -1))
    return hist.view(b, c, cells_h, cells_w, HOG_BINS)


def uniform_scores(batch: int, num_patches: int, device: torch.device | str = "cpu") -> Tensor:
    """All-zero scores [B, N]: softmax sampling becomes uniform (what the released code's score amounts to)."""
    return torch.zeros(batch, num_patches, device=device)


def standardize_scores(scores: Tensor, eps: float = 1e-6) -> Tensor:
    """Zero mean, unit variance per image over its N patches: [B, N] → [B, N]. Constant rows become 0."""
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, unbiased=False, keepdim=True)
    return (scores - mean) / (std + eps)


# ----------------------------------------------------------------------------------------------- schedule


def stage_mix(progress: float | Tensor) -> Tensor:
    """Probabilities [3] of the expansion modes (near, far, random) at ``progress`` ∈ [0, 1] of the run.

    0–35 %: near; 35–37.5 %: near → far; 37.5–72.5 %: far; 72.5–75 %: far → random; 75–100 %: random.
    In a blend the probability of the next mode rises linearly across the window; ``select_tokens`` draws one
    mode per image from these probabilities, so a batch in a blend mixes images of both modes.
    Branch-free, so a compiled model does not recompile as ``progress`` (a float or 0-d tensor) advances; a
    tensor ``progress`` gives a float64 result on its device, a Python number a float64 CPU tensor.
    """
    p = torch.as_tensor(progress, dtype=torch.float64)  # a tensor stays on its device
    to_far = ((p - NEAR_END) / (FAR_START - NEAR_END)).clamp(0.0, 1.0)
    to_random = ((p - FAR_END) / (RANDOM_START - FAR_END)).clamp(0.0, 1.0)
    return torch.stack([1.0 - to_far, to_far - to_random, to_random])


def stage_thresholds(progress: float) -> tuple[float, float]:
    """``stage_mix`` for a Python number as the two cumulative thresholds (near, near + far), Python floats."""
    to_far = min(max((progress - NEAR_END) / (FAR_START - NEAR_END), 0.0), 1.0)
    to_random = min(max((progress - FAR_END) / (RANDOM_START - FAR_END), 0.0), 1.0)
    return 1.0 - to_far, 1.0 - to_random


def draw_modes(batch: int, mix: Tensor | tuple[float, float], device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> Tensor:
    """One expansion mode per image (``MODE_NEAR``/``MODE_FAR``/``MODE_RANDOM``): [B].

    ``mix``: ``stage_mix``'s probabilities [3], or ``stage_thresholds``'s pair. Comparing with Python floats
    copies nothing to the device: a CPU ``mix`` would be a host-to-device copy (a sync on CUDA) per step.
    """
    u = torch.rand(batch, device=device, generator=generator)
    if isinstance(mix, Tensor):
        mix = mix.to(device)
        near, near_far = mix[0], mix[0] + mix[1]
    else:
        near, near_far = mix
    return (u >= near).long() + (u >= near_far).long()


# ----------------------------------------------------------------------------------------------- selection


def topk_random_ties(priority: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices [B, k] of the k largest entries of ``priority`` [B, N], ties broken uniformly at random.

    Ties are common: identical flat patches have cosine similarity 1, and uniform scores are all equal.
    """
    perm = torch.rand(priority.shape, device=priority.device, generator=generator).argsort(dim=1)
    order = priority.gather(1, perm).sort(dim=1, descending=True, stable=True).indices[:, :k]
    return perm.gather(1, order)


def gumbel_topk(logits: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k indices per row sampled without replacement with probability softmax(logits): [B, N] → [B, k]."""
    u = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_(1e-20, 1.0)
    return (logits - torch.log(-torch.log(u))).topk(k, dim=1).indices


def seed_patches(scores: Tensor, num_seed: int, generator: torch.Generator | None = None) -> Tensor:
    """Seed of the encoder set: [B, N] standardised scores → [B, num_seed] indices ∝ softmax(score)."""
    return gumbel_topk(scores, num_seed, generator)


def expand_selection(selected: Tensor, embeddings: Tensor, sizes: list[int], modes: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """Grow the boolean encoder mask ``selected`` [B, N] by ``sizes[i]`` patches per round.

    ``embeddings`` [B, N, D]: input embeddings (patch + position embedding), no gradient. After each round the
    similarity of every unselected patch (max cosine similarity to the selected ones) is recomputed. Per image,
    ``modes`` [B] picks the most similar (near), least similar (far) or random unselected patches.
    """
    unit = F.normalize(embeddings.float(), dim=-1)
    gram = unit @ unit.transpose(1, 2)  # [B, N, N]
    noise_shape = selected.shape
    for size in sizes:
        if size == 0:
            continue
        sim = gram.masked_fill(~selected[:, None, :], -2.0).amax(dim=-1)  # [B, N], in [-1, 1]
        rand = torch.rand(noise_shape, device=selected.device, generator=generator)
        priority = torch.where(modes[:, None] == MODE_NEAR, sim, torch.where(modes[:, None] == MODE_FAR, -sim, rand))
        priority = priority.masked_fill(selected, -math.inf)
        new = topk_random_ties(priority, size, generator)
        selected = selected.scatter(1, new, True)
    return selected


def choose_targets(scores: Tensor, encoded: Tensor, num_target: int, how: str = "top",
                   generator: torch.Generator | None = None) -> Tensor:
    """Reconstruction targets [B, R] among the patches not encoded (``encoded`` [B, N] bool).

    ``how="top"``: the R highest scores (ties at random); ``"sample"``: R sampled ∝ softmax(score).
    """
    if how not in TARGET_CHOICES:
        raise ValueError(f"unknown target choice {how!r}; valid: {', '.join(TARGET_CHOICES)}")
    priority = scores.float().masked_fill(encoded, -math.inf)
    if how == "top":
        return topk_random_ties(priority, num_target, generator)
    return gumbel_topk(priority, num_target, generator)


@dataclass(frozen=True)
class Selection:
    """Result of ``select_tokens``: sorted indices of encoded [B, K] and target [B, R] patches, modes [B]."""

    ids_encode: Tensor
    ids_target: Tensor
    modes: Tensor


@torch.no_grad()
def select_tokens(scores: Tensor, embeddings: Tensor, num_encode: int, num_target: int,
                  progress: float | Tensor, target: str = "top", rounds: int = 2,
                  generator: torch.Generator | None = None) -> Selection:
    """PSTS for one batch: standardised scores [B, N] and input embeddings [B, N, D] → ``Selection``.

    ``progress`` ∈ [0, 1] (float or 0-d tensor) is the fraction of the run done; it sets the expansion mode
    (``stage_mix``).
    """
    b, n = scores.shape
    num_seed, sizes = expansion_sizes(num_encode, rounds)
    mix = stage_mix(progress) if isinstance(progress, Tensor) else stage_thresholds(float(progress))
    # Similarities and scores in fp32 even inside a bf16 autocast region (bf16 ties many near/far ranks).
    with torch.autocast(scores.device.type, enabled=False):
        seed = seed_patches(scores.float(), num_seed, generator)
        selected = torch.zeros(b, n, dtype=torch.bool, device=scores.device).scatter(1, seed, True)
        modes = draw_modes(b, mix, scores.device, generator)
        selected = expand_selection(selected, embeddings, sizes, modes, generator)
        ids_target = choose_targets(scores, selected, num_target, target, generator)
    # Stable sort of the boolean mask lists the K selected indices in ascending order.
    ids_encode = (~selected).float().argsort(dim=1, stable=True)[:, :num_encode]
    return Selection(ids_encode, ids_target.sort(dim=1).values, modes)
