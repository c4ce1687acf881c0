"""The services as their code defines them; every deployment file is checked against these."""

from __future__ import annotations

from tandem_audit_sink.settings import AuditSettings
from tandem_review_api.settings import ReviewApiSettings
from tandem_router.settings import RouterSettings
from tandem_scoring.settings import ScoringSettings
from tandem_shared.settings import ServiceSettings

SETTINGS: dict[str, type[ServiceSettings]] = {
    "scoring": ScoringSettings,
    "router": RouterSettings,
    "review-api": ReviewApiSettings,
    "audit-sink": AuditSettings,
}


def port(service: str) -> int:
    value: int = SETTINGS[service].model_fields["port"].default
    return value


def env_prefix(service: str) -> str:
    return str(SETTINGS[service].model_config["env_prefix"])


def group_id(service: str) -> str:
    return str(SETTINGS[service].model_fields["group_id"].default)
