"""A bearer token's signature is checked once, not on every request, and a token is refused
exactly when it would be without that: at its expiry, under other settings, when refused
before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from tandem_shared import auth
from tandem_shared.auth import Principal, VerifiedTokens, mint_token, require_role
from tandem_shared.envelope import utcnow
from tandem_shared.settings import RuntimeSettings


@pytest.fixture(autouse=True)
def forgotten() -> Iterator[None]:
    auth.verified_tokens.clear()
    yield
    auth.verified_tokens.clear()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens verified from here on, in turn."""
    seen: list[str] = []
    verify = auth.verify_token

    def counted(settings: RuntimeSettings, token: str) -> Principal:
        seen.append(token)
        return verify(settings, token)

    monkeypatch.setattr(auth, "verify_token", counted)
    return seen


def app_of(settings: RuntimeSettings) -> FastAPI:
    app = FastAPI()
    app.state.runtime = SimpleNamespace(settings=SimpleNamespace(runtime=settings))

    @app.get("/who")
    async def who(principal: Annotated[Principal, Depends(require_role("reviewer"))]) -> str:
        return principal.subject

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_of(RuntimeSettings(jwt_leeway_s=0)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_is_verified_once_while_it_lasts(
    client: httpx.AsyncClient, verifications: list[str]
) -> None:
    token = mint_token(RuntimeSettings(), "ana", ["reviewer"])
    for _ in range(3):
        answer = await client.get("/who", headers=bearer(token))
        assert (answer.status_code, answer.json()) == (200, "ana")
    assert verifications == [token]


async def test_a_token_remembered_is_refused_at_its_expiry(client: httpx.AsyncClient) -> None:
    token = mint_token(RuntimeSettings(), "ana", ["reviewer"], ttl=timedelta(seconds=1))
    assert (await client.get("/who", headers=bearer(token))).status_code == 200
    await asyncio.sleep(1.1)
    refused = await client.get("/who", headers=bearer(token))
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


async def test_a_refused_token_is_verified_and_refused_every_time(
    client: httpx.AsyncClient, verifications: list[str]
) -> None:
    other = RuntimeSettings(jwt_secret=SecretStr("another-secret-of-sufficient-length-000"))
    forged = mint_token(other, "ana", ["reviewer"])
    for _ in range(2):
        assert (await client.get("/who", headers=bearer(forged))).status_code == 401
    assert verifications == [forged, forged]


async def test_a_token_another_app_accepted_is_verified_here_again() -> None:
    token = mint_token(RuntimeSettings(), "ana", ["reviewer"])
    elsewhere = app_of(RuntimeSettings())
    here = app_of(RuntimeSettings(jwt_secret=SecretStr("another-secret-of-sufficient-length-000")))
    for app, status in ((elsewhere, 200), (here, 401)):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/who", headers=bearer(token))).status_code == status


def test_a_token_is_remembered_for_the_ttl_at_most_and_the_oldest_goes_first() -> None:
    settings, now = RuntimeSettings(), utcnow()
    cache = VerifiedTokens(size=2, ttl=timedelta(minutes=5))
    tokens = [mint_token(settings, f"r-{n}", ["reviewer"]) for n in range(3)]
    for token in tokens:
        cache.put(settings, token, auth.verify_token(settings, token), now)
    assert cache.get(settings, tokens[0], now) is None  # the oldest, gone for the newest
    assert cache.get(settings, tokens[2], now + timedelta(minutes=4)) is not None
    assert cache.get(settings, tokens[2], now + timedelta(minutes=5)) is None
