"""Transfer checkpoints in the job store's database (run on its engine's thread)."""

from __future__ import annotations

import json
from typing import Sequence

from .checkpoints import ChunkRecord
from .engine import Db


def thd_save_transfer(db: Db, job_id: str, disk: int, info: dict) -> None:
    db.execute("DELETE FROM transfer_chunks WHERE job_id = ? AND disk = ?", (job_id, disk))
    db.execute("INSERT INTO transfer_disks (job_id, disk, info) VALUES (?, ?, ?)"
               " ON CONFLICT (job_id, disk) DO UPDATE SET info = excluded.info", (job_id, disk, json.dumps(info)))


def thd_save_change_id(db: Db, job_id: str, disk: int, change_id) -> None:
    """The changeId of the source a disk's target is now a whole copy of; its chunks stay."""
    row = db.one("SELECT info FROM transfer_disks WHERE job_id = ? AND disk = ?", (job_id, disk))
    info = json.loads(row["info"])
    info["identity"] = {**info["identity"], "change_id": change_id}
    db.execute("UPDATE transfer_disks SET info = ? WHERE job_id = ? AND disk = ?", (json.dumps(info), job_id, disk))


def thd_save_chunks(db: Db, job_id: str, disk: int, records: Sequence[ChunkRecord]) -> None:
    db.executemany("INSERT INTO transfer_chunks (job_id, disk, chunk, hash, zero) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (job_id, disk, chunk) DO UPDATE SET hash = excluded.hash, zero = excluded.zero",
                   [(job_id, disk, r.index, r.hash, bool(r.zero)) for r in records])


def thd_transfers(db: Db, job_id: str) -> dict[int, tuple[dict, dict[int, ChunkRecord]]]:
    found: dict[int, tuple[dict, dict[int, ChunkRecord]]] = {}
    for row in db.all("SELECT disk, info FROM transfer_disks WHERE job_id = ?", (job_id,)):
        found[row["disk"]] = (json.loads(row["info"]), {})
    for row in db.all("SELECT disk, chunk, hash, zero FROM transfer_chunks WHERE job_id = ?", (job_id,)):
        if row["disk"] in found:
            found[row["disk"]][1][row["chunk"]] = ChunkRecord(row["chunk"], row["hash"], bool(row["zero"]))
    return found


def thd_clear_transfers(db: Db, job_id: str) -> None:
    db.execute("DELETE FROM transfer_chunks WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM transfer_disks WHERE job_id = ?", (job_id,))


def thd_targets(db: Db, job_id: str) -> list[str]:
    """The destination files a job's checkpoints were taken of."""
    return [json.loads(row["info"])["target"] for row in db.all("SELECT info FROM transfer_disks WHERE job_id = ?",
                                                                 (job_id,))]


def thd_has_transfers(db: Db, job_id: str) -> bool:
    return db.one("SELECT 1 AS found FROM transfer_disks WHERE job_id = ? LIMIT 1", (job_id,)) is not None
