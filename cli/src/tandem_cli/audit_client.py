"""The audit sink's verification as a client waits for it: a whole verification asked for now
(``POST /v1/audit/verify``), then its result read back once the sink has run it, so it covers
the ledger as it was when asked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx

VERIFY = "/v1/audit/verify"


class VerificationTimeout(TimeoutError):
    """The verification asked for did not finish in time."""


async def verify_now(
    client: httpx.AsyncClient,
    headers: Mapping[str, str] | None = None,
    within: float = 900.0,
    poll: float = 0.5,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 5.0,
) -> dict[str, Any]:
    """Ask for a whole verification and wait for it: its result (``ok``, ``entries``,
    ``tree_size``, ``failed_seq``, ``reason``, ...). ``progress`` hears how it goes every
    ``progress_every`` seconds; raises VerificationTimeout after ``within`` seconds."""
    asked = await client.post(VERIFY, headers=headers)
    asked.raise_for_status()
    requested_at = datetime.fromisoformat(asked.json()["requested_at"])
    result = asked.headers.get("Location", f"{VERIFY}?whole=true")
    started = time.monotonic()
    told = started
    while True:
        answer = await client.get(result, headers=headers)
        if answer.status_code == 200:
            report: dict[str, Any] = answer.json()
            if datetime.fromisoformat(report["started_at"]) >= requested_at:
                return report
            running = report.get("running")
            note = (
                f"verifying: {running['entries']} entries checked"
                if running and running.get("requested")
                else "waiting for the verification to start"
            )
        elif answer.status_code == 503:  # none finished yet: the answer says what is under way
            note = str(answer.json().get("detail"))
        else:
            answer.raise_for_status()
            note = f"answered {answer.status_code}"
        now = time.monotonic()
        if now - started >= within:
            raise VerificationTimeout(
                f"the verification asked for at {requested_at.isoformat()} did not finish "
                f"within {within:.0f} s ({note})"
            )
        if progress is not None and now - told >= progress_every:
            progress(note)
            told = now
        await asyncio.sleep(poll)
