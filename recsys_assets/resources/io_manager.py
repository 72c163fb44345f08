"""Pickle persistence of asset values on any fsspec path (local directory by default)."""

from __future__ import annotations

import errno
import pickle
from typing import Any

import dagster as dg
from dagster import InputContext, OutputContext, UPathIOManager
from upath import UPath


class PickleUPathIOManager(UPathIOManager):
    extension = ".pkl"

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        # Stream to a sibling file and rename, so a crash never leaves a truncated value
        # where the next run would load it.
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with tmp.open("wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.rename(path)  # overwrites on POSIX and on object stores (fs.mv)
        except BaseException as exc:
            # A half-written value must not stay behind (it would fill the disk further).
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                # The bare "[Errno 28]" names no file; say which value did not fit where.
                raise OSError(
                    errno.ENOSPC, f"No space left on device: cannot store {path}"
                ) from exc
            raise

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        with path.open("rb") as f:
            return pickle.load(f)


class PickleIOManager(dg.ConfigurableIOManagerFactory):
    """`base_dir`: a local directory or an fsspec URL such as `s3://bucket/recsys`."""

    base_dir: str

    def create_io_manager(self, context: dg.InitResourceContext) -> PickleUPathIOManager:
        return PickleUPathIOManager(base_path=UPath(self.base_dir))
