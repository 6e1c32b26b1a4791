"""A real PostgreSQL server for the tests, run as the ``postgres`` user (initdb refuses root).

``PostgresServer.start()`` makes a throw-away cluster (trust authentication, no fsync) listening on
127.0.0.1 at a free port and on a private unix socket; ``new_database()`` gives each test a database
of its own. The server binaries come from Debian's postgresql package (the Makefile installs it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

USER = "postgres"  # created by Debian's postgresql-common


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, directory: Path, port: int):
        self.dir = directory
        self.port = port
        self.url = f"postgresql://test@127.0.0.1:{port}/postgres"

    @classmethod
    def start(cls, directory: Optional[Path] = None) -> "PostgresServer":
        directory = Path(directory or tempfile.mkdtemp(prefix="hypersdk-pg-"))
        data = directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(USER)
        for path in (directory, data):
            os.chown(path, user.pw_uid, user.pw_gid)
        server = cls(directory, _free_port())
        server._as_postgres([str(bindir() / "initdb"), "-D", str(data), "-U", "test", "-A", "trust", "--no-sync"])
        server.resume()
        return server

    def _as_postgres(self, argv: list[str], timeout: float = 60) -> None:
        result = subprocess.run(["runuser", "-u", USER, "--", *argv], capture_output=True, text=True,
                                timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr[-2000:]}")

    def resume(self) -> None:
        """Start (again) on the same port: a test may stop the server and start it again."""
        options = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c max_connections=300 -c synchronous_commit=off")
        self._as_postgres([str(bindir() / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-t", "30", "-o", options,
                           "-l", str(self.dir / "server.log"), "start"])

    def pause(self) -> None:
        """Stop the server at once (as a crash or a network cut would look to its clients)."""
        self._as_postgres([str(bindir() / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        try:
            self.pause()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
