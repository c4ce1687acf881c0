"""Database helpers: async engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), Alembic."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import DateTime, MetaData, Table, event, pool, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from tandem_shared.kafka import TransientError

log = logging.getLogger(__name__)

# SQLSTATEs of a server that cannot be reached or is going away, beside class 08 (connection
# exception): shut down by an operator or a crash, starting up, out of connection slots.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used now (down, restarting, unreachable,
    the connection lost) rather than that the work is wrong (an integrity or data error)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        return _unavailable_state(exc.orig)
    if isinstance(exc, OSError | TimeoutError | PoolTimeout | DisconnectionError):
        return True  # refused or reset connections, timeouts, the pool's own waits
    return _unavailable_state(exc)  # a driver error that reached us unwrapped


def _unavailable_state(error: BaseException | None) -> bool:
    """By SQLSTATE (asyncpg's and psycopg's errors carry it), so no driver is imported."""
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES)


@contextmanager
def unavailable_is_transient(what: str) -> Iterator[None]:
    """Raise an unavailable database as ``TransientError``, which the consumer loop retries for
    as long as the outage lasts; anything else passes unchanged (retried a few times, then
    dead-lettered). Wrap a batch handler's database work: ``with unavailable_is_transient(
    "review database"): await store.ingest(...)``."""
    try:
        yield
    except Exception as exc:
        if is_unavailable(exc):
            raise TransientError(f"{what} unavailable: {type(exc).__name__}: {exc}") from exc
        raise


def answer_outages(app: FastAPI, database: str) -> None:
    """An API's requests that find ``database`` down or restarting answer 503, the client's
    cue to try again, instead of a 500."""

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(OSError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc
        return JSONResponse({"detail": f"{database} is not reachable, try again"}, status_code=503)


def answers(engine: AsyncEngine, timeout_s: float = 2.0) -> Callable[[], Awaitable[bool]]:
    """A readiness check: whether the database answers a trivial query within ``timeout_s``."""

    async def check() -> bool:
        try:
            async with asyncio.timeout(timeout_s), engine.connect() as c:
                await c.execute(text("SELECT 1"))
        except Exception:
            log.info("the database does not answer", exc_info=True)
            return False
        return True

    return check


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, **options: Any) -> AsyncEngine:
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    defaults: dict[str, Any] = {"pool_pre_ping": True}
    if "poolclass" not in options:
        defaults["pool_size"] = 10
    url, tls = _postgres_tls(url)
    return create_async_engine(url, connect_args=tls, **(defaults | options))


def _postgres_tls(url: str) -> tuple[str, dict[str, Any]]:
    """libpq's TLS parameters in a PostgreSQL URL (``sslmode``, ``sslrootcert``, ``sslcert``,
    ``sslkey``), as asyncpg takes them: an SSL context, and the URL without them.
    ``verify-full`` checks the server's certificate against ``sslrootcert`` (the system's CAs
    when unset) and its host name; ``verify-ca`` the certificate only; ``require`` encrypts
    without checking; ``disable`` does not encrypt."""
    parsed = make_url(url)
    query = dict(parsed.query)
    mode = query.pop("sslmode", None)
    root, cert, key = (query.pop(name, None) for name in ("sslrootcert", "sslcert", "sslkey"))
    if mode is None and root is None:
        return url, {}
    bare = parsed.set(query=query).render_as_string(hide_password=False)
    if mode == "disable":
        return bare, {"ssl": False}
    context = ssl.create_default_context(cafile=str(root) if root else None)
    if mode in ("require", "prefer", "allow"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
    elif mode not in (None, "verify-full"):
        raise ValueError(f"sslmode {mode!r} is not one of libpq's")
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return bare, {"ssl": context}


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets readers work beside the single writer. It is stored in the file, and switching
    # needs a lock that a busy peer can refuse at once, so switch only when not yet switched.
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # a peer switching at the same time is fine
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                raise RuntimeError("cannot switch the SQLite database to WAL mode") from exc
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # SQLAlchemy emits BEGIN itself (below), so the driver must not open transactions of its own.
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock at BEGIN, waiting for the busy timeout. A deferred transaction that
    # reads first and writes later fails at once when another writer got in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(url: str, script_location: Path, revision: str = "head") -> None:
    """Bring the database to the newest migration, or to ``revision`` (Alembic runs its own
    loop in a thread)."""
    await asyncio.to_thread(command.upgrade, _alembic_config(url, script_location), revision)


def run_migrations(target_metadata: MetaData, version_table: str) -> None:
    """The body of every service's Alembic env.py. Each service keeps its own version table,
    so services sharing one database never mistake each other's migrations for their own."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def _run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite(url),
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def _online() -> None:
        # The service's own engine setup, so a new SQLite file is in WAL mode from the start.
        engine = create_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(_run)
        await engine.dispose()

    asyncio.run(_online())


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite would otherwise drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Tandem stores aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def insert_ignoring_conflicts(table: Table, dialect: Dialect) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on PostgreSQL and SQLite alike (idempotent sinks)."""
    if dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
