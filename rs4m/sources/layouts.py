"""Walking a dataset folder and the archives it ships, and matching image patterns: the shared core of adapters.

**Patterns** are globs on POSIX paths relative to the source root, matched case-insensitively: ``*`` and ``?``
within one path component, ``[abc]`` / ``[!abc]`` a character class, ``**`` any number of whole components
(none included: ``**/images/*.png`` matches ``images/a.png`` and ``train/x/images/a.png``), ``{a,b}``
alternatives (which may hold ``/`` and nest).

**Archives** (files named .zip, .tar, .tar.gz, .tgz, ...: :data:`rs4m.archive.CANDIDATE_SUFFIXES`) are
listed, never extracted; what kind of archive a file is comes from its bytes (:mod:`rs4m.archive`), so a
gzip-compressed ``.tar`` or a plain tar named ``.tgz`` is read like any other. A member ``M`` of the archive
``D/A.zip`` stands for the file ``D/M`` once unpacked (its *logical path*; ``D/A/M`` too, for archives
unpacked into a folder of their own name). Patterns, exclusions and split rules look at the logical path, so one
pattern serves both the unpacked and the archived form; the scene path is ``D/A.zip/M``. When the unpacked
file is there as well, the unpacked copy is taken and the member skipped; when two archives hold the same logical
path, the first archive by path wins. Archives inside archives are not
read; 7z, rar and bzip2/xz-compressed tars are a scan problem each (unpack those first). Listing a
gzip-compressed tar decompresses it once, start to end.

**Never images**: hidden entries (``.name``, macOS ``__MACOSX`` folders and ``._name`` forks) are skipped, and
so is every logical path one of whose components carries a label token (:data:`LABEL_TOKENS`, e.g.
``masks_png``, ``gt``, ``top_potsdam_2_10_label.tif``): masks and label rasters never become scenes, whatever
the pattern. (Archive names are not checked: xView2 ships its images in ``train_images_labels_targets.tar.gz``.)
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

from rs4m import archive as archives
from rs4m.errors import BadInput
from rs4m.sources.base import SceneRef, ScanProblem, SourceAdapter

#: names looked at as archives, longest first (their kind comes from their bytes: :mod:`rs4m.archive`)
ARCHIVE_SUFFIXES = archives.CANDIDATE_SUFFIXES
#: a path component holding one of these tokens (split at non-alphanumerics) is a label, mask or annotation
LABEL_TOKENS = frozenset({
    "mask", "masks", "label", "labels", "gt", "groundtruth", "truth", "target", "targets", "annotation",
    "annotations", "ann", "anno", "segmentation", "segmentations", "landmask",
})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokens(component: str) -> list[str]:
    """Lower-case alphanumeric tokens of one path component: ``"masks_png"`` → ``["masks", "png"]``."""
    return [t for t in _NON_ALNUM.split(component.lower()) if t]


def archive_suffix(name: str) -> str | None:
    """The archive suffix of a file name (``.tar.gz`` before ``.gz``), or None when it is no archive."""
    lower = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), None)


def has_token(path: str, vocabulary: frozenset[str]) -> bool:
    """Whether any component of ``path`` holds a token from ``vocabulary``."""
    return any(t in vocabulary for part in path.split("/") for t in tokens(part))


# ---------------------------------------------------------------------------------------------- patterns


def _close_brace(pattern: str, start: int) -> int:
    """Index of the ``}`` matching the ``{`` at ``start``, or -1."""
    depth = 0
    for k in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[k], 0)
        if depth == 0:
            return k
    return -1


def _split_top(body: str) -> list[str]:
    """Split a brace body at its top-level commas."""
    parts, depth, last = [], 0, 0
    for k, ch in enumerate(body):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(body[last:k])
            last = k + 1
    return parts + [body[last:]]


def _translate(pattern: str) -> str:
    """Glob → regex source (no anchors)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch in "*?":
            out.append("[^/]*" if ch == "*" else "[^/]")
            i += 1
        elif ch == "[" and (j := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:j]
            out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[" + re.escape(body) + "]")
            i = j + 1
        elif ch == "{" and (j := _close_brace(pattern, i)) != -1:
            out.append("(?:" + "|".join(_translate(p) for p in _split_top(pattern[i + 1:j])) + ")")
            i = j + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


def compile_globs(patterns: Iterable[str]) -> re.Pattern:
    """One case-insensitive regex; ``.fullmatch(path)`` holds when any of the globs matches the whole path."""
    alternatives = [f"(?:{_translate(p)})" for p in patterns]
    return re.compile("|".join(alternatives) or "(?!)", re.IGNORECASE | re.DOTALL)


# ----------------------------------------------------------------------------------------------- walking


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _printable(path: str) -> str:
    """A path whose undecodable bytes (kept by the OS layer as surrogates) are shown as escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Walker:
    """Depth-first walk; a folder met again among its own ancestors is a symlink loop."""

    def __init__(self, root: Path, keep: Callable[[str], bool]) -> None:
        self.root, self.keep = root, keep

    def run(self) -> Iterator[str | ScanProblem]:
        yield from self._folder(self.root, "", frozenset())

    def _folder(self, folder: Path, rel: str, ancestors: frozenset) -> Iterator[str | ScanProblem]:
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            yield ScanProblem(rel or ".", "folder cannot be listed (permission denied or unreadable)", str(err))
            return
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            yield ScanProblem(rel, "symlink loop: this folder links back to a folder above it; not followed")
            return
        for entry in entries:
            yield from self._entry(entry, f"{rel}/{entry.name}" if rel else entry.name, ancestors | {key})

    def _entry(self, entry: os.DirEntry, rel: str, ancestors: frozenset) -> Iterator[str | ScanProblem]:
        if _hidden(entry.name):
            return
        if not _valid_utf8(entry.name):
            yield ScanProblem(_printable(rel), "file name is not valid UTF-8; rename it to include it")
            return
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = entry.is_file(follow_symlinks=True)
        except OSError as err:
            loop = err.errno == errno.ELOOP
            yield ScanProblem(rel, "symlink loop: the link leads back to itself; not followed" if loop
                              else "entry cannot be read", str(err))
            return
        if is_dir:
            yield from self._folder(Path(entry.path), rel, ancestors)
        elif self.keep(rel):
            yield rel if is_file else _not_a_file(entry, rel)


def _not_a_file(entry: os.DirEntry, rel: str) -> ScanProblem:
    """Why an entry named like an image is no regular file (a FIFO or device would block a reader)."""
    try:
        mode = os.stat(entry.path).st_mode
    except FileNotFoundError:
        return ScanProblem(rel, "broken symlink: its target does not exist")
    except OSError as err:
        if err.errno == errno.ELOOP:
            return ScanProblem(rel, "symlink loop: the link leads back to itself; not followed", str(err))
        return ScanProblem(rel, "the entry cannot be read", str(err))
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    via = " (through a symlink)" if entry.is_symlink() else ""
    return ScanProblem(rel, f"not a regular file: {kind}{via}; only regular image files are read")


def walk_files(root: Path, keep: Callable[[str], bool] = lambda rel: True) -> Iterator[str | ScanProblem]:
    """Relative POSIX paths of the regular files under ``root`` for which ``keep(path)`` holds, and problems.

    Symlinks are followed; a folder that links back to one above it is a symlink loop (a problem, never a
    hang). A folder that cannot be listed, a broken symlink, an entry that is no regular file (FIFO, socket,
    device) and a name that is not valid UTF-8 are problems too. Hidden entries are skipped. Order: sorted by name within each folder (callers sort whole paths).
    """
    return _Walker(Path(root), keep).run()


# ---------------------------------------------------------------------------------------------- archives


def archive_members(path: Path) -> list[str]:
    """Names of the regular-file members of a zip / tar / gzip-compressed tar (by content), as it spells them.

    Raises OSError, zipfile.BadZipFile, tarfile.TarError or EOFError for an unreadable archive and
    :class:`BadInput` for one that is not read in place (7z, rar, bzip2/xz tar).
    """
    return archives.list_members(path)


def _clean_member(name: str) -> str | None:
    """The member's path normalised (``./`` and empty parts dropped), or None for members never taken.

    The normalised name is what scene paths carry: GDAL finds ``a.tar/x`` for a member stored as ``./x``.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or "\\" in name or any(_hidden(p) for p in parts):
        return None
    return "/".join(parts) if _valid_utf8(name) else None


def unpacked_paths(archive_rel: str, member: str) -> tuple[str, str]:
    """Where ``member`` of the archive at ``archive_rel`` lies once unpacked: beside it, or in a folder of its name."""
    folder, _, name = archive_rel.rpartition("/")
    stem = archives.strip_suffix(name)
    prefix = f"{folder}/" if folder else ""
    return f"{prefix}{member}", f"{prefix}{stem}/{member}"


# --------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Found:
    """An image file found under a source root.

    Attributes:
        path: the scene path (relative POSIX; ``<archive>/<member>`` for an archive member).
        logical: where the file lies once unpacked (equal to ``path`` for a plain file); patterns, exclusions
            and split rules look at this path.
        archive: the archive's relative path for a member, else None.
    """

    path: str
    logical: str
    archive: str | None = None


@dataclass(frozen=True)
class Matcher:
    """Which logical paths are images: ``include`` and not ``exclude`` and no label token."""

    include: re.Pattern
    exclude: re.Pattern
    label_tokens: frozenset[str] = LABEL_TOKENS

    def __call__(self, logical: str) -> bool:
        if not self.include.fullmatch(logical) or self.exclude.fullmatch(logical):
            return False
        return not has_token(logical, self.label_tokens)


def find_images(root: Path, matcher: Matcher, skip_archive: re.Pattern | None = None
                ) -> tuple[list[Found], list[ScanProblem]]:
    """Every image under ``root``, unpacked or inside an archive, each once; sorted by path. Also the problems.

    ``skip_archive`` (matched against archive paths) names archives never read, e.g. another version's.
    """
    plain, archives, problems = [], [], []
    for item in walk_files(root, lambda rel: archive_suffix(rel) is not None or matcher(rel)):
        if isinstance(item, ScanProblem):
            problems.append(item)
        elif archive_suffix(item) is not None:
            if not (skip_archive and skip_archive.fullmatch(item)):
                archives.append(item)
        else:
            plain.append(Found(item, item))
    taken = {f.logical.lower() for f in plain}
    members: list[Found] = []
    for archive in sorted(archives):
        members.extend(_archive_images(Path(root), archive, matcher, taken, problems))
    found = sorted(plain + members, key=lambda f: f.path)
    return found, sorted(problems, key=lambda p: p.path)


def _archive_images(root: Path, archive: str, matcher: Matcher, taken: set[str],
                    problems: list[ScanProblem]) -> Iterator[Found]:
    """The images of one archive whose logical path is not taken yet (``taken`` is updated)."""
    try:
        names = archive_members(root / archive)
    except BadInput as err:
        problems.append(ScanProblem(archive, err.reason, err.detail))
        return
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        problems.append(ScanProblem(archive, "archive cannot be read (corrupt or truncated?)", str(err)))
        return
    for name in sorted(names):
        member = _clean_member(name)
        if member is None:
            continue
        candidates = unpacked_paths(archive, member)
        logical = next((c for c in candidates if matcher(c)), None)
        if logical is None or any(c.lower() in taken for c in candidates):
            continue
        taken.update(c.lower() for c in candidates)
        yield Found(f"{archive}/{member}", logical, archive)  # GDAL cannot open ".../a.tar/./x"


# ------------------------------------------------------------------------------------------ the adapter


#: folder-name tokens that name a split; whole component names are tried before tokens
COMMON_SPLIT_NAMES = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test", "trainval": "trainval",
}


