"""PostgreSQL as the stores' engine: the database several conversion hosts share.

psycopg 3 is blocking: its calls run in this engine's own thread pool, each with a connection from
a psycopg-pool (autocommit; a transaction is an explicit block). Every statement has a timeout,
and so has waiting for a connection. The schema's numbered migrations run under an advisory lock,
so that nodes starting together migrate once.

A network that dies is noticed by TCP keepalives and ``tcp_user_timeout`` within seconds. A peer
that still acknowledges every byte but never answers (a hung proxy or pooler, a stopped process
whose kernel still holds the socket) is noticed by nothing of TCP's: a call that takes longer
than the statement timeout (and a margin) has its socket shut down, which libpq reports at once, and so has every
call still waiting when the daemon stops, so that no thread is left blocked. The server ends a
transaction whose client went quiet (``idle_in_transaction_session_timeout``), so the row and
advisory locks of a node cut off mid-transaction do not hold the others up.
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
from .hung import CallsInFlight
from .runner import ThreadRunner

MIGRATION_LOCK = 0x68797065  # an advisory lock id of this application's own ("hype")
CONNECT_SECONDS = 10
STATEMENT_SECONDS = 30
POOL_WAIT_SECONDS = 3.0  # a call waits this long for a connection before the server counts as unreachable
PROBE_SECONDS = 1.0  # while the server is down, how often to look whether it is back
CLOSE_SECONDS = 1.0  # how long closing waits for the pool's own threads (one may be connecting to a server gone)
IDLE_IN_TRANSACTION_SECONDS = 10  # the server ends a transaction whose client has gone quiet this long
# A dead network: probes after 5 s of silence, every 2 s, 3 unanswered ones end the connection; data
# sent and not acknowledged within 10 s ends it too.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 10_000}
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
        self._calls = CallsInFlight(STATEMENT_SECONDS + 15)  # a call unanswered this long is cut
        self._watchdog: Optional[LoopingCall] = None

    def start(self) -> None:
        self._runner.start()
        if self._clock is not None:
            self._watchdog = LoopingCall(self._calls.cut, True)
            self._watchdog.clock = self._clock
            self._watchdog.start(1.0, now=False)

    def abort_calls(self) -> None:
        """The daemon is closing the store: cut every call still waiting for the server."""
        self._stopped = True
        cut = self._calls.cut(False)
        if cut:
            log.warn("cut {count} database call(s) that the server had not answered", count=cut)

    def stop(self) -> None:
        self._stopped = True
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
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

    def thd_run(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(db, *args)``, already on one of the engine's threads."""
        return self._thd_with_connection(fn, args)

    def _thd_with_connection(self, fn: Callable[..., Any], args: tuple, probing: bool = False) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise RuntimeError("the database is not open")
        if self._down is not None and not probing:  # found down while this call waited for a thread
            raise DatabaseUnreachable(self._down[1])
        if self._stopped:  # (its calls were cut: no new one may block the threads again)
            raise DatabaseUnreachable("the daemon is closing the database")
        try:
            with self._pool.connection(timeout=POOL_WAIT_SECONDS) as conn, self._calls.watched(conn):
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
            check=self._thd_check,  # a connection broken by a server restart is replaced
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

    def _thd_check(self, conn) -> None:
        """The pool's check of a connection it hands out (a round trip: cut, too, if it hangs)."""
        from psycopg_pool import ConnectionPool

        with self._calls.watched(conn):
            ConnectionPool.check_connection(conn)

    def thd_close(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=CLOSE_SECONDS)
            self._pool = None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def conninfo(url: str, password: Optional[str]) -> str:
    """libpq's connection string for ``postgresql://user@host:port/db``, with the password (kept out of the
    configuration file) and timeouts on connecting and on every statement."""
    from psycopg.conninfo import make_conninfo

    parts = urllib.parse.urlsplit(url)
    options = {"connect_timeout": CONNECT_SECONDS, "application_name": "hypersdk", **KEEPALIVES,
               "options": f"-c statement_timeout={STATEMENT_SECONDS * 1000}"
                          f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS * 1000}"}
    if password is not None:
        options["password"] = password
    return make_conninfo(urllib.parse.urlunsplit(parts), **options)

