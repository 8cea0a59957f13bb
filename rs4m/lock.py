"""One writer per output folder: an exclusive lock on ``OUT/.rs4m.lock`` held by every command that writes.

The lock is an ``fcntl.flock`` on the file, so it is released by the kernel when its holder exits, however it
exits (kill -9 included): a lock left by a dead process never blocks. The file records the holder's pid, host
and command so that a refused writer can say who holds it. The file itself stays (removing it would let two
processes lock two different files of one name).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from rs4m.errors import OutputError
from rs4m.layout import LOCK_NAME


def lock_path(out: Path) -> Path:
    """``OUT/.rs4m.lock``."""
    return Path(out) / LOCK_NAME


def _holder(fd: int) -> str:
    """Who holds the lock, as recorded in the file ("pid 123 on host h (rs4m build since ...)")."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"pid {info.get('pid')} on host {info.get('host')} "
                f"(rs4m {info.get('command')} since {info.get('started')})")
    except (ValueError, OSError, AttributeError):
        return "another rs4m process"


def _alive_here(fd: int) -> bool:
    """True if the recorded holder is a live process on this host (for file systems without flock)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if info.get("host") != socket.gethostname():
            return True  # cannot tell for another host: assume it is alive
        os.kill(int(info["pid"]), 0)
        return int(info["pid"]) != os.getpid()
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class BuildLock:
    """``with BuildLock(out, "build"):`` holds the exclusive writer lock of ``out`` (which must exist).

    A second writer gets an :class:`OutputError` naming the holder.
    """

    def __init__(self, out: Path, command: str) -> None:
        self.out = Path(out)
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> "BuildLock":
        fd = os.open(lock_path(self.out), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(f"{self.out} is being written by {holder}; wait for it to finish "
                              "or use another OUT folder") from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS) or _alive_here(fd):
                holder = _holder(fd)
                os.close(fd)
                raise OutputError(f"{self.out} cannot be locked ({holder}): {err.strerror}") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
