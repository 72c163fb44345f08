"""The ratings read: `RatingsStore.read_ratings` (ADBC) against the tuple reader it replaced.

    python bench/bench_read.py --sqlite /tmp/ratings-1m.db                 # SQLite only
    python bench/bench_read.py --sqlite /tmp/ratings-5m.db --postgres      # and PostgreSQL
    python bench/bench_read.py --sqlite DB --postgres --presets native --readers tuples,today

`--sqlite`: a ratings file in the native schema (`recsys demo-data` / `import-movielens`
writes one); it is copied, never changed. The copy gets, for the equality check to mean
something: a seeded 1% of its ratings deactivated (`active = false`), and the Django app's
tables (`ratings_rating` + `django_content_type`) holding the same ratings under the
`movies.movie` content type, every 10th of them under another content type instead.
With `--postgres` a throwaway PostgreSQL (initdb/pg_ctl on loopback, as the tests start it)
gets the same tables by COPY.

Readers (each in its own process: seconds, peak RSS and the RSS growth of the read; the
ratios are against the first reader named, by default the tuple reader):

* tuples: `RatingsStore(url, preset).read_ratings(reader="tuples")`, the read before ADBC
  (driver tuples, 100K-row chunks, into DataFrames; a server-side cursor on PostgreSQL);
* today: `RatingsStore(url, preset).read_ratings()`: ADBC's batches converted as they arrive
  (db/adbc.py), the tuple reader where ADBC cannot read as it would (the row says which read);
* adbc: the same statement (the preset's `ratings_query` ORDER BY its row id, compiled by
  SQLAlchemy for the database) through ADBC's SQLite or PostgreSQL driver into one Arrow
  table, then `to_pandas()`;
* adbc_batches: the same, converted batch by batch (100K rows on SQLite, ~16 MB on
  PostgreSQL) and concatenated, as today's chunks are;
* connectorx: the same SQL through `connectorx.read_sql(..., return_type="arrow")`, one query
  (no partitioning: partitioned reads are several queries, several snapshots).

The Arrow readers' frames go through the same `_normalize_ratings` as today's chunks, so
every reader returns the same columns and dtypes; the frames are compared by a digest of
their dtypes and column bytes (equal digest = same rows, same order, same values).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_budget import _peak_rss_mb  # this script's folder is on sys.path

READERS = ("tuples", "today", "adbc", "adbc_batches", "connectorx")
DEFAULT_READERS = "tuples,today"
OTHER_CONTENT_TYPE = ("books", "book")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _digest(df) -> str:
    h = hashlib.sha256()
    for name in df.columns:
        col = df[name]
        h.update(f"{name}:{col.dtype};".encode())
        values = col.to_numpy()
        h.update(values.tobytes() if values.dtype != object else repr(values.tolist()).encode())
    return h.hexdigest()[:16]


def _statement(url: str, preset: str):
    """The SQL text today's read runs, with its parameters inlined (the presets' values are
    validated identifiers), for readers that take SQL text."""
    import sqlalchemy as sa

    from recsys_assets.db.presets import preset_of

    layout = preset_of(preset)
    stmt = layout.ratings_query.order_by(layout.rating_id)
    dialect = sa.create_engine(url).dialect
    return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def read_with(reader: str, url: str, preset: str) -> dict:
    """One read in this process: figures and the frame's digest."""
    import pandas as pd

    from recsys_assets.db import RatingsStore, read_ratings_with_reader
    from recsys_assets.db.ratings import _normalize_ratings  # the per-chunk conversion

    sql = _statement(url, preset)
    if reader.startswith("adbc"):
        import pyarrow  # noqa: F401  (imported before timing, as today's pandas is)

        if url.startswith("sqlite"):
            import adbc_driver_sqlite.dbapi as adbc
        else:
            import adbc_driver_postgresql.dbapi as adbc
    elif reader == "connectorx":
        import connectorx as cx
        import pyarrow  # noqa: F401
    used = reader
    before = _rss_mb()
    start = time.perf_counter()
    if reader == "tuples":
        df = RatingsStore(url, preset).read_ratings(reader="tuples")
        fetch = time.perf_counter() - start
    elif reader == "today":
        # The store's read, through the function that also says which reader read.
        store = RatingsStore(url, preset)
        df, used, _ = read_ratings_with_reader(store.engine(), store.preset)
        fetch = time.perf_counter() - start
    elif reader == "adbc":
        uri = url.removeprefix("sqlite:///") if url.startswith("sqlite") else _libpq(url)
        with adbc.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        fetch = time.perf_counter() - start
        df = _normalize_ratings(table.to_pandas())
        del table
    elif reader == "adbc_batches":
        # Arrow batches converted as they arrive (as today's 100K-row chunks): no whole Arrow
        # table beside the frame.
        uri = url.removeprefix("sqlite:///") if url.startswith("sqlite") else _libpq(url)
        with adbc.connect(uri) as conn, conn.cursor() as cur:
            if url.startswith("sqlite"):
                cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "100000"})
            cur.execute(sql)
            parts = [_normalize_ratings(b.to_pandas()) for b in cur.fetch_record_batch()]
        fetch = time.perf_counter() - start
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        del parts
    else:
        table = cx.read_sql(_cx_url(url), sql, return_type="arrow")
        fetch = time.perf_counter() - start
        df = _normalize_ratings(table.to_pandas())
        del table
    seconds = time.perf_counter() - start
    if df.empty:
        df = pd.DataFrame(df)
    return {
        "reader": reader,
        "read_by": used,
        "rows": len(df),
        "seconds": seconds,
        "fetch_seconds": fetch,
        "dtypes": {k: str(v) for k, v in df.dtypes.items()},
        "digest": _digest(df),
        "rss_growth_mb": _rss_mb() - before,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _libpq(url: str) -> str:
    """postgresql+psycopg2://... → postgresql://... (what libpq, ADBC and connectorx take)."""
    return "postgresql://" + url.split("://", 1)[1]


def _cx_url(url: str) -> str:
    if url.startswith("sqlite"):
        return "sqlite://" + url.removeprefix("sqlite:///")
    return _libpq(url)


# --- preparing the databases ---------------------------------------------------------------


def prepare_sqlite(source: Path, target: Path, inactive_every: int) -> dict:
    """Copy, deactivate every `inactive_every`-th rating by a seeded hash, add Django tables."""
    import sqlalchemy as sa

    from recsys_assets.db.presets import create_django_tables

    shutil.copyfile(source, target)
    con = sqlite3.connect(target)
    with con:
        # Seeded, spread over the table (not a block at its end).
        con.execute(
            "UPDATE ratings SET active = 0 WHERE ((id * 2654435761) % 4294967296) % ? = 0",
            (inactive_every,),
        )
    con.close()
    engine = sa.create_engine(f"sqlite:///{target}")
    create_django_tables(engine)
    engine.dispose()
    con = sqlite3.connect(target)
    with con:
        con.execute(
            "INSERT INTO django_content_type (id, app_label, model) VALUES (1, ?, ?), "
            "(2, 'movies', 'movie')",
            OTHER_CONTENT_TYPE,
        )
        # Django's DATETIME text ('YYYY-MM-DD HH:MM:SS'); every 10th rating of another
        # content type, so the join and its filter both decide rows.
        con.execute(
            "INSERT INTO ratings_rating (id, user_id, value, content_type_id, object_id, active, "
            "timestamp) SELECT id, user_id, rating, CASE WHEN id % 10 = 3 THEN 1 ELSE 2 END, "
            "movie_id, active, datetime(created_at, 'unixepoch') FROM ratings"
        )
        con.execute("INSERT INTO movies_movie (id, title) SELECT id, title FROM movies")
    counts = {
        "ratings": con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0],
        "active": con.execute("SELECT COUNT(*) FROM ratings WHERE active = 1").fetchone()[0],
        "django_active_movies": con.execute(
            "SELECT COUNT(*) FROM ratings_rating WHERE active = 1 AND content_type_id = 2"
        ).fetchone()[0],
    }
    con.close()
    return counts


