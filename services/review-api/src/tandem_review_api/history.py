"""A task's history for the people who review it: its lineage from the audit API (every event
of the task in pipeline order, from the tamper-evident ledger).

Read with the caller's own token, so the audit API's roles decide who sees it (auditors); the
review API adds its own rules first (the review must be one the caller may see, and a blind
one only after their first look: the history holds the model's view).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from tandem_review_api.errors import Forbidden, Unavailable

log = logging.getLogger(__name__)


class History:
    def __init__(self, audit_url: str | None, timeout_s: float) -> None:
        """``audit_url``: the audit API's base URL; None: no history is served."""
        self._client = (
            httpx.AsyncClient(base_url=audit_url, timeout=timeout_s) if audit_url else None
        )

    async def of(self, task_id: str, authorization: str) -> dict[str, Any]:
        """The task's lineage as the audit API returns it (no events yet: an empty list)."""
        if self._client is None:
            raise Unavailable("no audit API is configured: TANDEM_REVIEW_API_AUDIT_URL is unset")
        path = f"/v1/audit/tasks/{quote(task_id, safe='')}"
        try:
            answer = await self._client.get(path, headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            log.warning("the audit API did not answer for task %s: %r", task_id, exc)
            raise Unavailable("the audit API does not answer; try again") from exc
        if answer.status_code == 404:
            return {"task_id": task_id, "events": []}
        if answer.status_code in (401, 403):
            raise Forbidden("the audit API does not let your token read task history")
        if answer.status_code != 200:
            raise Unavailable(f"the audit API answered {answer.status_code}; try again")
        lineage: dict[str, Any] = answer.json()
        return lineage

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
