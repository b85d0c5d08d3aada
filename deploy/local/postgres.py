"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, in a temp directory."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from deploy.local.errors import ServiceStartError
from deploy.local.process import ManagedProcess, free_port
from deploy.local.tools import postgres_bindir

SUPERUSER = "royalty"


def _service_user() -> str | None:
    """initdb and postgres refuse to run as root: run them as the `postgres` account then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceStartError(
            "running as root and there is no `postgres` account to run the server as; "
            "run deploy/local/bootstrap.sh, which creates it"
        ) from exc
    return "postgres"


@dataclass
class Postgres:
    """One PostgreSQL server on a free port, trust auth on loopback, data in `workdir`.

    `durable=False` turns fsync off: the tests crash our processes, never the database's
    host, so they lose no guarantee by it and run much faster.

    When started as root the server runs as the `postgres` account, which may not be able to
    enter `workdir` (pytest's and mkdtemp's directories are private): the cluster then lives in
    its own temp directory owned by that account, removed by `stop()`. Logs stay in `workdir`.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    durable: bool = False
    start_timeout: float = 60.0
    _process: ManagedProcess | None = None
    _private_dir: Path | None = None
    startup_seconds: float = 0.0

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the root of its process tree)."""
        return self._process.pid if self._process is not None else None

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of a database on this server."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def start(self) -> Postgres:
        bindir = postgres_bindir()
        user = _service_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cluster = self.workdir
        if user is not None:
            if self._private_dir is None:
                self._private_dir = Path(tempfile.mkdtemp(prefix="royalty-pg-"))
                shutil.chown(self._private_dir, user)
            cluster = self._private_dir
        data = cluster / "data"
        sockets = cluster / "sockets"
        sockets.mkdir(exist_ok=True)
        if user is not None:
            shutil.chown(sockets, user)
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                user=user,
                timeout=120,
                check=False,
            )
            if done.returncode != 0:
                raise ServiceStartError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = self.workdir / "postgres.log"
        self._process = ManagedProcess("postgres", argv, log, user=user)
        self._process.start()
        self.startup_seconds = self._process.wait_ready(self._accepts, self.start_timeout)
        return self

    def _accepts(self) -> bool:
        with psycopg.connect(self._conninfo(), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, never user input
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def running(self) -> bool:
        return self._process is not None and self._process.running()
