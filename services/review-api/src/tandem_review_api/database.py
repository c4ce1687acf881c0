"""The review API's engines: one for transactions, one for work that is a single statement
(claim-next, a decision's read and its write, the relay's turns), whose connections are in
autocommit from the start, so that neither BEGIN and COMMIT nor switching a connection's
isolation level comes around each statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from tandem_shared.db import create_engine, is_sqlite


@dataclass(frozen=True)
class Engines:
    transactions: AsyncEngine
    statements: AsyncEngine  # autocommit; on SQLite, the same engine (see ReviewStore._once)

    async def dispose(self) -> None:
        await self.transactions.dispose()
        if self.statements is not self.transactions:
            await self.statements.dispose()


def review_engines(url: str, connections: int) -> Engines:
    """On PostgreSQL, ``connections`` kept open for single statements and half as many for
    transactions, and no more: a connection opened for a burst and closed after it (the
    pool's overflow) costs the server a new backend and its plans, more than many requests
    do; a request waits for a free one instead."""
    if is_sqlite(url):
        engine = create_engine(url)
        return Engines(engine, engine)
    # Not pinged as the shared engine's connections are: asyncpg pings in three round trips
    # (BEGIN, an empty query, ROLLBACK), more than a claim's own one. What the ping is for, a
    # connection the server closed (a restart, an idle timeout), is seen without asking:
    # asyncpg marks it closed when the socket closes.
    transactions = create_engine(url, pool_size=max(connections // 2, 2), pool_pre_ping=False)
    statements = create_engine(
        url,
        pool_size=connections,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=False,
    )
    for engine in (transactions, statements):
        event.listen(engine.sync_engine, "checkout", _closed_is_gone)
    return Engines(transactions, statements)


def _closed_is_gone(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A connection PostgreSQL closed is thrown away and the pool makes a new one. One whose
    server vanished without closing fails its statement instead: 503, and the pool's other
    connections are replaced with it."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed the connection")
