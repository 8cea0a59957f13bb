"""The images of one benchmark given to ``rs4m leakage --against NAME=PATH``.

NAME decides how PATH is read, and nothing else does:

- NAME is a registered adapter's name (``rs4m sources``): PATH is that dataset as released, and the benchmark
  is exactly the images the adapter lists under its test splits (``test_splits``; every image it lists where
  the dataset has no test split: UC Merced, WHU-RS19, PatternNet, ... are evaluated on random splits). Labels,
  masks and training images beside them are never taken; archive members are read in place.
- any other NAME: PATH is a folder, and every file under it with an image suffix is a benchmark image.

Either way an image whose real path lies outside PATH (reached through a symlink out of it) is never read: it
becomes a problem row, like an image that cannot be decoded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from rs4m.codec import IMAGE_SUFFIXES
from rs4m.errors import ConfigError
from rs4m.sources import SceneRef

OUTSIDE = "its real path lies outside the benchmark folder (a symlink out of it); not followed"
BROKEN = "a broken symlink or a symlink loop; not followed"
#: what a benchmark NAME may hold: it names the benchmark in leakage.parquet and in ``NAME/PATH`` problem lines
NAME_PATTERN = re.compile(r"[\w.+-]+")


def check_name(name: str) -> str:
    """``name`` when it can name a benchmark (letters, digits, ``_ . + -``), else a :class:`ConfigError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"--against {name!r}=...: a benchmark NAME is letters, digits and _ . + - only "
                          "(it names the benchmark in leakage.parquet and in NAME/PATH problem lines)")
    from rs4m.sources import list_sources

    like = [cls.name for cls in list_sources() if cls.name.lower() == name.lower() and cls.name != name]
    if like:  # a folder read whole would take the dataset's masks and training images as benchmark images
        raise ConfigError(f"--against {name}=...: {name!r} is the adapter {like[0]!r} in other letters; write "
                          f"{like[0]}=PATH for its test split, or another name for a folder of images")
    return name


@dataclass(frozen=True)
class BenchmarkImage:
    """One benchmark image: ``rel`` names it in ``leakage.parquet``; ``read()`` gives ``uint8 [H, W, 3]``."""

    rel: str
    read: Callable[[], np.ndarray]


def adapter_mode(name: str) -> bool:
    """True when ``--against NAME=PATH`` names a registered adapter (its test splits are read)."""
    from rs4m.sources import list_sources

    return name in {cls.name for cls in list_sources()}


def benchmark_images(name: str, path: Path, problems: list[dict]) -> list[BenchmarkImage]:
    """The images of benchmark ``name`` at ``path`` (see the module docstring for which), sorted by ``rel``;
    the files that are skipped are appended to ``problems`` as ``{benchmark, path, reason}`` rows."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"benchmark {name}: folder {root} does not exist; pass --against NAME=PATH")
    return _adapter_images(name, root, problems) if adapter_mode(name) else _folder_images(name, root, problems)


def read_image_file(path: Path) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels of an image file (Pillow; palette, grey and alpha become RGB)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def inside(root: Path, rel: str) -> bool:
    """True when ``root / rel`` (or, for an archive member, the archive holding it) really lies under ``root``
    once every symlink on the way is followed."""
    real_root, candidate = root.resolve(), root / rel
    while not os.path.lexists(candidate) and candidate != root:
        candidate = candidate.parent
    try:
        return candidate.resolve(strict=True).is_relative_to(real_root)
    except (OSError, RuntimeError):  # a broken link or a loop (RuntimeError before Python 3.13): nothing to read
        return False


UNLISTED = "folder cannot be listed (permission denied or unreadable); the images in it are not checked"


def _named_like_images(name: str, root: Path, problems: list[dict]) -> list[Path]:
    """Every entry under ``root`` with an image suffix (symlinked folders are not entered), sorted; a folder
    that cannot be listed is a problem row, never silently left out."""
    def unlisted(err: OSError) -> None:
        where = Path(err.filename) if err.filename else root
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else "."
        problems.append({"benchmark": name, "path": rel, "reason": f"{UNLISTED}: {err.strerror or err}"})

    found = []
    for folder, dirs, files in os.walk(root, onerror=unlisted):
        found += [Path(folder, entry) for entry in dirs + files if Path(entry).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _folder_images(name: str, root: Path, problems: list[dict]) -> list[BenchmarkImage]:
    images = []
    for file in _named_like_images(name, root, problems):
        rel = file.relative_to(root).as_posix()
        if not os.path.exists(file):
            problems.append({"benchmark": name, "path": rel, "reason": BROKEN})
        elif not inside(root, rel):
            problems.append({"benchmark": name, "path": rel, "reason": OUTSIDE})
        elif file.is_file():
            images.append(BenchmarkImage(rel, partial(read_image_file, file)))
    if not images:
        raise ConfigError(f"benchmark {name}: no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}; "
                          f"pass --against NAME=PATH with the benchmark's image folder")
    return images


def _adapter_images(name: str, root: Path, problems: list[dict]) -> list[BenchmarkImage]:
    from rs4m.sources import ScanProblem, get_source

    cls = get_source(name)
    adapter, wanted = cls(), set(cls.test_splits)
    images, listed = [], 0
    for item in adapter.scenes(root):
        if isinstance(item, ScanProblem):
            if item.path != ".":  # "." is "no image at all", said below in one line
                problems.append({"benchmark": name, "path": item.path, "reason": item.reason})
            continue
        listed += 1
        if wanted and item.split not in wanted:
            continue
        if not all(inside(root, rel) for rel in (item.band_paths or (item.scene_path,))):
            problems.append({"benchmark": name, "path": item.scene_path, "reason": OUTSIDE})
            continue
        images.append(BenchmarkImage(item.scene_path, partial(_read_scene, root, item, cls.grey)))
    if not images:
        hint = (f"point --against {name}=PATH at the dataset's release folder, or give the folder another NAME "
                f"to take every image in it")
        if not listed:
            raise ConfigError(f"benchmark {name}: no {cls.title or name} images under {root}; {hint}")
        raise ConfigError(f"benchmark {name}: {listed} {cls.title or name} images under {root}, none in its test "
                          f"split(s) {', '.join(cls.test_splits)}; {hint}")
    return images


def _read_scene(root: Path, ref: SceneRef, grey: str) -> np.ndarray:
    from rs4m.raster import open_scene

    with open_scene(root, ref, grey=grey) as scene:
        return scene.read_window(0, 0, scene.info.width, scene.info.height)[0]
