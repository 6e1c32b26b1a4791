"""Database engines behind the stores: SQLite for one host, PostgreSQL for several.

The stores write each query once, with ``?`` placeholders, against ``Db``: a connection that
runs on the engine's own thread(s), never the reactor's. Only what differs between the engines
lives here: connecting, the schema's numbered migrations, transactions, and the few statements
that are an engine's own (the queue claim), chosen by ``dialect``.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from importlib import resources
from typing import Any, Callable, Iterator, Optional, Sequence

from twisted.internet.defer import Deferred


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The numbered schema files of an engine, in order: (version, sql)."""
    found = []
    for entry in resources.files(__package__).joinpath("schema", dialect).iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class Db:
    """One connection, as the stores use it: ``execute`` with ``?`` placeholders, rows by column name."""

    def __init__(self, conn, dialect: str, transaction: Callable[[], Any]):
        self.conn = conn
        self.dialect = dialect
        self._transaction = transaction

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence = ()):
        return self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            if self.dialect == "sqlite":
                self.conn.executemany(sql, rows)
            else:
                with self.conn.cursor() as cursor:
                    cursor.executemany(self._sql(sql), rows)

    def one(self, sql: str, params: Sequence = ()) -> Optional[Any]:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence = ()) -> list:
        return self.execute(sql, params).fetchall()

    def transaction(self):
        """A context manager: everything inside commits together, or nothing does."""
        return self._transaction()

    def server_now(self) -> float:
        """The database server's clock (UNIX seconds): the one clock every node sharing it agrees on."""
        return float(self.one(f"SELECT {SERVER_NOW[self.dialect]} AS now")["now"])


SERVER_NOW = {"sqlite": "(julianday('now') - 2440587.5) * 86400.0",
               "postgresql": "extract(epoch from clock_timestamp())::double precision"}


class SQLiteEngine:
    """One file, WAL mode, one connection used from the store's single thread (or inline in tests)."""

    dialect = "sqlite"

    def __init__(self, path: str, runner):
        self._path = path
        self._runner = runner  # runs blocking calls on the store's one thread
        self._db: Optional[Db] = None

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        """Join the thread; call once the last store call has returned."""
        self._runner.stop()

    def call(self, fn: Callable[..., Any], *args) -> Deferred:
        """``fn(*args)`` on the store's thread (blocking work beside the database: a key file)."""
        return self._runner.run(fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Deferred:
        """``fn(db, *args)`` on the store's thread."""
        return self._runner.run(lambda: fn(self.db, *args))

    run_durable = run  # one file on this host: no outage to wait through

    def thd_run(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(db, *args)``, already on the store's thread."""
        return fn(self.db, *args)

    def abort_calls(self) -> None:
        """(A local file: no call waits for a server.)"""

    @property
    def db(self) -> Db:
        if self._db is None:
            raise RuntimeError("the database is not open")
        return self._db

    def thd_open(self) -> None:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), mode=0o700, exist_ok=True)
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in migrations(self.dialect):
            if number > version:
                conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
        self._db = Db(conn, self.dialect, lambda: _sqlite_transaction(conn))

    def thd_close(self) -> None:
        if self._db is not None:
            self._db.conn.execute("PRAGMA optimize")
            self._db.conn.close()
            self._db = None


@contextmanager
def _sqlite_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