def copy_to_postgres(sqlite_path: Path, url: str) -> float:
    """The SQLite file's native and Django tables into PostgreSQL by COPY."""
    import io

    import psycopg2
    import sqlalchemy as sa

    from recsys_assets.db.presets import create_django_tables, ensure_schema

    engine = sa.create_engine(url)
    ensure_schema(engine, "native")
    create_django_tables(engine)
    engine.dispose()
    start = time.perf_counter()
    src = sqlite3.connect(sqlite_path)
    dst = psycopg2.connect(_libpq(url))
    tables = {
        "movies": "id, title",
        "ratings": "id, user_id, movie_id, rating, active, created_at",
        "django_content_type": "id, app_label, model",
        "movies_movie": "id, title",
        "ratings_rating": "id, user_id, value, content_type_id, object_id, active, timestamp",
    }
    with dst, dst.cursor() as cur:
        for table, columns in tables.items():
            rows = src.execute(f"SELECT {columns} FROM {table}")  # fixed names above
            while chunk := rows.fetchmany(500_000):
                buf = io.StringIO()
                for row in chunk:
                    buf.write(
                        "\t".join(
                            "\\N"
                            if v is None
                            else ("t" if v else "f")
                            if name.strip() == "active"
                            else str(v)
                            for name, v in zip(columns.split(","), row, strict=True)
                        )
                    )
                    buf.write("\n")
                buf.seek(0)
                cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)
        cur.execute("ANALYZE")
    dst.close()
    src.close()
    return time.perf_counter() - start


