"""PSTS token selection: budgets, index sets, the stage schedule, the HOG score and the sampling laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain import selection as sel

REAL_IMAGE = "real/dota-devkit/images/P0706.png"


def naive_hog_scores(img_u8: np.ndarray, patch: int = 16) -> np.ndarray:
    """Straightforward float64 reference of the HOG score: [H, W, 3] uint8 → [N] (row-major patches)."""
    x = img_u8.astype(np.float64)
    h, w, _ = x.shape
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    for u in range(3):
        for v in range(3):
            window = xp[u:u + h, v:v + w]
            gx += k[u, v] * window
            gy += k.T[u, v] * window
    mag = np.sqrt(gx ** 2 + gy ** 2) / 255.0
    bins = np.minimum(np.floor(np.mod(np.arctan2(gy, gx), np.pi) / (np.pi / 9)), 8).astype(int)
    hist = np.zeros((h // 8, w // 8, 3, 9))
    rows, cols, chans = np.indices((h, w, 3))
    np.add.at(hist, (rows // 8, cols // 8, chans, bins), mag)
    g = patch // 8
    hist = hist.reshape(h // patch, g, w // patch, g, 3, 9).transpose(0, 2, 1, 3, 4, 5)
    return np.linalg.norm(hist.reshape((h // patch) * (w // patch), -1), axis=1)


@pytest.fixture(scope="module")
def real_crops(shared_data) -> torch.Tensor:
    """Two 224² crops of a real DOTA image as uint8 [2, 3, 224, 224]."""
    path = shared_data / REAL_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} is not present (the project's shared test imagery)")
    img = np.asarray(Image.open(path).convert("RGB"))
    crops = [img[300:524, 200:424], img[700:924, 600:824]]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(("n", "m", "r", "expected"), [
    (196, 0.85, 0.25, (29, 49)),
    (64, 0.85, 0.25, (9, 16)),
    (36, 0.85, 0.25, (5, 9)),
    (196, 0.75, 0.5, (49, 98)),
    (100, 0.7, 0.3, (30, 30)),  # 100 · 0.3 is 29.999… in floating point
])
def test_token_budget(n, m, r, expected):
    assert sel.token_budget(n, m, r) == expected


def test_token_budget_rejects_impossible_ratios():
    with pytest.raises(ValueError, match="K \\+ R"):
        sel.token_budget(196, 0.2, 0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        sel.token_budget(196, 1.0, 0.25)


@pytest.mark.parametrize(("k", "expected"), [(29, (14, [7, 8])), (9, (4, [2, 3])), (5, (2, [1, 2])),
                                             (2, (1, [0, 1])), (1, (1, [0, 0]))])
def test_expansion_sizes(k, expected):
    assert sel.expansion_sizes(k) == expected
    seed, sizes = sel.expansion_sizes(k)
    assert seed + sum(sizes) == k


# ----------------------------------------------------------------------------------------------- index sets


@pytest.mark.parametrize("img_size", [224, 128, 96])
@pytest.mark.parametrize(("m", "r"), [(0.85, 0.25), (0.75, 0.25), (0.9, 0.5)])
@pytest.mark.parametrize("progress", [0.1, 0.36, 0.5, 0.74, 0.9])
def test_select_tokens_index_sets(img_size, m, r, progress):
    n = (img_size // 16) ** 2
    k, rr = sel.token_budget(n, m, r)
    g = torch.Generator().manual_seed(img_size + int(progress * 100))
    scores = sel.standardize_scores(torch.rand(4, n, generator=g))
    emb = torch.randn(4, n, 32, generator=g)
    out = sel.select_tokens(scores, emb, k, rr, progress, generator=g)
    assert out.ids_encode.shape == (4, k) and out.ids_target.shape == (4, rr)
    for enc, tgt, s in zip(out.ids_encode.tolist(), out.ids_target.tolist(), scores):
        assert len(set(enc)) == k and len(set(tgt)) == rr
        assert set(enc).isdisjoint(tgt)
        assert all(0 <= i < n for i in enc + tgt)
        assert enc == sorted(enc) and tgt == sorted(tgt)
        # "top": every target outscores every unused (neither encoded nor target) patch.
        unused = sorted(set(range(n)) - set(enc) - set(tgt))
        if unused:
            assert s[tgt].min() >= s[unused].max()


def test_sampled_targets_are_among_non_encoded():
    g = torch.Generator().manual_seed(0)
    scores = sel.standardize_scores(torch.rand(8, 196, generator=g))
    out = sel.select_tokens(scores, torch.randn(8, 196, 16, generator=g), 29, 49, 0.8, target="sample",
                            generator=g)
    for enc, tgt in zip(out.ids_encode.tolist(), out.ids_target.tolist()):
        assert len(set(tgt)) == 49 and set(enc).isdisjoint(tgt)


# ----------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(("progress", "expected"), [
    (0.0, (1, 0, 0)), (0.2, (1, 0, 0)), (0.3499, (1, 0, 0)),
    (0.35, (1, 0, 0)), (0.3625, (0.5, 0.5, 0)), (0.36875, (0.25, 0.75, 0)),
    (0.375, (0, 1, 0)), (0.6, (0, 1, 0)), (0.7249, (0, 1, 0)),
    (0.73125, (0, 0.75, 0.25)), (0.7375, (0, 0.5, 0.5)),
    (0.75, (0, 0, 1)), (0.99, (0, 0, 1)), (1.0, (0, 0, 1)), (1.5, (0, 0, 1)),
])
def test_stage_mix(progress, expected):
    assert sel.stage_mix(progress).tolist() == pytest.approx(expected, abs=1e-6)
    assert sel.stage_mix(torch.tensor(progress)).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("progress", "expected_fractions"), [
    (0.1, (1, 0, 0)), (0.3625, (0.5, 0.5, 0)), (0.5, (0, 1, 0)), (0.73125, (0, 0.75, 0.25)), (0.8, (0, 0, 1)),
])
def test_draw_modes_follow_the_mix(progress, expected_fractions):
    modes = sel.draw_modes(20000, sel.stage_mix(progress), generator=torch.Generator().manual_seed(1))
    fractions = torch.bincount(modes, minlength=3).float() / modes.numel()
    assert fractions.tolist() == pytest.approx(expected_fractions, abs=0.015)


# ----------------------------------------------------------------------------------------------- expansion


def _fan_embeddings() -> torch.Tensor:
    """Four unit vectors at 0°, 30°, 60°, −40°: [1, 4, 2]."""
    angles = torch.tensor([0.0, 30.0, 60.0, -40.0]) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=-1)[None]


def test_near_expansion_rescores_after_each_round():
    selected = torch.tensor([[True, False, False, False]])
    near = torch.tensor([sel.MODE_NEAR])
    # Round 1 adds 30° (cos 0.87 to 0°); re-scored, 60° (cos 0.87 to 30°) beats −40° (cos 0.77 to 0°).
    two_rounds = sel.expand_selection(selected, _fan_embeddings(), [1, 1], near)
    assert two_rounds.tolist() == [[True, True, True, False]]
    # Without re-scoring (one round of two), −40° would win the second place.
    one_round = sel.expand_selection(selected, _fan_embeddings(), [2], near)
    assert one_round.tolist() == [[True, True, False, True]]


def test_far_expansion_adds_least_similar():
    selected = torch.tensor([[True, False, False, False]])
    far = sel.expand_selection(selected, _fan_embeddings(), [1], torch.tensor([sel.MODE_FAR]))
    assert far.tolist() == [[True, False, True, False]]  # 60°: cos 0.5, the least similar to 0°


def test_random_expansion_ignores_similarity():
    g = torch.Generator().manual_seed(0)
    selected = torch.zeros(3000, 4, dtype=torch.bool)
    selected[:, 0] = True
    emb = _fan_embeddings().expand(3000, -1, -1)
    grown = sel.expand_selection(selected, emb, [1], torch.full((3000,), sel.MODE_RANDOM), generator=g)
    picks = grown[:, 1:].float().mean(0)
    assert picks.tolist() == pytest.approx([1 / 3] * 3, abs=0.04)


# ----------------------------------------------------------------------------------------------- sampling


def test_seed_sampling_follows_softmax():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    scores = probs.log().expand(40000, -1)
    picks = sel.seed_patches(scores, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    freq = torch.bincount(picks, minlength=4).float() / picks.numel()
    assert freq.tolist() == pytest.approx(probs.tolist(), abs=0.01)


def test_seed_sampling_without_replacement():
    scores = torch.zeros(50, 10)
    scores[:, 3] = 20.0  # near-certain first pick
    picks = sel.seed_patches(scores, 10, generator=torch.Generator().manual_seed(0))
    assert all(sorted(row) == list(range(10)) for row in picks.tolist())


def test_uniform_scores_give_uniform_selection():
    scores = sel.standardize_scores(sel.uniform_scores(2000, 16))
    assert torch.equal(scores, torch.zeros(2000, 16))
    g = torch.Generator().manual_seed(0)
    out = sel.select_tokens(scores, torch.randn(2000, 16, 8, generator=g), 4, 4, 0.9, generator=g)
    enc_freq = torch.zeros(16).index_add_(0, out.ids_encode.flatten(), torch.ones(8000)) / 2000
    tgt_freq = torch.zeros(16).index_add_(0, out.ids_target.flatten(), torch.ones(8000)) / 2000
    assert enc_freq.tolist() == pytest.approx([0.25] * 16, abs=0.04)
    assert tgt_freq.tolist() == pytest.approx([0.25] * 16, abs=0.04)


# ----------------------------------------------------------------------------------------------- HOG score


def test_hog_ranks_texture_above_flat():
    img = torch.full((1, 3, 64, 64), 0.5)
    checker = ((torch.arange(16)[:, None] // 2 + torch.arange(16)[None, :] // 2) % 2).float()
    img[0, :, 16:32, 32:48] = checker  # patch (1, 2) → index 6
    scores = sel.hog_patch_scores(img)[0]
    assert scores.argmax().item() == 6
    assert scores[0].item() == 0.0 and scores[15].item() == 0.0  # flat and away from the texture
    assert scores[6] > 10 * scores[[5, 7, 2, 10]].max()


def test_hog_ranking_agrees_with_pixel_contrast_on_real_tiles(real_crops):
    # Textured patches (high pixel standard deviation) must score high, flat ones low.
    x = real_crops.float() / 255
    scores = sel.hog_patch_scores(x)
    std = x.unfold(2, 16, 16).unfold(3, 16, 16).permute(0, 2, 3, 1, 4, 5).reshape(2, 196, -1).std(dim=-1)
    for s, sd in zip(scores, std):
        order = s.argsort()
        assert sd[order[-49:]].mean() > 4 * sd[order[:49]].mean()
        rank_s, rank_sd = s.argsort().argsort().float(), sd.argsort().argsort().float()
        assert torch.corrcoef(torch.stack([rank_s, rank_sd]))[0, 1] > 0.8


def test_hog_matches_naive_reference_on_real_tiles(real_crops):
    scores = sel.hog_patch_scores(real_crops.float() / 255)
    for img, got in zip(real_crops.permute(0, 2, 3, 1).numpy(), scores):
        want = naive_hog_scores(img)
        assert got.numpy() == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_hog_matches_naive_reference_on_non_square_input():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    got = sel.hog_patch_scores(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0]
    assert got.shape == (6,)
    assert got.numpy() == pytest.approx(naive_hog_scores(img), rel=1e-4)


def test_hog_orientation_bins():
    # A horizontal ramp has gradient angle 0 (bin 0); a vertical ramp π/2 (bin 4): one non-zero bin per cell,
    # so the score equals the summed magnitude: 3 channels · 256 px · Sobel 8 · step/255.
    ramp = torch.arange(16.0)[None, :].expand(16, 16) / 255
    for img in (ramp, ramp.T):
        score = sel.hog_patch_scores(img.expand(1, 3, 16, 16).contiguous())[0, 0]
        # Interior pixels see gradient 8/255; the first and last column (row) 4/255 (replicate padding).
        cells = torch.full((16, 16), 8.0)
        edge = (slice(None), [0, 15]) if img is ramp else ([0, 15], slice(None))
        cells[edge] = 4.0
        per_cell = cells.view(2, 8, 2, 8).sum(dim=(1, 3)) / 255
        expected = (3 * per_cell.pow(2).sum()).sqrt()
        assert score.item() == pytest.approx(expected.item(), rel=1e-6)


def test_standardize_scores():
    s = sel.standardize_scores(torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]]))
    assert s[0].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert s[0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(s[1], torch.zeros(4))


def test_hog_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiples"):
        sel.hog_patch_scores(torch.zeros(1, 3, 40, 48))


@pytest.mark.parametrize("progress", [0.0, 0.3625, 0.5, 0.7375, 0.9])
def test_stage_thresholds_equal_the_mix(progress):
    near, near_far = sel.stage_thresholds(progress)
    mix = sel.stage_mix(progress)
    assert (near, near_far) == pytest.approx((mix[0].item(), (mix[0] + mix[1]).item()), abs=1e-12)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sel.draw_modes(5000, mix, generator=g1), sel.draw_modes(5000, (near, near_far), generator=g2))


def test_selection_is_fp32_inside_a_bf16_autocast_region():
    torch.manual_seed(0)
    scores = sel.standardize_scores(torch.randn(4, 196))
    emb = torch.randn(4, 196, 64)
    plain = sel.select_tokens(scores, emb, 29, 49, 0.2, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = sel.select_tokens(scores, emb, 29, 49, 0.2, generator=torch.Generator().manual_seed(5))
        unit = torch.nn.functional.normalize(emb, dim=-1)
        assert (unit @ unit.transpose(1, 2)).dtype == torch.bfloat16  # what autocast would do to the Gram matrix
    assert torch.equal(plain.ids_encode, auto.ids_encode) and torch.equal(plain.ids_target, auto.ids_target)
