"""Where a model store keeps its files: a local directory, or any fsspec URL (UPath).

Both backends offer the same few operations on the flat list of files under the store's root;
the store (``store.py``) is written once against them. The guarantee it needs from each: a
reader sees either the old or the complete new content of a name, never a partial write.

* Local directory (the default; also ``file://`` URLs): write a temp file in the same
  directory, flush + fsync, ``os.replace`` over the name (atomic on POSIX), fsync the
  directory so the rename survives a power cut. Temp files carry the writer's pid, so a
  later cleanup removes those of dead writers.
* Other fsspec URLs (``memory://``, ``s3://``, ``gs://``, ...): write the bytes under a
  unique temp name, then ``fs.mv`` it over the name. On object stores a PUT or server-side
  copy replaces an object as a whole (S3, GCS and Azure give readers the old or the new
  object, never a mix); ``memory://`` swaps one dict entry. There is no fsync: durability
  is the object store's. A temp object left by a killed writer is removed after
  STALE_TEMP_SECONDS (its pid means nothing on another host).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath

from upath import UPath

FILE_MODE = 0o644
# Temp files (".<name>.<pid>.<random>.tmp") of a writer that is gone, or older than this, are
# leftovers of a killed write.
STALE_TEMP_SECONDS = 24 * 3600
_TEMP_RE = re.compile(r"\.(.+)\.([0-9]+)\.[^.]+\.tmp")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; without it a power cut can "undo" os.replace.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(name: str) -> str:
    # The writer's pid is in the name, so a later cleanup can tell a dead writer's leftover
    # from a write in progress (see clean_stale_temp_files).
    return f".{name}.{os.getpid()}."


def atomic_write_bytes(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Atomically replace ``path`` with ``data`` (local files).

    Readers see either the old file or the complete new one, never a partial write: the
    bytes go to a temp file in the same directory (same filesystem, so the rename is
    atomic), are flushed and fsynced, then ``os.replace``-d over ``path``; finally the
    directory is fsynced. On any failure the temp file is removed and ``path`` untouched.
    ``exclusive``: publish with ``os.link`` instead, which raises ``FileExistsError`` when
    ``path`` exists (another process took that name first) rather than overwriting it.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=temp_prefix(path.name), suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0o600; artifacts are meant to be readable by the serving tier
        # but never world-writable, independent of the process umask.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fd = -1  # now owned (and closed) by the file object
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # A failed write (disk full, I/O error) names no file by itself: name it.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    _fsync_dir(directory)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temp_files(root: Path) -> list[Path]:
    """Remove temp files left by killed writes: their writer's pid is gone (this host), or
    they are older than STALE_TEMP_SECONDS. Returns the removed paths."""
    removed = []
    now = time.time()
    for tmp in Path(root).glob(".*.tmp"):
        match = _TEMP_RE.fullmatch(tmp.name)
        try:
            stale = now - tmp.stat().st_mtime > STALE_TEMP_SECONDS
            if match and not stale:
                stale = int(match.group(2)) != os.getpid() and not _pid_alive(int(match.group(2)))
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue
    return removed


class LocalFiles:
    """A local directory (see the module docstring for the guarantees)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def location(self, name: str) -> str:
        return str(self.root.absolute() / name)

    def describe(self, name: str) -> Path:
        return self.root / name

    def exists(self) -> bool:
        return self.root.is_dir()

    def makedirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        try:
            return [p.name for p in self.root.iterdir()]
        except FileNotFoundError:
            return []

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.root / name, data)

    def create(self, name: str, data: bytes) -> None:
        """Publish a new name; FileExistsError if another writer took it first."""
        atomic_write_bytes(self.root / name, data, exclusive=True)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def age_seconds(self, name: str) -> float:
        return time.time() - (self.root / name).stat().st_mtime

    def deleted(self) -> None:
        """Make deletions durable (the directory entry)."""
        _fsync_dir(self.root)

    def clean_temp(self) -> list[str]:
        return [p.name for p in clean_stale_temp_files(self.root)]

    def stamp(self, name: str) -> tuple[int, int, int]:
        """Changes whenever ``name`` is replaced: os.replace gives it a new inode."""
        st = os.stat(self.root / name)
        return (st.st_mtime_ns, st.st_size, st.st_ino)


class FsspecFiles:
    """Any fsspec URL, through UPath as the IO manager (see the module docstring)."""

    def __init__(self, root: UPath) -> None:
        self.root = root
        self.fs = root.fs
        self.path = root.path.rstrip("/")

    def _p(self, name: str) -> str:
        return f"{self.path}/{name}"

    def location(self, name: str) -> str:
        return str(self.root / name)

    def describe(self, name: str) -> str:
        return self.location(name)

    def exists(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def makedirs(self) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        return [PurePosixPath(p).name for p in entries]

    def has(self, name: str) -> bool:
        return bool(self.fs.exists(self._p(name)))

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._p(name))

    def write(self, name: str, data: bytes) -> None:
        tmp = self._p(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, self._p(name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)
            raise

    def create(self, name: str, data: bytes) -> None:
        """Publish a new name; FileExistsError if it exists. "xb" is a conditional create on
        backends that have one (memory, local, S3 with If-None-Match); elsewhere a check
        first, which is enough because saves into one store are serialized (one training
        run at a time)."""
        try:
            with self.fs.open(self._p(name), "xb") as fh:
                fh.write(data)
        except (NotImplementedError, ValueError):
            if self.has(name):
                raise FileExistsError(self.location(name)) from None
            self.write(name, data)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(name))

    def age_seconds(self, name: str) -> float:
        info = self.fs.info(self._p(name))
        stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
        if stamp is None:
            return 0.0  # unknown age: never old enough to be removed
        seconds = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
        return time.time() - seconds

    def deleted(self) -> None:
        pass  # object stores apply a delete at once

    def clean_temp(self) -> list[str]:
        removed = []
        for name in self.names():
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if self.age_seconds(name) > STALE_TEMP_SECONDS:
                        self.delete(name)
                        removed.append(name)
        return removed

    def stamp(self, name: str) -> str:
        """Changes whenever ``name``'s content does: a hash of its (small) bytes, as object
        stores' modification times are too coarse to tell two promotions apart."""
        return hashlib.sha256(self.read(name)).hexdigest()


Files = LocalFiles | FsspecFiles


def files_at(root: str | os.PathLike) -> Files:
    """The backend for ``root``: a local path (or file:// URL) or another fsspec URL."""
    if isinstance(root, UPath):
        location = root
    elif isinstance(root, Path) or "://" not in str(root):
        return LocalFiles(Path(root))
    else:
        location = UPath(str(root))
    if location.protocol in ("", "file", "local"):
        return LocalFiles(Path(location.path))
    return FsspecFiles(location)
