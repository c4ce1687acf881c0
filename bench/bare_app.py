"""The least an HTTP endpoint on this stack costs: FastAPI under uvicorn, one POST route, a
small JSON answer, no database, no broker, no authentication.

    uv run python -m uvicorn bare_app:app --app-dir bench --port 8080

bench/review_api.py starts it as a process of its own and compares the review API with it.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="bare endpoint")


@app.post("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}
