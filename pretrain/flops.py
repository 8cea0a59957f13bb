"""Analytic FLOPs per image of one training step, for both methods and every model size.

Counted: every matrix multiply (linear layers, the patch-embedding convolution, attention's QKᵀ and AV) as
2 FLOPs per multiply-accumulate. Not counted: norms, activations, softmax, the HOG score and index bookkeeping
(all elementwise, a few per cent at most). Training = 3 × the trained forward (the backward pass costs about
twice the forward: gradients for activations and for weights), plus SelectiveMAE's similarity matrix of the
input embeddings once (computed without gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain import selection
from pretrain.model import MODEL_CONFIGS, ViTConfig


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per image: ``forward`` (trained part), ``no_grad`` (selection), ``train`` = 3·forward + no_grad."""

    forward: float
    no_grad: float

    @property
    def train(self) -> float:
        return 3.0 * self.forward + self.no_grad


def block_macs(tokens: int, width: int, mlp_ratio: float) -> float:
    """MACs of one self-attention transformer block on ``tokens`` tokens."""
    linear = tokens * width * width * (4 + 2 * mlp_ratio)  # qkv 3, proj 1, mlp 2·ratio
    return linear + 2 * tokens * tokens * width  # QKᵀ and AV


def cross_block_macs(queries: int, memory: int, width: int, memory_width: int, mlp_ratio: float,
                     self_attn: bool) -> float:
    """MACs of one CrossMAE decoder block: ``queries`` attend to ``memory`` tokens of ``memory_width``."""
    macs = queries * width * width * (2 + 2 * mlp_ratio)  # q, proj, mlp
    macs += memory * memory_width * 2 * width  # k and v of the memory
    macs += 2 * queries * memory * width
    if self_attn:
        macs += 4 * queries * width * width + 2 * queries * queries * width
    return macs


def _encoder_macs(cfg: ViTConfig, num_encode: int) -> float:
    patch_embed = cfg.num_patches * 3 * cfg.patch ** 2 * cfg.width  # every patch is embedded
    return patch_embed + cfg.depth * block_macs(num_encode + 1, cfg.width, cfg.mlp_ratio)


def mae_flops(cfg: ViTConfig, mask_ratio: float = 0.75) -> FlopCount:
    """MAE: encoder on K + 1 tokens, decoder on all N + 1 tokens, pixel head on all of them."""
    n, dw = cfg.num_patches, cfg.decoder_width
    num_keep = int(n * (1 - mask_ratio) + 1e-9)
    macs = _encoder_macs(cfg, num_keep)
    macs += (num_keep + 1) * cfg.width * dw  # decoder_embed
    macs += cfg.decoder_depth * block_macs(n + 1, dw, cfg.mlp_ratio)
    macs += (n + 1) * dw * cfg.patch ** 2 * 3
    return FlopCount(forward=2.0 * macs, no_grad=0.0)


def selectivemae_flops(cfg: ViTConfig, mask_ratio: float = 0.85, recon_ratio: float = 0.25,
                       decoder_self_attn: bool = False) -> FlopCount:
    """SelectiveMAE: encoder on K + 1 tokens, R decoder queries cross-attending to them, head on R."""
    n, dw = cfg.num_patches, cfg.decoder_width
    k, r = selection.token_budget(n, mask_ratio, recon_ratio)
    macs = _encoder_macs(cfg, k)
    macs += cfg.decoder_depth * cross_block_macs(r, k + 1, dw, cfg.width, cfg.mlp_ratio, decoder_self_attn)
    macs += r * dw * cfg.patch ** 2 * 3
    gram = n * n * cfg.width  # cosine similarities of the input embeddings
    return FlopCount(forward=2.0 * macs, no_grad=2.0 * gram)


def flops_per_image(method: str, model: str, **kw) -> FlopCount:
    """FLOPs per image for ``method`` (selectivemae | mae) and ``model`` (a ``MODEL_CONFIGS`` name).

    Keywords: ``ViTConfig`` fields (``img_size``, ``decoder_depth``) and the method's ratios
    (``mask_ratio``, ``recon_ratio``, ``decoder_self_attn``).
    """
    if model not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODEL_CONFIGS)}")
    fields = set(ViTConfig.__dataclass_fields__)
    cfg = MODEL_CONFIGS[model]
    cfg = ViTConfig(**{**cfg.__dict__, **{k: v for k, v in kw.items() if k in fields}})
    rest = {k: v for k, v in kw.items() if k not in fields}
    if method == "mae":
        return mae_flops(cfg, **rest)
    if method == "selectivemae":
        return selectivemae_flops(cfg, **rest)
    raise ValueError(f"unknown method {method!r}; valid: selectivemae, mae")
