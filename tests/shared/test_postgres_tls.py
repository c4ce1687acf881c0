"""PostgreSQL over TLS, against a real server that refuses connections without it: the URL's
libpq parameters (sslmode=verify-full, sslrootcert) verify the server against a CA the test
makes, a wrong CA or no TLS is refused, and the review API migrates and serves over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from tandem_cli.stack.postgres import PostgresServer, ServerTls
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.review_api.test_api import auth
from tests.shared.test_kafka_security import Authority, pem

pytestmark = pytest.mark.postgres


@dataclass
class TlsServer:
    server: PostgresServer
    ca: Path
    other_ca: Path

    def url(self, database: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.server.url(database)}?{query}" if query else self.server.url(database)


@pytest.fixture(scope="module")
def tls_server(work_dir: Path) -> Iterator[TlsServer]:
    home = work_dir / f"postgres-tls-{os.getpid()}"
    home.mkdir(mode=0o777)
    os.chmod(home, 0o777)
    authority, stranger = Authority.make("tandem test CA"), Authority.make("another CA")
    key, cert = authority.issue("postgres", server=True)
    files = {"server.crt": pem(cert), "server.key": pem(key)}
    files |= {"ca.pem": pem(authority.cert), "other-ca.pem": pem(stranger.cert)}
    for name, content in files.items():
        (home / name).write_bytes(content)
    tls = ServerTls(home / "server.crt", home / "server.key")
    server = PostgresServer(home / "pg", port=free_port(), tls=tls)
    server.start()
    try:
        server.create_database("tls")
        yield TlsServer(server, home / "ca.pem", home / "other-ca.pem")
    finally:
        server.stop()


async def answers(url: str) -> bool:
    """Whether the server answers over this URL, and over TLS."""
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            return bool((await c.execute(text(query))).scalar())
    except Exception:  # noqa: BLE001 - refused, in whichever way the driver says it
        return False
    finally:
        await engine.dispose()


async def test_verify_full_connects_and_anything_less_trusted_is_refused(
    tls_server: TlsServer,
) -> None:
    ca = str(tls_server.ca)
    assert await answers(tls_server.url("tls", sslmode="verify-full", sslrootcert=ca))
    wrong = str(tls_server.other_ca)
    assert not await answers(tls_server.url("tls", sslmode="verify-full", sslrootcert=wrong))
    assert not await answers(tls_server.url("tls", sslmode="disable"))  # the server refuses


@pytest.mark.kafka
async def test_the_review_api_migrates_and_serves_over_tls(
    tls_server: TlsServer, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    database = "review_tls"
    tls_server.server.create_database(database)
    url = tls_server.url(database, sslmode="verify-full", sslrootcert=str(tls_server.ca))
    async with review_api(kafka_settings, url) as (client, _):
        assert (await client.get("/readyz")).status_code == 200
        body = {"task_id": "over-tls", "task_type": "tumor_screening", "features": {"x": 1.0}}
        accepted = await client.post("/v1/tasks", json=body, headers=auth("p", "service"))
        assert accepted.status_code == 202, accepted.text
        task = await client.get("/v1/tasks/over-tls", headers=auth("a", "auditor"))
        assert task.json()["status"] == "submitted"
