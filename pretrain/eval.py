"""Frozen-encoder evaluation on a labelled scene-classification set: kNN and a linear probe.

Data: an ImageFolder-style layout, one folder per class (AID, NWPU-RESISC45, UC Merced, PatternNet …). When
``DIR`` holds a single folder and no images, it is descended into (``NWPU-RESISC45/``,
``UCMerced_LandUse/Images/``), so the unpacked archive's top folder works as ``--data``. Split files list one
image per line, either by path relative to the class root (``airport/airport_001.jpg``) or by file name
(TorchGeo's split files); without split files, each class is split at random (seeded) into
``train_fraction`` / the rest.

Features: every image is resized whole to 224×224 (bicubic; scene images are not cropped, so nothing of the
scene is lost), normalised with the ImageNet mean/std, and encoded with all 196 patches visible. The feature
is the **mean of the patch tokens** after the encoder's final norm (``pool="mean"``, the default: MAE-style
pretraining trains no objective on the CLS token), or the CLS token (``pool="cls"``).

- kNN (DINO's weighted kNN): cosine similarity to the ``k`` = 20 nearest training features, each neighbour
  votes for its class with weight exp(similarity / 0.07); the class with the largest vote wins.
- Linear probe: multinomial logistic regression on standardised features (mean/std of the training
  features), full-batch L-BFGS. Its L2 weight decay is chosen from ``PROBE_WEIGHT_DECAYS`` by top-1 on a
  stratified validation split (20 %) carved from the training split, then the probe is refitted on the
  whole training split. The test split is used once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pretrain.checkpoint import load_checkpoint
from pretrain.model import MODEL_CONFIGS, MaskedViT, create_model, normalize
from rs4m.codec import IMAGE_SUFFIXES
from rs4m.errors import ConfigError

KNN_K = 20
KNN_TEMPERATURE = 0.07
PROBE_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PROBE_DEFAULT_WEIGHT_DECAY = 1e-4  # when the training split is too small to carve a validation split
PROBE_VAL_FRACTION = 0.2
POOLS = ("mean", "cls")


# ----------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LabelledImages:
    """Images of a class-folder dataset: ``paths`` relative to ``root``, ``labels`` [M] int64 into ``classes``."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledImages:
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledImages(self.root, tuple(self.paths[i] for i in idx), self.labels[idx], self.classes)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def class_root(root: Path) -> Path:
    """The folder that holds the class folders: ``root``, or its single subfolder while it has no images."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a folder; give a folder with one subfolder per class")
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and not any(_is_image(p) for p in entries):
            root = dirs[0]
        else:
            return root


def scan_image_folder(root: Path) -> LabelledImages:
    """Every image under ``class_root(root)/<class>/`` (sorted); raise if fewer than two classes have images."""
    base = class_root(root)
    classes: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if _is_image(p))
        if not files:
            continue
        for f in files:
            paths.append(f.relative_to(base).as_posix())
            labels.append(len(classes))
        classes.append(folder.name)
    if len(classes) < 2:
        raise ConfigError(f"{base} has {len(classes)} class folder(s) with images; need at least 2 "
                          "(layout: DIR/<class>/<image>)")
    return LabelledImages(base, tuple(paths), np.asarray(labels, dtype=np.int64), tuple(classes))


def read_split(images: LabelledImages, split_file: Path) -> np.ndarray:
    """Indices [S] of the images a split file lists (by relative path or by file name), in file order."""
    lines = [ln.strip() for ln in Path(split_file).read_text().splitlines()]
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    by_path = {p: i for i, p in enumerate(images.paths)}
    by_name: dict[str, int] = {}
    for i, p in enumerate(images.paths):
        by_name.setdefault(p.rsplit("/", 1)[-1], i)
    missing = [n for n in names if n not in by_path and n not in by_name]
    if missing:
        raise ConfigError(f"{split_file}: {len(missing)} listed image(s) not found under {images.root}, "
                          f"e.g. {missing[0]!r}")
    return np.asarray([by_path.get(n, by_name.get(n)) for n in names], dtype=np.int64)


def stratified_split(labels: np.ndarray, first_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class at random: ``round(first_fraction · n_c)`` (at least 1, and at least 1 left when
    the class has two or more) go to the first part. Returns (first, second), each sorted."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = min(max(1, int(round(first_fraction * len(idx)))), max(1, len(idx) - 1))
        first.append(idx[:n])
        second.append(idx[n:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def load_image(path: Path, size: int = 224) -> Tensor:
    """An image file → uint8 [3, size, size]: RGB, resized whole (bicubic)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


class ImageListDataset(torch.utils.data.Dataset):
    """``dataset[i]`` → uint8 [3, size, size] of ``images.paths[i]``."""

    def __init__(self, images: LabelledImages, size: int = 224) -> None:
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, i: int) -> Tensor:
        return load_image(self.images.root / self.images.paths[i], self.size)


