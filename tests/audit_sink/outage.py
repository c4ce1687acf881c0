"""A PostgreSQL server of a test's own, to take down and bring back while a service runs: the
session's shared server must stay up for every other test."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import free_port, wait_until


@contextmanager
def postgres_of_its_own(work_dir: Path) -> Iterator[PostgresServer]:
    """Started here and stopped here, by its own pid, whatever the test did to it."""
    server = PostgresServer(work_dir / f"pg-outage-{uuid.uuid4().hex[:8]}", port=free_port())
    server.start()
    try:
        yield server
    finally:
        stop_now(server)


def stop_now(server: PostgresServer) -> None:
    """A fast shutdown (SIGINT), as ``pg_ctl restart`` does: open sessions are ended at once.
    The default SIGTERM would wait for the service's pooled connections to close."""
    if server.process is None:
        return
    pid = server.process.pid
    if server.process.alive():
        os.kill(pid, signal.SIGINT)
        wait_until(lambda: not server.process or not server.process.alive(), 30, "PostgreSQL down")
    server.stop()  # forgets the process and its pid file; nothing is left to signal


@asynccontextmanager
async def outage(server: PostgresServer, seconds: float) -> AsyncIterator[None]:
    """PostgreSQL down for the body and at least ``seconds``, then started again on its port
    and data."""
    await asyncio.to_thread(stop_now, server)
    started = asyncio.get_running_loop().time()
    try:
        yield
        left = seconds - (asyncio.get_running_loop().time() - started)
        if left > 0:
            await asyncio.sleep(left)
    finally:
        await asyncio.to_thread(server.start)
