"""The hot path's statements on PostgreSQL, run by asyncpg itself on a connection of SQLAlchemy's
pool: each statement is compiled once by SQLAlchemy, then a request only binds its values and
sends it. SQLAlchemy's own execution around a statement (its execution context, result objects
and the hop into a greenlet) cost about 0.14 ms of CPU each, a tenth of a request.

Only for statements whose columns asyncpg returns as SQLAlchemy would: text, numbers,
booleans, aware times, and JSON, which the codec SQLAlchemy installs on its connections
decodes. Errors are raised as SQLAlchemy raises them (IntegrityError, InterfaceError,
DBAPIError with the driver's error as ``orig``), so an outage is still answered 503."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class Prepared:
    sql: str
    names: tuple[str, ...]  # the parameters in their $n order
    processors: tuple[Callable[[Any], Any] | None, ...]
    values: Mapping[str, Any]  # the values the statement binds itself (SET status = 'claimed')

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The values to send; KeyError for a parameter given no value."""
        args = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else self.values[name]
            args.append(value if process is None or value is None else process(value))
        return args


@cache
def prepared(statement: Executable, dialect: Dialect) -> Prepared:
    """The statement as SQLAlchemy would send it to asyncpg, and how it converts each value."""
    done = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
    names = tuple(done.positiontup or ())
    binds = [done.binds[name] for name in names]
    return Prepared(
        str(done),
        names,
        tuple(dialect.type_descriptor(b.type).bind_processor(dialect) for b in binds),
        {name: b.value for name, b in zip(names, binds, strict=True) if not b.required},
    )


class Direct:
    """One connection, its statements sent by asyncpg."""

    def __init__(self, connection: AsyncConnection, driver: Any) -> None:
        self.connection = connection
        self.driver = driver

    @classmethod
    async def of(cls, connection: AsyncConnection) -> Direct:
        raw = await connection.get_raw_connection()
        return cls(connection, raw.driver_connection)

    async def fetch(
        self, statement: Executable, params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        done = prepared(statement, self.connection.dialect)
        try:
            rows: Sequence[Mapping[str, Any]] = await self.driver.fetch(
                done.sql, *done.args(params)
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise await self._as_sqlalchemy(done.sql, exc) from exc
        return rows

    async def _as_sqlalchemy(self, sql: str, exc: Exception) -> DBAPIError:
        closed = self.driver.is_closed()
        if closed:  # the pool makes a new one rather than hand this one out again
            await self.connection.invalidate()
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return IntegrityError(sql, None, exc)
        if isinstance(exc, asyncpg.InterfaceError):
            return InterfaceError(sql, None, exc, connection_invalidated=closed)
        return DBAPIError(sql, None, exc, connection_invalidated=closed)
