"""SelectiveMAE and the MAE baseline: a ViT encoder with timm parameter names and two decoders.

- ``MaskedAutoencoder`` (method ``"mae"``): encode a random 25 % of the patches, a decoder self-attends over all
  N + 1 tokens, the loss is on the masked patches.
- ``SelectiveMAE`` (method ``"selectivemae"``): encode K = floor(N(1-m)) patches chosen by PSTS
  (``pretrain.selection``), reconstruct only R = floor(N r) others with a CrossMAE-style decoder whose queries
  cross-attend to the encoder tokens; the remaining patches are not touched.

Both take ``forward(imgs, progress)`` and return ``(loss, pred, info)``. ``imgs`` is either uint8 [B, 3, H, W]
(0–255, normalised here with the ImageNet mean/std, see ``normalize``) or float [B, 3, H, W] already normalised;
in the float case the [0, 1] image for the HOG score is recovered by un-normalising unless ``x01`` is given.
The forward never enables autocast itself: wrap the call in ``torch.autocast`` for bf16. Under
``torch.compile`` pass ``progress`` as a 0-d tensor: a Python float is specialised and recompiles as it changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrain import selection
from pretrain.config import MODEL_CONFIGS, ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(imgs: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """uint8 images [B, 3, H, W] → (ImageNet-normalised float32, float32 in [0, 1]), both [B, 3, H, W].

    ``mean`` / ``std`` [1, 3, 1, 1] on the images' device avoid building them from Python values, which on CUDA
    is a host-to-device copy (a sync) per call: the models pass their buffers.
    """
    x01 = imgs.float().div_(255.0)
    mean = x01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) if mean is None else mean
    std = x01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) if std is None else std
    return (x01 - mean) / std, x01


def unnormalize(x: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """Inverse of ``normalize`` for float images [B, 3, H, W], clamped to [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) if mean is None else mean
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) if std is None else std
    return (x.float() * std + mean).clamp(0.0, 1.0)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool) -> Tensor:
    """Fixed 2-D sine-cosine position embedding [1, grid² (+1), dim]; half the channels encode rows, half columns."""
    def axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    emb = np.concatenate([axis(dim // 2, cols), axis(dim // 2, rows)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


# ----------------------------------------------------------------------------------------------- blocks


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: [B, 3, H, W] → [B, N, D] (timm name ``patch_embed.proj``)."""

    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection: [B, L, D] → [B, L, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Queries [B, Lq, Dq] attend to memory [B, Lk, Dk] (any width) → [B, Lq, Dq]."""

    def __init__(self, dim: int, memory_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(memory_dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q = self.q(x).view(b, n, self.heads, hd).transpose(1, 2)
        k, v = self.kv(memory).view(b, memory.shape[1], 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer GELU MLP (timm names ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block, as timm's ViT: [B, L, D] → [B, L, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
    """CrossMAE decoder block: [optional self-attention], cross-attention to memory, MLP. [B, R, Dd] → same."""

    def __init__(self, dim: int, memory_dim: int, heads: int, mlp_ratio: float, self_attn: bool) -> None:
        super().__init__()
        self.norm0 = nn.LayerNorm(dim, eps=1e-6) if self_attn else None
        self.self_attn = Attention(dim, heads) if self_attn else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, memory_dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        if self.self_attn is not None:
            x = x + self.self_attn(self.norm0(x))
        x = x + self.cross_attn(self.norm1(x), memory)
        return x + self.mlp(self.norm2(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------- models


class MaskedViT(nn.Module):
    """Base of both methods: the ViT encoder (``patch_embed``, ``cls_token``, fixed ``pos_embed``, ``blocks``,
    ``norm``), patchify, pixel targets and the loss."""

    ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")

    def _build_encoder(self, cfg: ViTConfig) -> None:
        if cfg.img_size % cfg.patch:
            raise ValueError(f"img_size {cfg.img_size} is not a multiple of the patch size {cfg.patch}")
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        grid = cfg.img_size // cfg.patch
        self.pos_embed = nn.Parameter(sincos_pos_embed(cfg.width, grid, cls_token=True), requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        # Not saved (persistent=False): the checkpoint and the exported encoder keep timm's keys exactly.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _init_encoder(self) -> None:
        self.apply(_init_weights)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's weights under timm ``vit_*_patch16_224`` key names (no head)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.ENCODER_PREFIXES)}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on weight matrices, none on biases, norms and the cls/mask tokens.

        The fixed position embeddings (``requires_grad=False``) are left out.
        """
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            exempt = p.ndim <= 1 or name in ("cls_token", "mask_token")
            (no_decay if exempt else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def patchify(self, imgs: Tensor) -> Tensor:
        """[B, 3, H, W] → [B, N, p·p·3], patches row-major, pixels (row, col, channel) inside a patch."""
        p = self.cfg.patch
        b, c, h, w = imgs.shape
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor) -> Tensor:
        """Inverse of ``patchify`` for square images: [B, N, p·p·3] → [B, 3, H, W]."""
        p, b = self.cfg.patch, x.shape[0]
        g = int(round(x.shape[1] ** 0.5))
        x = x.reshape(b, g, g, p, p, 3)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, 3, g * p, g * p)

    def embed_patches(self, x: Tensor) -> Tensor:
        """Patch embedding plus fixed position embedding of every patch: [B, 3, H, W] → [B, N, D]."""
        if x.shape[-2:] != (self.cfg.img_size, self.cfg.img_size):
            raise ValueError(f"expected {self.cfg.img_size}x{self.cfg.img_size} images, got "
                             f"{tuple(x.shape[-2:])}; create the model with img_size={x.shape[-1]}")
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def forward_encoder(self, tokens: Tensor, ids_keep: Tensor) -> Tensor:
        """Encode the kept tokens: [B, N, D] embeddings, [B, K] indices → normed [B, 1 + K, D] (CLS first)."""
        x = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def target_patches(self, x_norm: Tensor, norm_pix_loss: bool) -> Tensor:
        """Pixel targets [B, N, p·p·3] of the normalised input, standardised per patch if ``norm_pix_loss``."""
        target = self.patchify(x_norm.float())
        if norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    @staticmethod
    def forward_loss(pred: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-pixel MSE averaged over the targets of each sample, then over the batch (weighted if given).

        ``pred``, ``target``: [B, R, p·p·3]. Returns (loss scalar, per-sample loss [B], detached).
        """
        per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2))
        if sample_weight is None:
            loss = per_sample.mean()
        else:
            loss = (per_sample * sample_weight.to(per_sample.dtype)).mean()
        return loss, per_sample.detach()

    def prepare(self, imgs: Tensor, x01: Tensor | None, need_x01: bool) -> tuple[Tensor, Tensor | None]:
        """uint8 or normalised float images [B, 3, H, W] → (normalised, [0, 1] image or None if not needed)."""
        if imgs.dtype == torch.uint8:
            return normalize(imgs, self.pixel_mean, self.pixel_std)
        if x01 is None and need_x01:
            x01 = unnormalize(imgs, self.pixel_mean, self.pixel_std)
        return imgs, x01


class MaskedAutoencoder(MaskedViT):
    """MAE baseline: random masking (m = 0.75), self-attention decoder over all tokens, loss on masked patches."""

    def __init__(self, cfg: ViTConfig, mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self._build_encoder(cfg)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.num_keep = int(cfg.num_patches * (1 - mask_ratio) + 1e-9)
        dw = cfg.decoder_width
        self.decoder_embed = nn.Linear(cfg.width, dw)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        grid = cfg.img_size // cfg.patch
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(dw, grid, cls_token=True), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(dw, cfg.decoder_heads, cfg.mlp_ratio)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dw, eps=1e-6)
        self.decoder_pred = nn.Linear(dw, cfg.patch ** 2 * 3)
        self._init_encoder()
        nn.init.normal_(self.mask_token, std=0.02)

    def random_masking(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Uniformly random masking → (ids_keep [B, K], ids_restore [B, N] which un-shuffles [kept, masked])."""
        noise = torch.rand(batch, self.cfg.num_patches, device=device)
        ids_shuffle = noise.argsort(dim=1)
        return ids_shuffle[:, :self.num_keep], ids_shuffle.argsort(dim=1)

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Encoder output [B, 1 + K, D] → predicted pixels of every patch [B, N, p·p·3]."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        masks = self.mask_token.expand(b, n - (x.shape[1] - 1), -1).to(x.dtype)
        patches = torch.cat([x[:, 1:], masks], dim=1)
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, imgs: Tensor, progress: float | Tensor = 0.0, x01: Tensor | None = None,
                sample_weight: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One MAE step. Returns (loss, pred [B, N, p·p·3] of all patches, info).

        ``progress`` is accepted for a uniform interface and ignored. ``info``: ``ids_encode`` [B, K],
        ``ids_target`` [B, N − K] (the masked patches), ``loss_per_sample`` [B].
        """
        x_norm, _ = self.prepare(imgs, x01, need_x01=False)
        tokens = self.embed_patches(x_norm)
        ids_keep, ids_restore = self.random_masking(x_norm.shape[0], x_norm.device)
        pred = self.forward_decoder(self.forward_encoder(tokens, ids_keep), ids_restore)
        ids_masked = ids_restore.argsort(dim=1)[:, self.num_keep:]
        target = self.target_patches(x_norm, self.norm_pix_loss)
        index = ids_masked[..., None].expand(-1, -1, pred.shape[-1])
        loss, per_sample = self.forward_loss(pred.gather(1, index), target.gather(1, index), sample_weight)
        return loss, pred, {"ids_encode": ids_keep, "ids_target": ids_masked, "loss_per_sample": per_sample}


class SelectiveMAE(MaskedViT):
    """SelectiveMAE: PSTS picks K patches to encode and R to reconstruct; a cross-attention decoder predicts them."""

    def __init__(self, cfg: ViTConfig, mask_ratio: float = 0.85, recon_ratio: float = 0.25, score: str = "hog",
                 target: str = "top", decoder_self_attn: bool = False, norm_pix_loss: bool = True) -> None:
        super().__init__()
        if score not in selection.SCORES:
            raise ValueError(f"unknown score {score!r}; valid: {', '.join(selection.SCORES)}")
        if target not in selection.TARGET_CHOICES:
            raise ValueError(f"unknown target choice {target!r}; valid: {', '.join(selection.TARGET_CHOICES)}")
        self._build_encoder(cfg)
        self.num_encode, self.num_target = selection.token_budget(cfg.num_patches, mask_ratio, recon_ratio)
        self.score, self.target, self.norm_pix_loss = score, target, norm_pix_loss
        dw = cfg.decoder_width
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        grid = cfg.img_size // cfg.patch
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(dw, grid, cls_token=False), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            CrossBlock(dw, cfg.width, cfg.decoder_heads, cfg.mlp_ratio, decoder_self_attn)
            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dw, eps=1e-6)
        self.decoder_pred = nn.Linear(dw, cfg.patch ** 2 * 3)
        self._init_encoder()
        nn.init.normal_(self.mask_token, std=0.02)

    @torch.no_grad()
    def patch_scores(self, x01: Tensor) -> Tensor:
        """Standardised HOG score per patch: [B, 3, H, W] in [0, 1] → [B, N]."""
        return selection.standardize_scores(selection.hog_patch_scores(x01, self.cfg.patch))

    def select(self, x01: Tensor | None, tokens: Tensor, progress: float | Tensor) -> selection.Selection:
        """PSTS on this batch: encoder and target indices from the scores and the input embeddings [B, N, D]."""
        b, n, _ = tokens.shape
        scores = selection.uniform_scores(b, n, tokens.device) if self.score == "uniform" else self.patch_scores(x01)
        return selection.select_tokens(scores, tokens.detach(), self.num_encode, self.num_target, progress,
                                       self.target)

    def forward_decoder(self, latent: Tensor, ids_target: Tensor) -> Tensor:
        """Encoder output [B, 1 + K, D] and target indices [B, R] → predicted pixels [B, R, p·p·3]."""
        b, r = ids_target.shape
        pos = self.decoder_pos_embed.expand(b, -1, -1)
        x = self.mask_token + pos.gather(1, ids_target[..., None].expand(-1, -1, pos.shape[-1]))
        for block in self.decoder_blocks:
            x = block(x, latent)
        return self.decoder_pred(self.decoder_norm(x))

    def forward(self, imgs: Tensor, progress: float | Tensor = 0.0, x01: Tensor | None = None,
                sample_weight: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One SelectiveMAE step. ``progress`` ∈ [0, 1] (step / total steps) sets the PSTS stage.

        Returns (loss, pred [B, R, p·p·3] for ``info["ids_target"]``, info) with ``ids_encode`` [B, K],
        ``ids_target`` [B, R], ``modes`` [B] (0 near, 1 far, 2 random), ``loss_per_sample`` [B].
        """
        x_norm, x01 = self.prepare(imgs, x01, need_x01=self.score == "hog")
        tokens = self.embed_patches(x_norm)
        sel = self.select(x01, tokens, progress)
        pred = self.forward_decoder(self.forward_encoder(tokens, sel.ids_encode), sel.ids_target)
        target = self.target_patches(x_norm, self.norm_pix_loss)
        target = target.gather(1, sel.ids_target[..., None].expand(-1, -1, target.shape[-1]))
        loss, per_sample = self.forward_loss(pred, target, sample_weight)
        info = {"ids_encode": sel.ids_encode, "ids_target": sel.ids_target, "modes": sel.modes,
                "loss_per_sample": per_sample}
        return loss, pred, info


METHODS = {"selectivemae": SelectiveMAE, "mae": MaskedAutoencoder}


def create_model(method: str, model: str, **kw) -> SelectiveMAE | MaskedAutoencoder:
    """Build a model by name: ``method`` in {selectivemae, mae}, ``model`` in {vit_tiny, vit_small, ...}.

    Keyword arguments that are ``ViTConfig`` fields (``img_size``, ``decoder_depth``, ...) override the size's
    shape; the rest go to the method's constructor (``mask_ratio``, ``recon_ratio``, ``score``, ``target``,
    ``decoder_self_attn``, ``norm_pix_loss``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if model not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODEL_CONFIGS)}")
    fields = set(ViTConfig.__dataclass_fields__)
    cfg = replace(MODEL_CONFIGS[model], **{k: v for k, v in kw.items() if k in fields})
    return METHODS[method](cfg, **{k: v for k, v in kw.items() if k not in fields})
