"""``OUT/build.json``, the build's record: read once per command, written at stage boundaries.

It holds the plan the build was made with (sources with their roots, tiling and file fingerprints, filters,
dedup settings), tool versions, start and end times and the counts of each stage. The single-stage commands
(``rs4m tile OUT`` ...) read their plan from it, so each stage can be re-run on its own.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rs4m.errors import OutputError
from rs4m.layout import OutputLayout
from rs4m.manifest import atomic_write_json
from rs4m.version import __version__


def now() -> str:
    """The time of day in UTC, to the second (``started`` / ``finished``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def tool_versions() -> dict[str, str]:
    """Versions of rs4m and the libraries whose behaviour shapes the output."""
    import numpy
    import PIL
    import pyarrow
    import rasterio
    import simplejpeg

    return {"rs4m": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
            "pillow": PIL.__version__, "simplejpeg": simplejpeg.__version__}


@dataclass
class BuildRecord:
    """The contents of one build's ``build.json``, held in memory; :meth:`save` writes it atomically."""

    out: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return OutputLayout(Path(self.out)).build_json

    @classmethod
    def load(cls, out: Path, missing_ok: bool = False) -> BuildRecord:
        """The record of ``out``; an :class:`OutputError` saying what to run when there is none (an empty
        record with ``missing_ok``)."""
        record = cls(Path(out))
        if record.path.exists():
            try:
                record.data = json.loads(record.path.read_text())
            except ValueError as err:
                raise OutputError(f"{record.path} cannot be read ({err}); rebuild with "
                                  f"`rs4m build {out} ... --force`") from None
        elif not missing_ok:
            raise OutputError(f"{out} has no build.json; start with `rs4m build {out} --source ...` or `rs4m scan`")
        return record

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def stage(self, name: str, counts: dict[str, Any]) -> None:
        """Record the counts of a finished stage and write the record (a stage boundary)."""
        self.data.setdefault("stages", {})[name] = counts
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def update_record(out: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``build.json`` (``stages`` entries are merged one level deep); for tools that
    write a record outside a build (test corpora)."""
    record = BuildRecord.load(out, missing_ok=True)
    for key, value in fields.items():
        if key == "stages":
            record.data.setdefault("stages", {}).update(value)
        else:
            record.data[key] = value
    record.save()
    return record.data
