"""Encryption of secrets at rest.

Secrets (vCenter passwords) are stored encrypted with Fernet (AES-128-CBC +
HMAC-SHA256) under a key kept in a file beside the database, created with mode
0600 on first start. A stolen database alone reveals no password.
"""

from __future__ import annotations

import json
import os

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

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
            raise ValueError("stored secrets cannot be decrypted with this key file") from None


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
