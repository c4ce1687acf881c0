"""The register's and the incidents' records on the control topic, read and written from a
request: each call reads the topic (a part of a second), as the other admin endpoints do."""

from __future__ import annotations

from fastapi import Request
from tandem_shared.control import publish_change, read_control, read_control_history
from tandem_shared.envelope import Event
from tandem_shared.events import ControlChanged


async def latest(request: Request, kind: str) -> list[ControlChanged]:
    """The latest record of every key of ``kind`` the topic holds."""
    runtime = request.app.state.runtime
    changes = await read_control(
        runtime.settings.kafka.bootstrap_servers, runtime.topics, runtime.control.trust
    )
    return [c for c in changes.values() if c.kind == kind]


async def history(request: Request, key: str) -> list[ControlChanged]:
    """Every record of ``key`` the topic still holds, oldest first."""
    runtime = request.app.state.runtime
    return await read_control_history(
        runtime.settings.kafka.bootstrap_servers, runtime.topics, key, runtime.control.trust
    )


async def publish(request: Request, change: Event[ControlChanged]) -> None:
    """Publish a change, signed with the review API's control key."""
    runtime = request.app.state.runtime
    await publish_change(runtime.publisher, runtime.topics, change, runtime.control.signer)
