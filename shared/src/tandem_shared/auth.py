"""JWT bearer authentication with roles, shared by every service that serves an API."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tandem_shared.envelope import utcnow
from tandem_shared.settings import RuntimeSettings

Role = Literal["reviewer", "senior", "admin", "auditor", "service"]
ROLES: tuple[str, ...] = get_args(Role)
MAX_QUALIFICATIONS = 256  # queues one person may be qualified for: far more than any team has
# A senior reviewer can do what a reviewer does; an admin what both do. Auditors stay apart.
_IMPLIED: dict[str, frozenset[str]] = {
    "senior": frozenset({"reviewer"}),
    "admin": frozenset({"reviewer", "senior"}),
}
ALGORITHM = "HS256"  # of the tokens this project mints itself, for development
# A subject is stored with every claim and decision: a name, not a document.
MAX_SUBJECT = 128
# The longest lifetime of a token minted here: a leaked token stops working within a day.
MAX_TOKEN_TTL = timedelta(hours=24)
# A token verified once is taken on its word for this long at most, never past its expiry: as
# long as the provider's keys are cached (see _jwks), so a withdrawn key stops its tokens as
# soon as it would without the cache.
VERIFIED_FOR = timedelta(minutes=5)
VERIFIED_MAX = 10_000  # tokens remembered at once; the oldest go first


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    # From the token: what the caller may see starts at one, and ends at the other.
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    # The named review queues the caller may take work from (the token's qualifications
    # claim, TANDEM_JWT_QUALIFICATIONS_CLAIM: an OIDC provider's "groups", say).
    qualifications: frozenset[str] = frozenset()

    def has(self, role: str) -> bool:
        return role in self.roles or any(role in _IMPLIED.get(r, ()) for r in self.roles)


class TokenError(Exception):
    pass


def mint_token(
    settings: RuntimeSettings,
    subject: str,
    roles: list[str],
    ttl: timedelta = timedelta(hours=8),
    qualifications: list[str] | None = None,
) -> str:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"a token lives more than 0 and at most {MAX_TOKEN_TTL} (asked: {ttl})")
    now = utcnow()
    claims = {
        "sub": subject,
        "roles": roles,
        "iat": now,
        "exp": now + ttl,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    if qualifications:
        claims[settings.jwt_qualifications_claim] = qualifications
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def verify_token(settings: RuntimeSettings, token: str) -> Principal:
    """The principal of a valid token; TokenError says why one is not. Blocks to fetch the
    provider's keys the first time (RS256): call it from a worker thread."""
    try:
        claims = jwt.decode(
            token,
            _key(settings, token),
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "aud", "iss"]},
            leeway=settings.jwt_leeway_s,
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from exc
    if len(str(claims["sub"])) > MAX_SUBJECT:
        raise TokenError(f"the subject is longer than {MAX_SUBJECT} characters")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("roles claim must be a list of strings")
    qualified = claims.get(settings.jwt_qualifications_claim, [])
    if not isinstance(qualified, list) or not all(isinstance(q, str) for q in qualified):
        raise TokenError(f"{settings.jwt_qualifications_claim} claim must be a list of strings")
    if len(qualified) > MAX_QUALIFICATIONS:
        raise TokenError(f"more than {MAX_QUALIFICATIONS} {settings.jwt_qualifications_claim}")
    return Principal(
        subject=str(claims["sub"]),
        roles=frozenset(roles),
        issued_at=_time(claims.get("iat")),
        expires_at=_time(claims["exp"]),
        qualifications=frozenset(qualified),
    )


def _time(value: object) -> datetime | None:
    """A NumericDate claim (seconds since the epoch) as a time; PyJWT checked its type."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _key(settings: RuntimeSettings, token: str) -> Any:
    if settings.jwt_algorithm == "HS256":
        return settings.jwt_secret.get_secret_value()
    assert settings.jwt_jwks_url is not None  # the settings refuse RS256 without it
    # The key named by the token's kid, from the provider's published set (cached).
    return _jwks(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key


@functools.cache
def _jwks(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)


class VerifiedTokens:
    """Tokens verified lately, by their raw text and the settings that verified them: checking
    a signature and its claims costs more than the rest of a small request, and a client sends
    the same token for hours. Only accepted tokens are kept; a refused one is verified (and
    refused) again each time. An entry lasts until the token's ``exp`` (the leeway is not
    borrowed: from then on the token is verified again, so it is refused exactly when it would
    be without the cache) and ``ttl`` at most."""

    def __init__(self, size: int = VERIFIED_MAX, ttl: timedelta = VERIFIED_FOR) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: dict[tuple[str, tuple[object, ...]], tuple[Principal, datetime]] = {}

    def get(self, settings: RuntimeSettings, token: str, now: datetime) -> Principal | None:
        key = (token, _verifier(settings))
        found = self._entries.get(key)
        if found is None:
            return None
        principal, until = found
        if now < until:
            return principal
        del self._entries[key]
        return None

    def put(
        self, settings: RuntimeSettings, token: str, principal: Principal, now: datetime
    ) -> None:
        until = now + self.ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        if now >= until:
            return
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[token, _verifier(settings)] = (principal, until)

    def clear(self) -> None:
        self._entries.clear()


def _verifier(settings: RuntimeSettings) -> tuple[object, ...]:
    """What decides whether a token is valid, and what it says: one verified under other
    settings (another app in the process, a rotated secret) is verified again."""
    return (
        settings.jwt_algorithm,
        settings.jwt_secret.get_secret_value(),
        settings.jwt_jwks_url,
        settings.jwt_audience,
        settings.jwt_issuer,
        settings.jwt_leeway_s,
        settings.jwt_qualifications_claim,
    )


verified_tokens = VerifiedTokens()
_bearer = HTTPBearer(auto_error=False)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    settings: RuntimeSettings = request.app.state.runtime.settings.runtime
    token, now = credentials.credentials, utcnow()
    principal = verified_tokens.get(settings, token, now)
    if principal is not None:
        return principal
    try:
        if settings.jwt_algorithm == "HS256":
            principal = verify_token(settings, token)
        else:
            principal = await asyncio.to_thread(verify_token, settings, token)
    except TokenError as exc:
        raise HTTPException(
            401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    verified_tokens.put(settings, token, principal, now)
    return principal


def require_role(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def _check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not any(principal.has(r) for r in roles):
            raise HTTPException(403, f"requires role {' or '.join(roles)}")
        return principal

    return _check
