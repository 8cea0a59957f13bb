"""SelectiveMAE and MAE models: shapes, index sets, gradients, learning on real tiles, timm key names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain.config import TIMM_NAMES
from pretrain.flops import flops_per_image
from pretrain.model import (
    MODEL_CONFIGS,
    create_model,
    normalize,
    sincos_pos_embed,
    unnormalize,
)
from rs4m.demo import synthetic_scene

METHODS = ["selectivemae", "mae"]


@pytest.fixture(scope="module")
def scene_tiles() -> torch.Tensor:
    """Eight 224² crops of a generated aerial-like scene (``rs4m.demo``), uint8 [8, 3, 224, 224]."""
    img = np.asarray(synthetic_scene(np.random.default_rng(0), 1024, 768))
    crops = [img[r:r + 224, c:c + 224] for r in (100, 500) for c in (0, 250, 500, 750)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def tiny(method: str, **kw):
    torch.manual_seed(0)
    return create_model(method, "vit_test", **kw)


# ----------------------------------------------------------------------------------------------- factory


def test_create_model_lists_valid_names():
    with pytest.raises(ValueError, match="selectivemae, mae"):
        create_model("simmim", "vit_test")
    with pytest.raises(ValueError, match="vit_tiny, vit_small, vit_base, vit_large"):
        create_model("mae", "vit_huge")


def test_create_model_overrides_shape_and_method_options():
    model = create_model("selectivemae", "vit_test", img_size=96, decoder_depth=3, mask_ratio=0.75,
                         recon_ratio=0.5)
    assert model.cfg.img_size == 96 and len(model.decoder_blocks) == 3
    assert (model.num_encode, model.num_target) == (9, 18)


def test_wrong_input_size_says_what_to_do():
    with pytest.raises(ValueError, match="img_size=128"):
        tiny("mae")(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(("img_size", "k", "r"), [(224, 29, 49), (128, 9, 16), (96, 5, 9)])
@pytest.mark.parametrize("progress", [0.0, 0.36, 0.5, 0.74, 0.9])
def test_selectivemae_token_sets(img_size, k, r, progress):
    model = tiny("selectivemae", img_size=img_size)
    imgs = torch.randint(0, 256, (3, 3, img_size, img_size), dtype=torch.uint8)
    with torch.no_grad():
        loss, pred, info = model(imgs, progress=progress)
    n = (img_size // 16) ** 2
    assert info["ids_encode"].shape == (3, k) and info["ids_target"].shape == (3, r)
    assert pred.shape == (3, r, 768) and info["loss_per_sample"].shape == (3,)
    for enc, tgt in zip(info["ids_encode"].tolist(), info["ids_target"].tolist()):
        assert len(set(enc)) == k and len(set(tgt)) == r and set(enc).isdisjoint(tgt)
        assert max(enc + tgt) < n
    assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize(("img_size", "keep"), [(224, 49), (128, 16), (96, 9)])
def test_mae_token_sets(img_size, keep):
    model = tiny("mae", img_size=img_size)
    imgs = torch.randint(0, 256, (2, 3, img_size, img_size), dtype=torch.uint8)
    with torch.no_grad():
        _, pred, info = model(imgs)
    n = (img_size // 16) ** 2
    assert pred.shape == (2, n, 768) and info["ids_encode"].shape == (2, keep)
    for enc, tgt in zip(info["ids_encode"].tolist(), info["ids_target"].tolist()):
        assert sorted(enc + tgt) == list(range(n))


def test_modes_follow_progress():
    model = tiny("selectivemae", img_size=96)
    imgs = torch.randint(0, 256, (64, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        modes = [model(imgs, progress=p)[2]["modes"] for p in (0.1, 0.5, 0.9)]
    assert [m.unique().tolist() for m in modes] == [[0], [1], [2]]


# ----------------------------------------------------------------------------------------------- inputs


def test_normalize_and_float_input_agree():
    imgs = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    x_norm, x01 = normalize(imgs)
    assert torch.equal(x01 * 255, imgs.float())
    assert x_norm[:, 0].mean().item() == pytest.approx((x01[:, 0].mean().item() - 0.485) / 0.229, rel=1e-5)
    assert torch.allclose(unnormalize(x_norm), x01, atol=1e-6)
    model = tiny("selectivemae", img_size=96)
    with torch.no_grad():
        torch.manual_seed(5)
        from_u8 = model(imgs, progress=0.2)
        torch.manual_seed(5)
        from_float = model(x_norm, progress=0.2, x01=x01)
    assert torch.equal(from_u8[2]["ids_encode"], from_float[2]["ids_encode"])
    assert from_u8[0].item() == pytest.approx(from_float[0].item(), rel=1e-6)


def test_patchify_roundtrip_and_layout():
    model = tiny("mae")
    imgs = torch.randn(2, 3, 224, 224)
    patches = model.patchify(imgs)
    assert patches.shape == (2, 196, 768)
    # Patch 15 is row 1, column 1; its first value is pixel (16, 16) of channel 0, its second channel 1.
    assert patches[0, 15, 0] == imgs[0, 0, 16, 16] and patches[0, 15, 1] == imgs[0, 1, 16, 16]
    assert torch.equal(model.unpatchify(patches), imgs)


def test_position_embeddings_are_fixed_sincos():
    model = tiny("selectivemae")
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert torch.equal(model.pos_embed, sincos_pos_embed(192, 14, cls_token=True))
    assert torch.equal(model.pos_embed[0, 0], torch.zeros(192))
    # Two patches in the same row share the row half of the embedding and differ in the column half.
    pe = model.pos_embed[0, 1:]
    assert torch.equal(pe[0, 96:], pe[1, 96:]) and not torch.equal(pe[0, :96], pe[1, :96])


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize(("method", "kw"), [("selectivemae", {}), ("selectivemae", {"decoder_self_attn": True}),
                                            ("selectivemae", {"score": "uniform"}), ("mae", {})])
def test_every_parameter_gets_a_gradient(method, kw):
    model = tiny(method, img_size=96, **kw)
    loss, _, _ = model(torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8), progress=0.5)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", METHODS)
def test_param_groups_split_decay(method):
    model = tiny(method)
    decay, no_decay = model.param_groups(0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "blocks.0.attn.qkv.weight" in decay_names and "decoder_pred.weight" in decay_names
    assert {"cls_token", "mask_token", "blocks.0.attn.qkv.bias", "norm.weight"} <= no_decay_names
    assert all(p.ndim == 2 or p.ndim == 4 for p in decay["params"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable and not decay_names & no_decay_names
    assert "pos_embed" not in trainable and "decoder_pos_embed" not in trainable


def test_sample_weights_scale_the_loss():
    model = tiny("mae", img_size=96)
    imgs = torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8)
    torch.manual_seed(1)
    loss, _, info = model(imgs)
    torch.manual_seed(1)
    weighted, _, _ = model(imgs, sample_weight=torch.tensor([2.0, 0.0, 1.0, 1.0]))
    per = info["loss_per_sample"]
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-6)
    assert weighted.item() == pytest.approx(((2 * per[0] + per[2] + per[3]) / 4).item(), rel=1e-6)


def eval_loss(model, imgs: torch.Tensor) -> float:
    """Loss on ``imgs`` with a fixed draw of patches, so that two evaluations compare like for like."""
    torch.manual_seed(7)
    with torch.no_grad():
        return model(imgs, progress=0.1)[0].item()


@pytest.mark.parametrize("method", METHODS)
def test_loss_decreases_on_scene_tiles(method, scene_tiles):
    model = tiny(method)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    before = eval_loss(model, scene_tiles)
    for step in range(30):
        loss, _, _ = model(scene_tiles, progress=step / 30)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss(model, scene_tiles)
    # Predicting zeros (each target patch's mean) scores the mean square of the standardised targets, ≈ 0.999:
    # beating it means the model predicts something of the patches' content.
    zero_prediction = model.target_patches(normalize(scene_tiles)[0], True).pow(2).mean().item()
    assert after < 0.8 * before
    assert after < zero_prediction - 0.01


# ----------------------------------------------------------------------------------------------- timm keys


def expected_timm_encoder(width: int, depth: int) -> dict[str, tuple[int, ...]]:
    """timm vit_*_patch16_224 encoder keys and shapes (everything but the classification head)."""
    keys = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, 197, width),
        "patch_embed.proj.weight": (width, 3, 16, 16),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        keys.update({
            f"blocks.{i}.norm1.weight": (width,),
            f"blocks.{i}.norm1.bias": (width,),
            f"blocks.{i}.attn.qkv.weight": (3 * width, width),
            f"blocks.{i}.attn.qkv.bias": (3 * width,),
            f"blocks.{i}.attn.proj.weight": (width, width),
            f"blocks.{i}.attn.proj.bias": (width,),
            f"blocks.{i}.norm2.weight": (width,),
            f"blocks.{i}.norm2.bias": (width,),
            f"blocks.{i}.mlp.fc1.weight": (4 * width, width),
            f"blocks.{i}.mlp.fc1.bias": (4 * width,),
            f"blocks.{i}.mlp.fc2.weight": (width, 4 * width),
            f"blocks.{i}.mlp.fc2.bias": (width,),
        })
    keys.update({"norm.weight": (width,), "norm.bias": (width,)})
    return keys


#: timm's encoder shapes (width, depth, heads) of vit_{tiny,small,base,large}_patch16_224, written out here
TIMM_VIT = {"vit_tiny_patch16_224": (192, 12, 3), "vit_small_patch16_224": (384, 12, 6),
            "vit_base_patch16_224": (768, 12, 12), "vit_large_patch16_224": (1024, 24, 16)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["vit_tiny", "vit_small", "vit_base", "vit_large"])
def test_encoder_keys_and_shapes_equal_timms(method, name):
    width, depth, heads = TIMM_VIT[TIMM_NAMES[name]]
    with torch.device("meta"):
        model = create_model(method, name)
    got = {k: tuple(v.shape) for k, v in model.encoder_state_dict().items()}
    assert got == expected_timm_encoder(width, depth)  # strict: no key missing, none extra, every shape
    assert model.blocks[0].attn.heads == heads


def test_every_timm_named_size_is_timms_and_the_test_size_has_its_own_name():
    assert set(TIMM_NAMES) == set(MODEL_CONFIGS) - {"vit_test"}
    for name, timm_name in TIMM_NAMES.items():
        assert name + "_patch16_224" == timm_name
        cfg = MODEL_CONFIGS[name]
        assert (cfg.width, cfg.depth, cfg.heads) == TIMM_VIT[timm_name]
    assert all(MODEL_CONFIGS[n].decoder_depth == 8 for n in TIMM_NAMES)
    assert MODEL_CONFIGS["vit_test"].depth < 12


def test_model_table():
    shapes = {k: (c.width, c.depth, c.heads, c.decoder_width, c.decoder_heads) for k, c in MODEL_CONFIGS.items()}
    assert shapes == {"vit_test": (192, 4, 3, 128, 4), "vit_tiny": (192, 12, 3, 128, 4),
                      "vit_small": (384, 12, 6, 256, 8), "vit_base": (768, 12, 12, 512, 16),
                      "vit_large": (1024, 24, 16, 512, 16)}
    assert MODEL_CONFIGS["vit_base"].decoder_depth == 8 and MODEL_CONFIGS["vit_test"].decoder_depth == 2


# ----------------------------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("method", METHODS)
def test_analytic_flops_match_counted(method):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny(method)
    imgs = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    # The math backend runs attention as matmuls, which the counter sees; the fused CPU kernel it does not.
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(imgs, progress=0.5)
    counted = counter.get_total_flops() / 2
    analytic = flops_per_image(method, "vit_test")
    assert counted == pytest.approx(analytic.forward + analytic.no_grad, rel=0.01)


def test_flops_ratio_for_vit_base():
    mae, sel = flops_per_image("mae", "vit_base"), flops_per_image("selectivemae", "vit_base")
    assert mae.forward / 2e9 == pytest.approx(9.8, abs=0.2)  # the notes' estimate: ≈ 9.6 GMAC
    assert sel.forward / 2e9 == pytest.approx(3.9, abs=0.2)  # ≈ 3.8 GMAC
    assert mae.train == pytest.approx(3 * mae.forward)


# ----------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_step_on_cuda(method):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = tiny(method).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    imgs = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, pred, _ = model(imgs, progress=0.5)
    assert pred.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
