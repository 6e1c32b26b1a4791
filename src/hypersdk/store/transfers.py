"""Transfer checkpoints in the job store's SQLite database (run on its thread)."""

from __future__ import annotations

import json
import sqlite3
from typing import Sequence

from ..pipeline.transfer.plan import ChunkRecord


def thd_save_transfer(db: sqlite3.Connection, job_id: str, disk: int, info: dict) -> None:
    db.execute("DELETE FROM transfer_chunks WHERE job_id = ? AND disk = ?", (job_id, disk))
    db.execute("INSERT OR REPLACE INTO transfer_disks (job_id, disk, info) VALUES (?, ?, ?)",
               (job_id, disk, json.dumps(info)))


def thd_save_chunks(db: sqlite3.Connection, job_id: str, disk: int, records: Sequence[ChunkRecord]) -> None:
    db.executemany("INSERT OR REPLACE INTO transfer_chunks (job_id, disk, chunk, hash, zero) VALUES (?, ?, ?, ?, ?)",
                   [(job_id, disk, r.index, r.hash, int(r.zero)) for r in records])


def thd_transfers(db: sqlite3.Connection, job_id: str) -> dict[int, tuple[dict, dict[int, ChunkRecord]]]:
    found: dict[int, tuple[dict, dict[int, ChunkRecord]]] = {}
    for row in db.execute("SELECT disk, info FROM transfer_disks WHERE job_id = ?", (job_id,)):
        found[row[0]] = (json.loads(row[1]), {})
    for disk, chunk, digest, zero in db.execute(
            "SELECT disk, chunk, hash, zero FROM transfer_chunks WHERE job_id = ?", (job_id,)):
        if disk in found:
            found[disk][1][chunk] = ChunkRecord(chunk, digest, bool(zero))
    return found


def thd_clear_transfers(db: sqlite3.Connection, job_id: str) -> None:
    db.execute("DELETE FROM transfer_chunks WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM transfer_disks WHERE job_id = ?", (job_id,))


def thd_has_transfers(db: sqlite3.Connection, job_id: str) -> bool:
    return db.execute("SELECT 1 FROM transfer_disks WHERE job_id = ? LIMIT 1", (job_id,)).fetchone() is not None
