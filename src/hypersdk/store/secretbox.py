"""Encryption of secrets at rest.

Secrets (vCenter passwords) are stored encrypted with Fernet (AES-128-CBC +
HMAC-SHA256) under a key kept in a file beside the database, created with mode
0600 on first start. A stolen database alone reveals no password.

The database keeps the key's fingerprint (a keyed hash of a constant, which tells nothing of the
key): a daemon whose key file is another one refuses to start, rather than fail every job it claims.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Optional

from cryptography.fernet import Fernet, InvalidToken

from ..errors import ConfigError, SecretsUnreadable

_FINGERPRINT_OF = b"hypersdk secrets key fingerprint v1"


class SecretBox:
    def __init__(self, key: bytes, path: Optional[str] = None):
        self._fernet = Fernet(key)
        self.fingerprint = hmac.new(key, _FINGERPRINT_OF, hashlib.sha256).hexdigest()
        self.path = path  # the key file, for messages

    @classmethod
    def generate(cls) -> "SecretBox":
        return cls(Fernet.generate_key())

    def seal(self, secrets: dict[str, str]) -> bytes | None:
        if not secrets:
            return None
        return self._fernet.encrypt(json.dumps(secrets).encode("utf-8"))

    def open(self, token: bytes | None) -> dict[str, str]:
        if not token:
            return {}
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise SecretsUnreadable(f"stored secrets cannot be opened with this node's key file"
                                    f"{f' ({self.path})' if self.path else ''}") from None


def thd_open_box(db, key_path: str) -> SecretBox:
    """The box of ``key_path``, checked against the key fingerprint the database keeps (stored at the
    first start): a key file that is not the database's key, or a missing one where the database has
    a key already, stops the start with a message saying what to do."""
    with db.transaction():
        stored = _stored_fingerprint(db)
        if stored is None:
            box = SecretBox(thd_load_or_create_key(key_path), key_path)
            if not _opens_what_is_sealed(db, box):
                raise ConfigError(f"the key file {key_path} cannot open the secrets stored in the database:"
                                  f" {_WHAT_TO_DO}")
            db.execute("INSERT INTO settings (name, value) VALUES ('key_fingerprint', ?) ON CONFLICT (name) DO NOTHING",
                       (box.fingerprint,))
            stored = _stored_fingerprint(db)  # (another node starting at once may have stored its own)
        elif not os.path.exists(key_path):
            raise ConfigError(f"the key file {key_path} does not exist, but the database was first used with a key"
                              f" (its fingerprint is stored): {_WHAT_TO_DO}")
        else:
            box = SecretBox(thd_load_or_create_key(key_path), key_path)
    if stored != box.fingerprint:
        raise ConfigError(f"the key file {key_path} is not the key the database was first used with (its"
                          f" fingerprint differs from the one stored then): {_WHAT_TO_DO}")
    return box


_WHAT_TO_DO = ("give this daemon the key file the database was first used with (every node sharing a database"
               " needs a copy of the same file; with SQLite it is the <database>.key saved with the database)")


def _stored_fingerprint(db) -> Optional[str]:
    row = db.one("SELECT value FROM settings WHERE name = 'key_fingerprint'")
    return None if row is None else row["value"]


def _opens_what_is_sealed(db, box: SecretBox) -> bool:
    """Whether ``box`` opens a secret of each table that holds some (a database from before the
    fingerprint was kept)."""
    for table in ("jobs", "schedules", "webhooks"):
        row = db.one(f"SELECT secrets FROM {table} WHERE secrets IS NOT NULL LIMIT 1")
        if row is not None:
            try:
                box.open(row["secrets"])
            except SecretsUnreadable:
                return False
    return True


def thd_load_or_create_key(path: str) -> bytes:
    """Read the key file, or create it (mode 0600, never overwriting; its directory 0700 if missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            key = f.read().strip()
        Fernet(key)  # raises ValueError on a damaged key file
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key