def split_from_path(path: str, names: dict[str, str]) -> str | None:
    """The split the first component of ``path`` (from the root) that names one says, or None.

    A component counts when its whole lower-cased name is a key of ``names`` (``test-challenge``) or one of its
    tokens is (``JPEGImages-trainval`` → ``trainval``, ``AOI_2_Vegas_Train`` → ``train``).
    """
    for part in path.split("/"):
        if part.lower() in names:
            return names[part.lower()]
        for token in tokens(part):
            if token in names:
                return names[token]
    return None


class LayoutAdapter(SourceAdapter):
    """An adapter described by data: image globs, exclusions, split rules (see this module's docstring).

    Subclasses set the facts of :class:`SourceAdapter` plus:

    * ``patterns``: globs of the dataset's images (logical paths); ``self.glob`` from the recipe replaces them.
    * ``exclude``: globs never taken (always applied, also under a recipe glob), on top of the label tokens.
    * ``split_names``: folder names / tokens → split; ``default_split`` for images that no folder names.
    * ``skip_archives``: globs of archive paths never read (e.g. another version's archives).

    and may override :meth:`split_of` (splits from file names or lists), :meth:`select` (choose among
    variants of one image) and :meth:`scene_ref` (band order).
    """

    patterns: ClassVar[tuple[str, ...]] = ()
    exclude: ClassVar[tuple[str, ...]] = ()
    label_tokens: ClassVar[frozenset[str]] = LABEL_TOKENS
    split_names: ClassVar[dict[str, str]] = COMMON_SPLIT_NAMES
    default_split: ClassVar[str | None] = None
    skip_archives: ClassVar[tuple[str, ...]] = ()

    def image_patterns(self) -> tuple[str, ...]:
        """The globs in force: the recipe's ``glob`` when given, else the adapter's ``patterns``."""
        return (self.glob,) if self.glob else self.patterns

    def matcher(self) -> Matcher:
        return Matcher(compile_globs(self.image_patterns()), compile_globs(self.exclude), self.label_tokens)

    def layout_context(self, root: Path) -> object:
        """Whatever :meth:`split_of` needs from the root besides the path (e.g. split lists); None by default."""
        return None

    def split_of(self, found: Found, context: object) -> str | None:
        """The image's split: from its folder names, else its archive's name, else ``default_split``."""
        split = split_from_path(found.logical, self.split_names)
        if split is None and found.archive:
            split = split_from_path(found.archive, self.split_names)
        return split or self.default_split

    def select(self, found: list[Found]) -> list[Found]:
        """Choose among variants of one image (e.g. RGB over RGBIR); all of them by default."""
        return found

    def scene_ref(self, found: Found, split: str | None) -> SceneRef:
        return SceneRef(scene_path=found.path, split=split)

    def scenes(self, root: Path, splits: tuple[str, ...] | None = None) -> Iterator[SceneRef | ScanProblem]:
        """The dataset's images under ``root`` (unpacked or in archives), only those of ``splits`` when given.

        Sorted by path; scan problems (unreadable folders and archives, images in no known split while
        splits are selected, no image found at all) are yielded in path order among the scenes.
        """
        self.check_splits(splits)
        root = Path(root)
        skip = compile_globs(self.skip_archives) if self.skip_archives else None
        found, problems = find_images(root, self.matcher(), skip)
        found = self.select(found)
        items: list[SceneRef | ScanProblem] = list(problems)
        if not found:
            items.append(self._nothing_found())
        context = self.layout_context(root)
        for image in found:
            split = self.split_of(image, context)
            if splits is None or split in splits:
                items.append(self.scene_ref(image, split))
            elif split is None:
                items.append(ScanProblem(image.path, "image is in no known split folder, so it was left out",
                                         f"splits of {self.name}: {', '.join(self.splits)}"))
        yield from sorted(items, key=lambda item: item.scene_path if isinstance(item, SceneRef) else item.path)

    def _nothing_found(self) -> ScanProblem:
        return ScanProblem(".", f"no {self.title or self.name} images found under this folder",
                           f"looked for {' or '.join(self.image_patterns())} (unpacked or inside zip and tar archives, "
                           f"gzip-compressed or not; 7z, rar and bzip2/xz tars must be unpacked first). "
                           f"{self.layout_notes}")

