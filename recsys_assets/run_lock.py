"""One training at a time per RECSYS_HOME for `recsys run`: an advisory lock file.

`flock` is released by the kernel when the holder exits, however it exits (kill -9
included), so a crashed run never leaves a stale lock behind. The file's content only says
who holds it, for the message a second run prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_NAME = "training.lock"


class TrainingLockBusy(RuntimeError):
    """Another `recsys run` is training with the same RECSYS_HOME."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors="replace").strip()
    return text or "unknown process"


@contextlib.contextmanager
def training_lock(
    home: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold `<home>/training.lock` for the duration; refuse (TrainingLockBusy) or wait."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise TrainingLockBusy(
                    f"another `recsys run` ({holder}) is training with RECSYS_HOME={home} "
                    f"(lock {path}); let it finish, or pass --wait to queue behind it"
                ) from None
            if on_wait:
                on_wait(f"waiting for another `recsys run` ({holder}) to finish (lock {path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock
