"""Job stores for the unit tests, on either engine, their calls run inline (no thread).

``make_store()`` gives a store on the engine the running test asked for through the ``store_engine``
fixture (tests/unit/conftest.py): SQLite in memory, or a fresh database of the test PostgreSQL.
"""

from __future__ import annotations

from typing import Optional

from hypersdk.store.engine import SQLiteEngine
from hypersdk.store.jobs import JobStore
from hypersdk.store.postgres import PostgresEngine
from tests.fakes.runner import ImmediateRunner

current = {"engine": "sqlite", "url": None}  # set per test by the store_engine fixture


def sqlite_store(path: str = ":memory:", runner=None, key_path: Optional[str] = None) -> JobStore:
    return JobStore(SQLiteEngine(path, runner or ImmediateRunner()), key_path)


def make_store() -> JobStore:
    if current["engine"] == "postgresql":
        return JobStore(PostgresEngine(current["url"], ImmediateRunner()), None)
    return sqlite_store()


def silence(store: JobStore, node: str, seconds: float) -> None:
    """Make ``node``'s last heartbeat ``seconds`` older, by the database's clock (the one leases are
    judged on): as if the node had been silent since."""
    from tests.helpers import result_of

    result_of(store.run_with_db(lambda db, box: db.execute(
        "UPDATE nodes SET last_heartbeat = last_heartbeat - ? WHERE name = ?", (seconds, node))))
