"""Which database errors mean "unavailable" (retried until the outage ends) and which mean the
work itself is wrong (retried a few times, then dead-lettered): tandem_shared.db's helper,
used by the audit sink's and the review API's batch handlers."""

from __future__ import annotations

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine, is_unavailable, unavailable_is_transient
from tandem_shared.kafka import TransientError


class DriverError(Exception):
    """A driver's error as SQLAlchemy wraps it: it carries its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def wrapped(sqlstate: str, kind: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return kind("INSERT INTO ledger", {}, DriverError(sqlstate))


UNAVAILABLE: list[BaseException] = [
    OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked")),
    InterfaceError("SELECT 1", {}, Exception("connection is closed")),
    DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
    wrapped("08006"),  # connection failure
    wrapped("08001"),  # the client could not connect
    wrapped("57P01"),  # terminated by an administrator (a fast shutdown)
    wrapped("57P03"),  # the server is starting up
    wrapped("53300"),  # too many connections
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError(113, "No route to host"),
    TimeoutError("connect timed out"),
    PoolTimeout("QueuePool limit reached"),
    DisconnectionError("the pool found the connection dead"),
    pg.CannotConnectNowError("the database system is starting up"),  # unwrapped
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
]
WRONG_WORK: list[BaseException] = [
    IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    wrapped("23505", IntegrityError),  # unique violation
    wrapped("22P02", DataError),  # invalid text representation
    wrapped("42703", ProgrammingError),  # undefined column
    wrapped("40001"),  # a serialisation failure: the loop's few retries are enough
    StatementError("naive datetime given", "INSERT", {}, ValueError("naive")),
    pg.UniqueViolationError("duplicate key value"),
    ValueError("not a database error at all"),
    RuntimeError("handler bug"),
]


@pytest.mark.parametrize("error", UNAVAILABLE, ids=repr)
def test_an_unavailable_database_becomes_a_transient_error(error: BaseException) -> None:
    assert is_unavailable(error)
    with (
        pytest.raises(TransientError, match="review database unavailable") as raised,
        unavailable_is_transient("review database"),
    ):
        raise error
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("error", WRONG_WORK, ids=repr)
def test_errors_of_the_work_itself_pass_unchanged(error: BaseException) -> None:
    assert not is_unavailable(error)
    with pytest.raises(type(error)) as raised, unavailable_is_transient("review database"):
        raise error
    assert raised.value is error


async def test_a_real_refused_connection_is_unavailable() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")

    async def connect() -> None:
        with unavailable_is_transient("ledger database"):
            async with engine.connect():
                pass

    try:
        with pytest.raises(TransientError, match="ledger database unavailable"):
            await connect()
    finally:
        await engine.dispose()
