"""PostgreSQL as the stores' engine: the database several conversion hosts share.

psycopg 3 is blocking: its calls run in this engine's own thread pool, each with a connection from
a psycopg-pool (autocommit; a transaction is an explicit block). Every statement has a timeout,
and so has waiting for a connection. The schema's numbered migrations run under an advisory lock,
so that nodes starting together migrate once.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred

from .channel import PgChannel
from .engine import Db, migrations
from .runner import ThreadRunner

MIGRATION_LOCK = 0x68797065  # an advisory lock id of this application's own ("hype")
CONNECT_SECONDS = 10
STATEMENT_SECONDS = 30


class PostgresEngine:
    dialect = "postgresql"

    def __init__(self, url: str, runner: ThreadRunner, *, password: Optional[str] = None, connections: int = 4):
        self._url = url
        self._password = password
        self._runner = runner
        self._connections = connections
        self._pool = None

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()

    def call(self, fn: Callable[..., Any], *args) -> Deferred:
        return self._runner.run(fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Deferred:
        """``fn(db, *args)`` on one of the engine's threads, with a pooled connection."""
        return self._runner.run(self._thd_with_connection, fn, args)

    def _thd_with_connection(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self._pool is None:
            raise RuntimeError("the database is not open")
        with self._pool.connection() as conn:
            return fn(Db(conn, self.dialect, conn.transaction), *args)

    def channel(self, reactor, name: str) -> PgChannel:
        """LISTEN/NOTIFY on ``name``, over connections of its own."""
        return PgChannel(reactor, conninfo(self._url, self._password), name)

    def thd_open(self) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            conninfo(self._url, self._password), min_size=1, max_size=self._connections, timeout=CONNECT_SECONDS,
            kwargs={"autocommit": True, "row_factory": dict_row}, open=True, name="hypersdk",
        )
        self._pool.wait(CONNECT_SECONDS)
        with self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT max(version) AS version FROM schema_version").fetchone()
                version = row["version"] or 0
                for number, sql in migrations(self.dialect):
                    if number > version:
                        conn.execute(sql)
                        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

    def thd_close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def conninfo(url: str, password: Optional[str]) -> str:
    """libpq's connection string for ``postgresql://user@host:port/db``, with the password (kept out of the
    configuration file) and timeouts on connecting and on every statement."""
    from psycopg.conninfo import make_conninfo

    parts = urllib.parse.urlsplit(url)
    options = {"connect_timeout": CONNECT_SECONDS, "options": f"-c statement_timeout={STATEMENT_SECONDS * 1000}",
               "application_name": "hypersdk"}
    if password is not None:
        options["password"] = password
    return make_conninfo(urllib.parse.urlunsplit(parts), **options)
