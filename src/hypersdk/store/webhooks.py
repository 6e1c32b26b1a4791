"""API-added webhooks and every webhook's deliveries, in the job store's database, on its engine's thread.

Header values and secrets of webhooks are stored encrypted. Pending deliveries
are kept until they end, so a restart resumes them; of the ended ones only the
last ``keep`` per webhook are kept.
"""

from __future__ import annotations

import json
from typing import Callable

from ..webhooks.model import API, PENDING, Attempt, Delivery, Webhook
from .secretbox import SecretBox
from .engine import Db
from .jobs import JobStore


class WebhookStore:
    def __init__(self, store: JobStore, keep: int = 50, on_change: Callable[[], None] = lambda: None):
        """``on_change``: called once the set of webhooks changed (the other nodes reload it)."""
        self._with_db = store.run_with_db
        self._keep = keep
        self._node = store.node.name
        self._on_change = on_change

    def load_webhooks(self):
        return self._with_db(_thd_load_webhooks)

    def add_webhook(self, hook: Webhook):
        return self._with_db(_thd_add_webhook, hook).addCallback(self._changed)

    def delete_webhook(self, key: str):
        """Remove an API webhook and its deliveries."""
        return self._with_db(_thd_delete_webhook, key).addCallback(self._changed)

    def _changed(self, result):
        self._on_change()
        return result

    def pending(self):
        """This node's pending deliveries, oldest first."""
        return self._with_db(_thd_deliveries, f"WHERE state = ? AND {_MINE} ORDER BY seq", (PENDING, self._node))

    def recent(self, hook_key: str, limit: int):
        return self._with_db(_thd_deliveries, "WHERE hook_key = ? ORDER BY seq DESC LIMIT ?", (hook_key, limit))

    def add(self, delivery: Delivery):
        return self._with_db(_thd_add, delivery, self._node)

    def update(self, delivery: Delivery, now: float):
        """Store the attempts and state; an ended delivery prunes its webhook's history to ``keep``."""
        return self._with_db(_thd_update, delivery, now, self._keep)

    def drop_unknown(self, keys: list[str], now: float):
        """Mark pending deliveries of webhooks no longer configured as dropped; returns how many."""
        return self._with_db(_thd_drop_unknown, keys, now, self._node)


# A node sends its own deliveries (those from before nodes had names too).
_MINE = "(node = ? OR node IS NULL)"


def _thd_load_webhooks(db: Db, box: SecretBox) -> list[Webhook]:
    hooks = []
    for row in db.execute("SELECT * FROM webhooks ORDER BY seq"):
        secrets = box.open(row["secrets"])
        hooks.append(Webhook(
            key=row["id"], origin=API, url=row["url"], events=tuple(json.loads(row["events"])),
            enabled=bool(row["enabled"]), timeout=row["timeout"], retry_count=row["retry_count"],
            headers=json.loads(secrets.get("headers", "{}")), secret=secrets.get("secret"),
            created_at=row["created_at"],
        ))
    return hooks


def _thd_add_webhook(db: Db, box: SecretBox, h: Webhook) -> None:
    secrets = {"headers": json.dumps(h.headers), **({"secret": h.secret} if h.secret else {})}
    with db.transaction():
        db.execute("INSERT INTO webhooks (id, url, events, enabled, timeout, retry_count, secrets, created_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (h.key, h.url, json.dumps(list(h.events)), h.enabled, h.timeout, h.retry_count, box.seal(secrets),
                    h.created_at))


def _thd_delete_webhook(db: Db, box: SecretBox, key: str) -> None:
    with db.transaction():
        db.execute("DELETE FROM webhooks WHERE id = ?", (key,))
        db.execute("DELETE FROM webhook_deliveries WHERE hook_key = ?", (key,))


def _thd_add(db: Db, box: SecretBox, d: Delivery, node: str) -> None:
    with db.transaction():
        db.execute("INSERT INTO webhook_deliveries (id, hook_key, event, body, state, attempts, created_at, updated_at,"
                   " node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (d.id, d.hook_key, d.event, d.body, d.state, _attempts(d), d.created_at, d.created_at, node))


def _thd_update(db: Db, box: SecretBox, d: Delivery, now: float, keep: int) -> None:
    with db.transaction():
        db.execute("UPDATE webhook_deliveries SET state = ?, attempts = ?, updated_at = ? WHERE id = ?",
                   (d.state, _attempts(d), now, d.id))
        if d.state != PENDING:
            db.execute(
                "DELETE FROM webhook_deliveries WHERE hook_key = ? AND state != ? AND seq NOT IN"
                " (SELECT seq FROM webhook_deliveries WHERE hook_key = ? AND state != ? ORDER BY seq DESC LIMIT ?)",
                (d.hook_key, PENDING, d.hook_key, PENDING, keep))


def _thd_drop_unknown(db: Db, box: SecretBox, keys: list[str], now: float, node: str) -> int:
    known = f" AND hook_key NOT IN ({', '.join('?' * len(keys))})" if keys else ""  # (PostgreSQL: no empty IN)
    with db.transaction():
        return db.execute(f"UPDATE webhook_deliveries SET state = 'dropped', updated_at = ?"
                          f" WHERE state = ? AND {_MINE}{known}", (now, PENDING, node, *keys)).rowcount


def thd_adopt_deliveries(db: Db, lost_node: str, node: str) -> int:
    """A lost node's pending deliveries become ``node``'s to send; how many."""
    return db.execute("UPDATE webhook_deliveries SET node = ? WHERE node = ? AND state = ?",
                      (node, lost_node, PENDING)).rowcount


def _thd_deliveries(db: Db, box: SecretBox, where: str, args: tuple) -> list[Delivery]:
    return [
        Delivery(id=row["id"], hook_key=row["hook_key"], event=row["event"], body=bytes(row["body"]),
                 created_at=row["created_at"], state=row["state"],
                 attempts=tuple(Attempt(**a) for a in json.loads(row["attempts"])))
        for row in db.execute(f"SELECT * FROM webhook_deliveries {where}", args)
    ]


def _attempts(d: Delivery) -> str:
    return json.dumps([{"at": a.at, "duration": a.duration, "status_code": a.status_code, "error": a.error}
                       for a in d.attempts])