# --- driver --------------------------------------------------------------------------------


def _child(reader: str, url: str, preset: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", reader, "--url", url, "--preset", preset],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {"reader": reader, "error": out.stderr.strip().splitlines()[-1][-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(url: str, label: str, presets: list[str], readers: list[str], repeat: int) -> dict:
    out: dict = {}
    for preset in presets:
        rows = []
        for reader in readers:
            runs = [_child(reader, url, preset) for _ in range(repeat)]
            ok = [r for r in runs if "error" not in r]
            best = min(ok, key=lambda r: r["seconds"]) if ok else runs[0]
            if ok:
                best["all_seconds"] = [r["seconds"] for r in ok]
            rows.append(best)
            _print_row(label, preset, best, rows[0])
        out[preset] = rows
    return out


def _print_row(db: str, preset: str, r: dict, first: dict) -> None:
    if "error" in r:
        print(f"{db:<10}{preset:<8}{r['reader']:<12}FAILED: {r['error']}", flush=True)
        return
    same = "same rows" if r["digest"] == first.get("digest") else "DIFFERENT"
    ratio = first["seconds"] / r["seconds"] if "seconds" in first else float("nan")
    name = r["reader"] if r["read_by"] == r["reader"] else f"{r['reader']}={r['read_by']}"
    print(
        f"{db:<10}{preset:<8}{name:<12}{r['rows']:>11,}{r['seconds']:>8.2f}s"
        f" (fetch {r['fetch_seconds']:6.2f}s){ratio:>7.2f}x  RSS +{r['rss_growth_mb']:6,.0f} MB"
        f"  peak {r['peak_rss_mb']:6,.0f} MB  {same} [{r['digest']}]",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", type=Path, help="a native-schema SQLite ratings file")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--presets", default="native,django")
    parser.add_argument("--readers", default=DEFAULT_READERS, help=f"of {','.join(READERS)}")
    parser.add_argument("--repeat", type=int, default=1, help="reads per reader (best kept)")
    parser.add_argument("--inactive-every", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read_with(args.child, args.url, args.preset)))
        return 0
    if not args.sqlite:
        parser.error("--sqlite PATH is needed")
    presets, readers = args.presets.split(","), args.readers.split(",")
    res: dict = {"load_before": open("/proc/loadavg").read().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="recsys-read-") as tmp:
        db = Path(tmp) / "ratings.db"
        res["prepared"] = prepare_sqlite(args.sqlite, db, args.inactive_every)
        print(f"prepared {res['prepared']} (load {res['load_before']})", flush=True)
        print(
            f"{'db':<10}{'preset':<8}{'reader':<12}{'rows':>11}{'time':>9}{'':>16}{'vs first':>8}",
            flush=True,
        )
        res["sqlite"] = measure(f"sqlite:///{db}", "sqlite", presets, readers, args.repeat)
        if args.postgres:
            from recsys_assets_tests.servers import postgres_server

            with postgres_server() as server:
                url = server.url("ratings")
                res["postgres_copy_seconds"] = copy_to_postgres(db, url)
                print(f"copied into PostgreSQL in {res['postgres_copy_seconds']:.1f}s")
                res["postgres"] = measure(url, "postgres", presets, readers, args.repeat)
    res["load_after"] = open("/proc/loadavg").read().split()[:3]
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
