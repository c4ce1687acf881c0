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


@dataclass(frozen=True)
class ServerTls:
    """TLS as a production server has it: its certificate and key (PEM), and connections
    without TLS refused."""

    cert: Path
    key: Path


@dataclass
class PostgresServer:
    home: Path
    port: int = 5432
    tls: ServerTls | None = None
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
        settings: list[str] = []
        if self.tls is not None:
            settings = self._serve_tls(self.tls)
        self.process = Process.start(
            "postgres",
            [
                str(bin_dir / "postgres"),
                *settings,
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

    def _serve_tls(self, tls: ServerTls) -> list[str]:
        """The server's key where only its user reads it, as PostgreSQL insists, and every
        connection but TLS ones refused."""
        cert, key = self.home / "server.crt", self.home / "server.key"
        shutil.copyfile(tls.cert, cert)
        shutil.copyfile(tls.key, key)
        key.chmod(0o600)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            for path in (cert, key):
                shutil.chown(path, entry.pw_uid, entry.pw_gid)
        hba = self.home / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        if os.geteuid() == 0:
            shutil.chown(hba, pwd.getpwnam(PG_USER).pw_uid)
        return [
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={cert}",
            "-c", f"ssl_key_file={key}",
            "-c", f"hba_file={hba}",
        ]  # fmt: skip

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
