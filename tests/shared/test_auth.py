"""Bearer tokens: HS256 with a local secret, RS256 with a provider's JWKS URL; every broken
token is refused with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI
from jwt.algorithms import RSAAlgorithm
from tandem_shared.auth import Principal, TokenError, mint_token, require_role, verify_token
from tandem_shared.settings import RuntimeSettings
from tandem_shared.signing import public_text

KID = "key-1"
TRUSTED = public_text(Ed25519PrivateKey.generate())  # a control key: production needs one


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def provider_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def jwks_url(provider_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A JWKS endpoint on 127.0.0.1, as an OIDC provider publishes its signing keys."""
    jwk = json.loads(RSAAlgorithm.to_jwk(provider_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


def claims(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base = {
        "sub": "ana",
        "roles": ["reviewer"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "aud": "tandem",
        "iss": "https://id.example.test",
    }
    return {**base, **changes}


def rs256(key: rsa.RSAPrivateKey, kid: str = KID, **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm="RS256", headers={"kid": kid})


def oidc(jwks_url: str) -> RuntimeSettings:
    return RuntimeSettings(
        env="production",
        control_trusted_keys=TRUSTED,
        jwt_algorithm="RS256",
        jwt_jwks_url=jwks_url,
        jwt_issuer="https://id.example.test",
    )


def test_a_provider_token_is_verified_with_its_published_key(
    provider_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    principal = verify_token(oidc(jwks_url), rs256(provider_key))
    assert principal.subject == "ana" and principal.has("reviewer")


def _segment(data: dict[str, Any]) -> str:
    raw = json.dumps(data, default=lambda d: int(d.timestamp())).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(payload: dict[str, Any]) -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': KID})}.{_segment(payload)}."


def _hmac_signed(secret: bytes, payload: dict[str, Any]) -> str:
    """Made by hand: PyJWT itself refuses to use a public key as an HMAC secret."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': KID})}.{_segment(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def broken_tokens(provider_key: rsa.RSAPrivateKey) -> dict[str, str]:
    past = datetime.now(UTC) - timedelta(minutes=10)
    public_pem = provider_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return {
        "alg_none": _unsigned(claims()),
        "wrong_key": rs256(rsa_key()),
        "unknown_kid": rs256(provider_key, kid="key-2"),
        "expired": rs256(provider_key, iat=past, exp=past + timedelta(minutes=5)),
        "wrong_audience": rs256(provider_key, aud="another-app"),
        "wrong_issuer": rs256(provider_key, iss="https://evil.example.test"),
        "tampered": _tampered(rs256(provider_key)),
        # The classic confusion: the public key used as an HMAC secret.
        "hs256_with_the_public_key": _hmac_signed(public_pem, claims()),
    }


def test_every_broken_provider_token_is_refused(
    provider_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    accepted = []
    for name, token in broken_tokens(provider_key).items():
        try:
            verify_token(oidc(jwks_url), token)
            accepted.append(name)
        except TokenError:
            continue
    assert accepted == []


def test_development_tokens_are_hs256_and_refused_where_rs256_is_pinned(jwks_url: str) -> None:
    development = RuntimeSettings()
    token = mint_token(development, "ana", ["admin"])
    assert verify_token(development, token).has("senior")
    with pytest.raises(TokenError):
        verify_token(oidc(jwks_url), token)


def test_settings_refuse_rs256_without_keys_and_the_placeholder_secret_in_production() -> None:
    with pytest.raises(ValueError, match="JWKS_URL"):
        RuntimeSettings(jwt_algorithm="RS256")
    with pytest.raises(ValueError, match="TANDEM_JWT_SECRET"):
        RuntimeSettings(env="production")


def test_production_refuses_an_hs256_secret_shorter_than_32_bytes() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        RuntimeSettings(env="production", jwt_secret="x" * 31)  # type: ignore[arg-type]
    RuntimeSettings(env="production", jwt_secret="x" * 32, control_trusted_keys=TRUSTED)  # type: ignore[arg-type]
    RuntimeSettings(jwt_secret="short")  # type: ignore[arg-type]  # development: anything


def test_a_clock_30_s_behind_the_issuer_still_accepts_its_tokens() -> None:
    settings = RuntimeSettings()
    now = datetime.now(UTC)

    def hs256(**changes: Any) -> str:
        body = claims(iss="tandem", **changes)
        return jwt.encode(body, settings.jwt_secret.get_secret_value(), algorithm="HS256")

    assert verify_token(settings, hs256(exp=now - timedelta(seconds=10))).subject == "ana"
    assert verify_token(settings, hs256(iat=now + timedelta(seconds=20))).subject == "ana"
    with pytest.raises(TokenError, match="expired"):
        verify_token(settings, hs256(exp=now - timedelta(seconds=45)))
    strict = RuntimeSettings(jwt_leeway_s=0)
    with pytest.raises(TokenError, match="expired"):
        verify_token(strict, hs256(exp=now - timedelta(seconds=10)))


@pytest.mark.parametrize("ttl", [timedelta(hours=24, seconds=1), timedelta(0), timedelta(-1)])
def test_a_token_is_minted_for_a_day_at_most(ttl: timedelta) -> None:
    with pytest.raises(ValueError, match="at most"):
        mint_token(RuntimeSettings(), "ana", ["reviewer"], ttl)


async def test_an_api_pinned_to_rs256_answers_401_or_403_by_token(
    provider_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    app = FastAPI()
    app.state.runtime = SimpleNamespace(settings=SimpleNamespace(runtime=oidc(jwks_url)))

    @app.get("/senior-only")
    async def senior_only(who: Annotated[Principal, Depends(require_role("senior"))]) -> str:
        return who.subject

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        senior = await client.get(
            "/senior-only", headers=bearer(rs256(provider_key, roles=["senior"]))
        )
        assert (senior.status_code, senior.json()) == (200, "ana")
        reviewer = await client.get("/senior-only", headers=bearer(rs256(provider_key)))
        assert reviewer.status_code == 403
        expired_at = datetime.now(UTC) - timedelta(minutes=1)
        expired = await client.get(
            "/senior-only", headers=bearer(rs256(provider_key, exp=expired_at, roles=["senior"]))
        )
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
        assert (await client.get("/senior-only")).status_code == 401
        for name, broken in broken_tokens(provider_key).items():
            refused = await client.get("/senior-only", headers=bearer(broken))
            assert refused.status_code == 401, name
            assert refused.json()["detail"].startswith("invalid token"), name