# ----------------------------------------------------------------------------------------------- encoder


def _model_name(state: dict[str, Tensor], hint: str | None) -> str:
    """The MODEL_CONFIGS name of an encoder state dict: ``hint`` if given, else matched on width and depth."""
    if hint:
        if hint not in MODEL_CONFIGS:
            raise ConfigError(f"checkpoint names model {hint!r}; known: {', '.join(MODEL_CONFIGS)}")
        return hint
    width = state["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for name, cfg in MODEL_CONFIGS.items():
        if (cfg.width, cfg.depth) == (width, depth):
            return name
    raise ConfigError(f"no known model has width {width} and depth {depth}; known: {', '.join(MODEL_CONFIGS)}")


def read_encoder_state(checkpoint: Path) -> tuple[dict[str, Tensor], str | None]:
    """Encoder weights (timm keys) and the model name if recorded, from a training checkpoint (``.pt``) or an
    exported encoder (``.safetensors``). Neither path unpickles code."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist")
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        return state, meta.get("model") or None
    ckpt = load_checkpoint(checkpoint)  # one-line OutputError on anything that is not a checkpoint
    state = {k: v for k, v in ckpt["model"].items() if k.startswith(MaskedViT.ENCODER_PREFIXES)}
    return state, (ckpt.get("config") or {}).get("model") or None


def load_encoder(checkpoint: Path) -> tuple[MaskedViT, str]:
    """A model whose encoder holds the checkpoint's weights (decoder unused), in eval mode; and its size name."""
    state, hint = read_encoder_state(checkpoint)
    if "cls_token" not in state:
        raise ConfigError(f"{checkpoint} holds no ViT encoder (no 'cls_token' key)")
    name = _model_name(state, hint)
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    model = create_model("mae", name, img_size=grid * MODEL_CONFIGS[name].patch)
    expected = set(model.encoder_state_dict())
    if set(state) != expected:
        diff = sorted(set(state) ^ expected)
        raise ConfigError(f"{checkpoint}: encoder keys differ from {name}'s, e.g. {diff[:3]}")
    model.load_state_dict(state, strict=False)
    return model.eval(), name


def random_encoder(model: str, seed: int = 0) -> MaskedViT:
    """A randomly initialised encoder of size ``model`` (the baseline a pretrained one must beat)."""
    torch.manual_seed(seed)
    return create_model("mae", model).eval()


@torch.no_grad()
def encode(model: MaskedViT, imgs: Tensor, pool: str = "mean") -> Tensor:
    """uint8 [B, 3, H, W] → features [B, D]: all patches encoded; mean of patch tokens or the CLS token."""
    x, _ = normalize(imgs)
    tokens = model.embed_patches(x)
    ids = torch.arange(tokens.shape[1], device=x.device).expand(tokens.shape[0], -1)
    out = model.forward_encoder(tokens, ids)
    return out[:, 1:].mean(dim=1) if pool == "mean" else out[:, 0]


def extract_features(model: MaskedViT, images: LabelledImages, pool: str = "mean", batch_size: int = 64,
                     workers: int = 0, device: str | torch.device = "cpu") -> Tensor:
    """Features [M, D] float32 (on the CPU) of every image, in order."""
    if pool not in POOLS:
        raise ConfigError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    device = torch.device(device)
    model = model.to(device).eval()
    size = model.cfg.img_size
    loader = torch.utils.data.DataLoader(ImageListDataset(images, size), batch_size=batch_size,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    feats = [encode(model, batch.to(device, non_blocking=True), pool).float().cpu() for batch in loader]
    return torch.cat(feats)


# ----------------------------------------------------------------------------------------------- kNN


@torch.no_grad()
def knn_predict(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, num_classes: int,
                k: int = KNN_K, temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> Tensor:
    """Weighted kNN: train [M, D] with labels [M], test [T, D] → predicted labels [T].

    Cosine similarity; the ``k`` nearest vote with weight exp(sim / temperature).
    """
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, train.shape[0])
    preds = []
    for part in F.normalize(test_feats.float(), dim=1).split(chunk):
        sim, idx = (part @ train.T).topk(k, dim=1)
        votes = torch.zeros(part.shape[0], num_classes, dtype=sim.dtype)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def top1(pred: Tensor, labels: Tensor) -> float:
    """Fraction of ``pred`` [T] equal to ``labels`` [T]."""
    return float((pred == labels).float().mean())


# ----------------------------------------------------------------------------------------------- linear probe


@dataclass(frozen=True)
class LinearProbe:
    """Standardisation ``mean``/``std`` [D] and the logistic-regression ``weight`` [C, D], ``bias`` [C]."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def predict(self, feats: Tensor) -> Tensor:
        """Features [T, D] → predicted labels [T]."""
        x = (feats.float() - self.mean) / self.std
        return (x @ self.weight.T + self.bias).argmax(dim=1)


def fit_linear_probe(feats: Tensor, labels: Tensor, num_classes: int, weight_decay: float,
                     max_iter: int = 200) -> LinearProbe:
    """Multinomial logistic regression with L2 ``weight_decay`` on standardised features [M, D], labels [M]."""
    feats = feats.float()
    mean, std = feats.mean(dim=0), feats.std(dim=0, unbiased=False).clamp_min(1e-6)
    x = (feats - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


def choose_weight_decay(feats: Tensor, labels: Tensor, num_classes: int, seed: int = 0,
                        grid: Sequence[float] = PROBE_WEIGHT_DECAYS) -> tuple[float, float | None]:
    """(weight decay, validation top-1) picked on a stratified validation split of the training features.

    Without two samples in every class there is no validation split: (``PROBE_DEFAULT_WEIGHT_DECAY``, None).
    """
    counts = np.bincount(labels.numpy(), minlength=num_classes)
    if counts[counts > 0].min() < 2:
        return PROBE_DEFAULT_WEIGHT_DECAY, None
    fit_np, val_np = stratified_split(labels.numpy(), 1.0 - PROBE_VAL_FRACTION, seed)
    fit_idx, val_idx = torch.from_numpy(fit_np), torch.from_numpy(val_np)
    scores = []
    for wd in grid:
        probe = fit_linear_probe(feats[fit_idx], labels[fit_idx], num_classes, wd)
        scores.append(top1(probe.predict(feats[val_idx]), labels[val_idx]))
    best = int(np.argmax(scores))  # first of equals: the weakest decay that reaches the best accuracy
    return float(grid[best]), scores[best]


# ----------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation; field names equal the ``rs4m eval`` flags."""

    task: str
    data: Path
    checkpoint: Path | None = None
    random_init: str | None = None
    train_split: Path | None = None
    test_split: Path | None = None
    train_fraction: float = 0.5
    pool: str = "mean"
    k: int = KNN_K
    temperature: float = KNN_TEMPERATURE
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    device: str = "cpu"


def split_images(cfg: EvalConfig) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) images: from the split files, or a seeded stratified split of everything."""
    images = scan_image_folder(cfg.data)
    if (cfg.train_split is None) != (cfg.test_split is None):
        raise ConfigError("give both --train-split and --test-split, or neither")
    if cfg.train_split is not None and cfg.test_split is not None:
        train_idx, test_idx = read_split(images, cfg.train_split), read_split(images, cfg.test_split)
        if np.intersect1d(train_idx, test_idx).size:
            raise ConfigError(f"{cfg.train_split} and {cfg.test_split} share images")
    else:
        if not 0.0 < cfg.train_fraction < 1.0:
            raise ConfigError(f"--train-fraction must lie in (0, 1), got {cfg.train_fraction}")
        train_idx, test_idx = stratified_split(images.labels, cfg.train_fraction, cfg.seed)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ConfigError(f"empty split: {len(train_idx)} training and {len(test_idx)} test images")
    return images.subset(train_idx), images.subset(test_idx)


def run_eval(cfg: EvalConfig, model: MaskedViT | None = None) -> dict:
    """Encode the train and test images, run ``cfg.task`` (knn or linear), return the figures as a dict."""
    if cfg.task not in ("knn", "linear"):
        raise ConfigError(f"unknown task {cfg.task!r}; valid: knn, linear")
    train, test = split_images(cfg)
    if model is not None:
        name = next((n for n, c in MODEL_CONFIGS.items() if c == model.cfg), "custom")
    elif cfg.random_init:
        name, model = cfg.random_init, random_encoder(cfg.random_init, cfg.seed)
    elif cfg.checkpoint is not None:
        model, name = load_encoder(cfg.checkpoint)
    else:
        raise ConfigError("give --checkpoint CKPT (or --random-init MODEL for the untrained baseline)")
    feats = [extract_features(model, part, cfg.pool, cfg.batch_size, cfg.workers, cfg.device)
             for part in (train, test)]
    y_train, y_test = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    classes = len(train.classes)
    result = {"task": cfg.task, "model": name, "pool": cfg.pool, "classes": classes, "train_images": len(y_train),
              "test_images": len(y_test), "chance_top1": 1.0 / classes,
              "majority_top1": float(np.bincount(test.labels).max() / len(test.labels))}
    if cfg.task == "knn":
        pred = knn_predict(feats[0], y_train, feats[1], classes, cfg.k, cfg.temperature)
        result.update(k=min(cfg.k, len(y_train)), temperature=cfg.temperature)
    else:
        wd, val = choose_weight_decay(feats[0], y_train, classes, cfg.seed)
        pred = fit_linear_probe(feats[0], y_train, classes, wd).predict(feats[1])
        result.update(weight_decay=wd, val_top1=val)
    result["top1"] = top1(pred, y_test)
    return result
