"""Job stores for the unit tests: SQLite with its calls run inline (no thread)."""

from __future__ import annotations

from typing import Optional

from hypersdk.store.engine import SQLiteEngine
from hypersdk.store.jobs import JobStore
from tests.fakes.runner import ImmediateRunner


def sqlite_store(path: str = ":memory:", runner=None, key_path: Optional[str] = None) -> JobStore:
    return JobStore(SQLiteEngine(path, runner or ImmediateRunner()), key_path)
