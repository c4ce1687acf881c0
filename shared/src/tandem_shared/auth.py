"""JWT bearer authentication with roles, shared by every service that serves an API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tandem_shared.envelope import utcnow
from tandem_shared.settings import RuntimeSettings

Role = Literal["reviewer", "senior", "admin", "auditor", "service"]
ROLES: tuple[str, ...] = get_args(Role)
# A senior reviewer can do what a reviewer does; an admin what both do. Auditors stay apart.
_IMPLIED: dict[str, frozenset[str]] = {
    "senior": frozenset({"reviewer"}),
    "admin": frozenset({"reviewer", "senior"}),
}
ALGORITHM = "HS256"  # pinned: the token's own header never chooses


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles or any(role in _IMPLIED.get(r, ()) for r in self.roles)


class TokenError(Exception):
    pass


def mint_token(
    settings: RuntimeSettings, subject: str, roles: list[str], ttl: timedelta = timedelta(hours=8)
) -> str:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    now = utcnow()
    claims = {
        "sub": subject,
        "roles": roles,
        "iat": now,
        "exp": now + ttl,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def verify_token(settings: RuntimeSettings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from exc
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("roles claim must be a list of strings")
    return Principal(subject=str(claims["sub"]), roles=frozenset(roles))


_bearer = HTTPBearer(auto_error=False)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    settings: RuntimeSettings = request.app.state.runtime.settings.runtime
    try:
        return verify_token(settings, credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


def require_role(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def _check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not any(principal.has(r) for r in roles):
            raise HTTPException(403, f"requires role {' or '.join(roles)}")
        return principal

    return _check
