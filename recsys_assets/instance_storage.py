"""Event log storage of the embedded Dagster instance: Dagster's SQLite one, engines reused.

Dagster's `SqliteEventLogStorage` builds a new SQLAlchemy engine and a new SQLite connection
for every statement batch it runs: about four per stored event, and a run of the training
graph stores ~150 events. On ml-100k that bookkeeping was ~1.5 s of a ~7 s run. This subclass
keeps one engine per database file (the run's shard, the index shard) with one connection
per thread (`SingletonThreadPool`), so an event costs an INSERT and a COMMIT. Everything
else — files, schema, journal mode, the webserver's file watching — is Dagster's own.

The embedded instance's `dagster.yaml` (written by `recsys run` / `recsys ui`) selects it;
a PostgreSQL instance (deploy/dagster.yaml) does not use it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import SingletonThreadPool


def default_base_dir() -> str:
    """Where Dagster keeps a SQLite instance's event logs: `$DAGSTER_HOME/history/runs/`."""
    return os.path.join(os.environ["DAGSTER_HOME"], "history", "runs", "")


# Engines kept at once: the index shard plus the runs a process is writing or reading
# (a long-lived webserver reads many runs; the least recently used engine is closed).
MAX_ENGINES = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` that reuses an engine and connection per shard and thread."""

    def __init__(
        self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None
    ) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir or default_base_dir(), inst_data)

    @classmethod
    def config_type(cls) -> dict:
        # Optional: by default Dagster's own place for the event logs under DAGSTER_HOME, so
        # the generated dagster.yaml holds no absolute path and the directory can move.
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=SingletonThreadPool,
                # Another thread may close a connection when its engine is evicted.
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            self._engines[shard] = engine
            while len(self._engines) > MAX_ENGINES:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's own body, with the engine reused instead of created and disposed.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        # The files are unlinked: connections to them must not outlive them.
        self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()
