"""Session-wide real infrastructure: one Kafka broker and one PostgreSQL server per test run,
fresh topics (a uuid prefix) and fresh databases per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import free_port
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics, ensure_topics

from tests.service_utils import running


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tandem-tests-") as path:
        os.chmod(path, 0o777)  # the postgres user writes below it
        yield Path(path)


@pytest.fixture(scope="session")
def kafka_broker(work_dir: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(work_dir / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server(work_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(work_dir / "postgres", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kafka_settings(kafka_broker: KafkaBroker) -> KafkaSettings:
    """Broker settings with a topic prefix of this test's own."""
    return KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=3,
    )


@pytest.fixture
async def topics(kafka_settings: KafkaSettings) -> AsyncIterator[Topics]:
    names = Topics(kafka_settings.topic_prefix)
    await ensure_topics(
        kafka_settings.bootstrap_servers, names, partitions=kafka_settings.partitions
    )
    yield names


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Callable[[], str]:
    def _create() -> str:
        return postgres_server.create_database(f"t{uuid.uuid4().hex[:12]}")

    return _create


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tandem.db'}"
    create: Callable[[], str] = request.getfixturevalue("pg_database")
    return create()


@pytest.fixture
async def admin_api(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The review API in-process on SQLite, for what goes through Kafka (admin, access)."""
    settings = ReviewApiSettings(
        kafka=kafka_settings,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}",
        overdue_check_seconds=3600,
    )
    async with running(create_app(settings)) as client:
        yield client
