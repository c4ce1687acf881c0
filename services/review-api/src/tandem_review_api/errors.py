"""Errors that carry their HTTP meaning; one exception handler turns them into responses."""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from tandem_shared.db import answer_outages


class Problem(BaseModel):
    """What every refused request gets: what to fix, in a sentence."""

    detail: str = Field(examples=["review 5f0c… is claimed by ana"])


class InvalidRequest(BaseModel):
    """A request that does not match the API: each field that is wrong, and why."""

    detail: list[dict[str, Any]]


# Declared on every router, so the OpenAPI document names each error a client can get.
RESPONSES: dict[int | str, dict[str, Any]] = {
    # Refused before any route reads the body, so before authentication too.
    400: {
        "model": Problem,
        "description": "The body cannot be read: it is not UTF-8, or its JSON nests deeper"
        " than the limit (32 unless configured).",
    },
    401: {"model": Problem, "description": "No bearer token, or one that is not valid here."},
    403: {"model": Problem, "description": "The token's roles do not allow this."},
    404: {"model": Problem, "description": "No such review, task or model state."},
    409: {"model": Problem, "description": "The request conflicts with the current state."},
    413: {
        "model": Problem,
        "description": "The body is larger than the limit (1 MiB unless configured).",
    },
    422: {
        "model": InvalidRequest | Problem,
        "description": "The request is malformed, or its content cannot be accepted.",
    },
    503: {
        "model": Problem,
        "description": "The database is not reachable, or Kafka for a change that goes to it"
        " at once (model, policy and kill-switch changes), or the audit API for a task's"
        " history; try again.",
    },
}


class ApiError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unprocessable(ApiError):
    status_code = 422


class Forbidden(ApiError):
    status_code = 403


class Unavailable(ApiError):
    status_code = 503


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _handle(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    # Reviews, decisions and HTTP ingress go through the outbox and never wait for Kafka;
    # the control changes admins make are published at once, and wait for it.
    @app.exception_handler(KafkaError)
    async def _kafka_down(_: Request, exc: KafkaError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"Kafka is not reachable, try again: {exc}"}, status_code=503
        )

    answer_outages(app, "the database")
