"""A throwaway PostgreSQL server from Debian's packages, run as the postgres user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tandem_cli.stack.process import Process, wait_until

PG_USER = "postgres"  # PostgreSQL refuses to run as root


def pg_bin() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (make setup installs Debian's package)")
    return versions[-1].parent


@dataclass
class PostgresServer:
    home: Path
    port: int = 5432
    process: Process | None = None

    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _as_pg(self) -> str | None:
        return PG_USER if os.geteuid() == 0 else None

    def start(self, timeout: float = 60.0) -> None:
        bin_dir = pg_bin()
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            for path in (self.home,):
                shutil.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=self._as_pg(),
            )
        self.process = Process.start(
            "postgres",
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.home}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            log=self.home / "postgres.log",
            user=self._as_pg(),
        )
        (self.home / "postgres.pid").write_text(str(self.process.pid))
        wait_until(self._ready, timeout, f"PostgreSQL on port {self.port}")

    def _ready(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise RuntimeError(f"PostgreSQL exited; see {self.home / 'postgres.log'}")
        result = subprocess.run(
            [str(pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def create_database(self, name: str) -> str:
        subprocess.run(
            [
                str(pg_bin() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f'CREATE DATABASE "{name}"',
            ],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        (self.home / "postgres.pid").unlink(missing_ok=True)
