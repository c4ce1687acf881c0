"""Router settings from TANDEM_ROUTER_* (and TANDEM_KAFKA_*, TANDEM_* for the shared parts)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tandem_shared.settings import ServiceSettings

POLICY_IN_REPO = Path("deploy") / "local" / "policy.yaml"


def default_policy_file() -> Path:
    """The repository's local policy when running from a checkout; else relative to the cwd."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / POLICY_IN_REPO
        if candidate.is_file():
            return candidate
    return POLICY_IN_REPO


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_ROUTER_")

    port: int = 8002
    group_id: str = "tandem-router"
    policy_file: Path = Field(default_factory=default_policy_file)
    dedupe_capacity: int = Field(
        default=1_000_000,
        ge=1,
        description="task ids a replica remembers at most (TANDEM_KAFKA_TASK_RETENTION_MS holds"
        " for the ids kept; about 150 bytes of memory each)",
    )
    kill_switch: bool = Field(
        default=False,
        description="send every task to people, whatever the control topic says",
    )
    drift_vote_ttl_seconds: float = Field(
        default=600.0,
        gt=0,
        description="a scoring replica's drift alarm counts this long after it last said so"
        " (replicas repeat theirs every TANDEM_SCORING_DRIFT_REFRESH_SECONDS)",
    )
    control_stale_after_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds without an answer on the control topic before tasks go to review",
    )
