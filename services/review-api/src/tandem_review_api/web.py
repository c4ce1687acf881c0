"""The reviewer console: one static page that works against this API with the caller's token."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).parent / "console" / "index.html"
router = APIRouter()


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/console", include_in_schema=False)
async def console() -> HTMLResponse:
    """Paste a token, see the queue live, claim, read the case and the model's reasons, decide."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})
