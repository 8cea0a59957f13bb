"""Frozen-encoder evaluation: class-folder data and splits, checkpoint loading, kNN, linear probe, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from pretrain import eval as ev
from pretrain.model import create_model
from rs4m.cli import get_cli
from rs4m.errors import ConfigError


def pattern(kind: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A noisy image of one of four visually distinct kinds: red, green, stripes, checkerboard."""
    img = rng.normal(110, 20, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    if kind == 0:
        img[..., 0] += 100
    elif kind == 1:
        img[..., 1] += 100
    elif kind == 2:
        img += 90 * ((yy // 8) % 2)[..., None]
    else:
        img += 90 * (((yy // 16) + (xx // 16)) % 2)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image_folder(root: Path, per_class: int, seed: int = 0, shuffle_labels: bool = False) -> Path:
    """``root/scenes/<class>/<class>_NNN.png`` with one pattern kind per class (or kinds assigned at random)."""
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.arange(4), per_class)
    folders = rng.permutation(kinds) if shuffle_labels else kinds
    for i, (kind, cls) in enumerate(zip(kinds, folders)):
        folder = root / "scenes" / f"class{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern(int(kind), rng)).save(folder / f"class{cls}_{i:03d}.png")
    return root


def clusters(n_per_class: int, classes: int, dim: int, separable: bool, seed: int) -> tuple[torch.Tensor, ...]:
    """Gaussian features [n·C, D] around one random centre per class (or labels unrelated to the features)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = torch.randn(classes, dim, generator=g) * 3
    feats = centres[labels] + torch.randn(len(labels), dim, generator=g)
    if not separable:
        labels = labels[torch.randperm(len(labels), generator=g)]
    return feats, labels


# ----------------------------------------------------------------------------------------------- data


def test_image_folder_descends_and_splits(tmp_path):
    root = write_image_folder(tmp_path / "ds", per_class=5)
    images = ev.scan_image_folder(root)
    assert images.root == root / "scenes" and images.classes == ("class0", "class1", "class2", "class3")
    assert len(images.paths) == 20 and np.bincount(images.labels).tolist() == [5, 5, 5, 5]
    first, second = ev.stratified_split(images.labels, 0.4, seed=0)
    assert np.intersect1d(first, second).size == 0 and len(first) + len(second) == 20
    assert np.bincount(images.labels[first]).tolist() == [2, 2, 2, 2]
    again, _ = ev.stratified_split(images.labels, 0.4, seed=0)
    other, _ = ev.stratified_split(images.labels, 0.4, seed=1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_split_files_by_path_or_name(tmp_path):
    images = ev.scan_image_folder(write_image_folder(tmp_path / "ds", per_class=3))
    split = tmp_path / "split.txt"
    split.write_text(f"# comment\n{images.paths[4]}\n{images.paths[0].split('/')[-1]}\n\n")
    assert ev.read_split(images, split).tolist() == [4, 0]
    split.write_text("class9/nope.png\n")
    with pytest.raises(ConfigError, match="nope.png"):
        ev.read_split(images, split)


def test_torchgeo_resisc45_layout_and_split_files(shared_data):
    root = shared_data / "layouts" / "resisc45"
    images = ev.scan_image_folder(root)
    assert images.root.name == "NWPU-RESISC45" and "airport" in images.classes
    train = ev.read_split(images, root / "resisc45-train.txt")
    assert sorted(images.paths[i] for i in train) == sorted(images.paths)  # file names found in class folders
    # The fake layout's train and test files list the same images: a leak the evaluation refuses.
    cfg = ev.EvalConfig(task="knn", data=root, random_init="vit_test", train_split=root / "resisc45-train.txt",
                        test_split=root / "resisc45-test.txt")
    with pytest.raises(ConfigError, match="share images"):
        ev.split_images(cfg)


# ----------------------------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize("separable", [True, False])
def test_knn_far_above_chance_only_when_labels_follow_features(separable):
    feats, labels = clusters(100, 5, 32, separable, seed=0)
    train, test = torch.arange(0, 500, 2), torch.arange(1, 500, 2)
    acc = ev.top1(ev.knn_predict(feats[train], labels[train], feats[test], 5), labels[test])
    if separable:
        assert acc > 0.95
    else:
        assert abs(acc - 0.2) < 0.08


def test_knn_votes_are_similarity_weighted():
    # One very close neighbour of class 1 outvotes two distant ones of class 0 with a low temperature.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.05]])
    assert ev.knn_predict(train, labels, query, 2, k=3, temperature=0.07).tolist() == [1]
    assert ev.knn_predict(train, labels, query, 2, k=3, temperature=100.0).tolist() == [0]


@pytest.mark.parametrize("separable", [True, False])
def test_linear_probe_chooses_decay_on_validation(separable):
    feats, labels = clusters(60, 4, 16, separable, seed=1)
    train, test = torch.arange(0, 240, 2), torch.arange(1, 240, 2)
    wd, val = ev.choose_weight_decay(feats[train], labels[train], 4)
    assert wd in ev.PROBE_WEIGHT_DECAYS and val is not None
    acc = ev.top1(ev.fit_linear_probe(feats[train], labels[train], 4, wd).predict(feats[test]), labels[test])
    if separable:
        assert acc > 0.95 and val > 0.9
    else:
        assert abs(acc - 0.25) < 0.12


# ----------------------------------------------------------------------------------------------- encoders


def test_checkpoint_and_safetensors_load_the_same_encoder(tmp_path):
    torch.manual_seed(3)
    model = create_model("selectivemae", "vit_test")
    torch.save({"model": model.state_dict(), "config": {"model": "vit_test"}, "step": 5}, tmp_path / "c.pt")
    save_file({k: v.contiguous() for k, v in model.encoder_state_dict().items()}, tmp_path / "e.safetensors")
    from_ckpt, name = ev.load_encoder(tmp_path / "c.pt")
    from_st, name_st = ev.load_encoder(tmp_path / "e.safetensors")  # no metadata: size from the shapes
    assert name == name_st == "vit_test"
    imgs = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    ref = ev.encode(model.eval(), imgs)
    assert ref.shape == (2, 192)
    assert torch.equal(ev.encode(from_ckpt, imgs), ref) and torch.equal(ev.encode(from_st, imgs), ref)
    assert not torch.equal(ev.encode(ev.random_encoder("vit_test"), imgs), ref)


def test_wrong_keys_are_a_clear_error(tmp_path):
    save_file({"cls_token": torch.zeros(1, 1, 192), "pos_embed": torch.zeros(1, 197, 192),
               "blocks.0.x": torch.zeros(1), "blocks.1.x": torch.zeros(1), "blocks.2.x": torch.zeros(1),
               "blocks.3.x": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="keys differ"):
        ev.load_encoder(tmp_path / "bad.safetensors")


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    from rs4m.errors import OutputError

    (tmp_path / "junk.pt").write_bytes(b"these bytes are not a checkpoint")
    with pytest.raises(OutputError, match="cannot be read .* not a checkpoint of rs4m pretrain") as err:
        ev.load_encoder(tmp_path / "junk.pt")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shuffle_labels", [False, True])
def test_end_to_end_knn_on_images(tmp_path, shuffle_labels):
    root = write_image_folder(tmp_path / "ds", per_class=16, shuffle_labels=shuffle_labels)
    cfg = ev.EvalConfig(task="knn", data=root, random_init="vit_test", batch_size=32)
    result = ev.run_eval(cfg)
    assert (result["train_images"], result["test_images"], result["classes"]) == (32, 32, 4)
    if shuffle_labels:
        assert result["top1"] < 0.5
    else:
        assert result["top1"] > 0.9


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_linear_json(tmp_path):
    root = write_image_folder(tmp_path / "ds", per_class=10)
    torch.manual_seed(0)
    model = create_model("mae", "vit_test")
    save_file({k: v.contiguous() for k, v in model.encoder_state_dict().items()}, tmp_path / "e.safetensors",
              metadata={"model": "vit_test"})
    args = ["eval", "linear", "--checkpoint", str(tmp_path / "e.safetensors"), "--data", str(root),
            "--device", "cpu", "--json"]
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == "linear" and out["model"] == "vit_test" and out["top1"] > 0.9
    assert out["weight_decay"] in ev.PROBE_WEIGHT_DECAYS


def test_cli_needs_a_checkpoint(tmp_path):
    root = write_image_folder(tmp_path / "ds", per_class=2)
    result = CliRunner().invoke(get_cli(), ["eval", "knn", "--data", str(root)])
    assert result.exit_code == 2 and "--checkpoint" in result.output


def test_cli_without_torch_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    result = CliRunner().invoke(get_cli(), ["eval", "knn", "--data", str(tmp_path), "--random-init", "vit_test"])
    assert result.exit_code != 0
    assert "pip install 'rs4m[train]'" in result.output
