"""PostgreSQL as the stores' engine: the database several conversion hosts share.

psycopg 3 is blocking: its calls run in this engine's own thread pool, each with a connection from
a psycopg-pool (autocommit; a transaction is an explicit block). Every statement has a timeout,
and so has waiting for a connection. The schema's numbered migrations run under an advisory lock,
so that nodes starting together migrate once.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import Unavailable

from .channel import PgChannel
from .engine import Db, migrations
from .runner import ThreadRunner

MIGRATION_LOCK = 0x68797065  # an advisory lock id of this application's own ("hype")
CONNECT_SECONDS = 10
STATEMENT_SECONDS = 30
POOL_WAIT_SECONDS = 3.0  # a call waits this long for a connection before the server counts as unreachable
PROBE_SECONDS = 1.0  # while the server is down, how often to look whether it is back
log = Logger()


class DatabaseUnreachable(Exception):
    """The server cannot be reached (raised on the engine's threads, turned into Unavailable)."""


class PostgresEngine:
    dialect = "postgresql"

    def __init__(self, url: str, runner: ThreadRunner, *, password: Optional[str] = None, connections: int = 4,
                 clock=None):
        self._url = url
        self._password = password
        self._runner = runner
        self._connections = connections
        self._pool = None
        self._clock = clock  # probes the server while it is down (None: no probing, in tests)
        self._down: Optional[tuple[float, str]] = None  # since when, and why
        self._probe: Optional[LoopingCall] = None
        self._up_waiters: list[Deferred] = []
        self._stopped = False

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._stopped = True
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            waiter.errback(Unavailable("the daemon is stopping"))
        self._runner.stop()

    def call(self, fn: Callable[..., Any], *args) -> Deferred:
        return self._runner.run(fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Deferred:
        """``fn(db, *args)`` on one of the engine's threads, with a pooled connection. While the server
        cannot be reached this fails at once with errors.Unavailable."""
        if self._down is not None:
            return fail(Unavailable(self._down_message()))
        d = self._runner.run(self._thd_with_connection, fn, args)
        d.addErrback(self._unreachable)
        return d

    def run_durable(self, fn: Callable[..., Any], *args) -> Deferred:
        """As ``run``, for a write that must not be lost: through an outage it waits for the server to
        come back and tries again."""
        return Deferred.fromCoroutine(self._durable(fn, args))

    async def _durable(self, fn: Callable[..., Any], args: tuple) -> Any:
        while True:
            try:
                return await self.run(fn, *args)
            except Unavailable:
                if self._stopped or self._clock is None:
                    raise
                waiter: Deferred = Deferred()
                self._up_waiters.append(waiter)
                await waiter

    def _thd_with_connection(self, fn: Callable[..., Any], args: tuple, probing: bool = False) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise RuntimeError("the database is not open")
        if self._down is not None and not probing:  # found down while this call waited for a thread
            raise DatabaseUnreachable(self._down[1])
        try:
            with self._pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
                return fn(Db(conn, self.dialect, conn.transaction), *args)
        except PoolTimeout as e:
            raise DatabaseUnreachable(f"no connection within {POOL_WAIT_SECONDS:g} s") from e
        except psycopg.OperationalError as e:
            if isinstance(e, psycopg.errors.QueryCanceled):  # a statement timeout: the server is there
                raise
            raise DatabaseUnreachable(_first_line(e)) from e

    def _unreachable(self, failure):
        failure.trap(DatabaseUnreachable)
        if self._down is None:
            self._down = (self._now(), str(failure.value))
            log.warn("PostgreSQL cannot be reached ({error}): the API answers 503 and the running jobs keep their"
                     " writes until it is back", error=str(failure.value))
            if self._clock is not None and not self._stopped:
                self._probe = LoopingCall(self._check)
                self._probe.clock = self._clock
                self._probe.start(PROBE_SECONDS, now=False)
        raise Unavailable(self._down_message())

    def _down_message(self) -> str:
        return f"the job database (PostgreSQL) cannot be reached: {self._down[1]}; try again shortly"

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else 0.0

    def _check(self) -> Deferred:
        d = self._runner.run(self._thd_with_connection, lambda db: db.one("SELECT 1 AS ok"), (), True)
        d.addCallbacks(self._back, lambda f: None)  # still down: the next probe looks again
        return d

    def _back(self, _) -> None:
        if self._down is None:
            return
        since, _why = self._down
        self._down = None
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        log.info("PostgreSQL is reachable again after {seconds:.0f} s", seconds=self._now() - since)
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def channel(self, reactor, name: str) -> PgChannel:
        """LISTEN/NOTIFY on ``name``, over connections of its own."""
        return PgChannel(reactor, conninfo(self._url, self._password), name)

    def thd_open(self) -> None:
        import logging

        # The pool logs each failed reconnection on stderr; the engine says once that the server is down.
        logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            conninfo(self._url, self._password), min_size=1, max_size=self._connections, timeout=CONNECT_SECONDS,
            kwargs={"autocommit": True, "row_factory": dict_row}, open=True, name="hypersdk",
            check=ConnectionPool.check_connection,  # a connection broken by a server restart is replaced
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


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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
