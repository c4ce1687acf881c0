from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from tandem_shared.settings import ServiceSettings, default_models_dir


class ReviewApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_REVIEW_API_")

    port: int = 8000
    group_id: str = "tandem-review-api"
    database_url: str = "sqlite+aiosqlite:///.tandem/review-api.db"
    database_connections: int = Field(
        default=20,
        ge=2,
        description="Connections to PostgreSQL kept open for claims and decisions, and half as"
        " many for the rest; requests beyond them wait for one.",
    )
    lease_seconds: int = Field(default=300, ge=5, description="How long a claim holds a review.")
    longest_claim_seconds: int = Field(
        default=3600, ge=5, description="How long heartbeats may keep one claim in all."
    )
    claims_per_reviewer: int = Field(
        default=5, ge=1, description="How many reviews one person may hold at once."
    )
    page_size_max: int = Field(default=200, ge=1)
    stats_max_days: int = Field(
        default=92, ge=1, description="The longest window /v1/stats reads in one call."
    )
    minutes_per_review: float = Field(
        default=4.0,
        gt=0,
        description="A person's time per review, for the time-saved estimate where no review"
        " time was measured.",
    )
    away_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Time on task: a gap between two signs of work on a claim (the claim,"
        " heartbeats, the decision) longer than this counts this long; the console sends a"
        " heartbeat a minute.",
    )
    events_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often the live stream looks for queue changes."
    )
    events_max_subscribers: int = Field(
        default=200, ge=1, description="How many live streams one replica serves at once."
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="The model registry the scoring service serves (read-only): a review shows"
        " each feature beside the ranges of the model's manifest.",
    )
    audit_url: str | None = Field(
        default=None,
        description="The audit API (http://HOST:PORT): a review's task history is read from"
        " it with the caller's token; unset, no history is served.",
    )
    audit_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a task history waits for the audit API."
    )
    segment_window_days: float = Field(
        default=7.0,
        gt=0,
        le=92,
        description="Fair outcomes: the window of decisions each segment's rates are live over.",
    )
    segment_refresh_seconds: float = Field(
        default=300.0, gt=0, description="How often the segments' rates are computed again."
    )
    segment_values_max: int = Field(
        default=20,
        ge=1,
        le=200,
        description="The largest segments of each attribute the metrics name (by decisions).",
    )
    budget_window_days: float = Field(
        default=30.0,
        gt=0,
        le=92,
        description="Error budgets: the window of QA samples the live watch bounds the error by.",
    )
    budget_refresh_seconds: float = Field(
        default=300.0, gt=0, description="How often the error budgets are watched again."
    )
    overdue_check_seconds: float = Field(
        default=15.0, gt=0, description="How often reviews past their due time are handled."
    )
    outbox_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often the outbox relay looks for events to send."
    )
    # The Ed25519 key the decisions this API publishes are signed with (`tandem secrets`
    # makes one): a decision read back from Kafka closes a review only when a trusted key
    # signed it. Its own key is trusted; list the public keys of earlier ones, comma-separated,
    # while a rotation is under way.
    decision_signing_key: SecretStr | None = None
    decision_trusted_keys: str = ""

    @model_validator(mode="after")
    def _decisions_are_signed(self) -> ReviewApiSettings:
        if self.runtime.env != "development" and self.decision_signing_key is None:
            raise ValueError(
                "TANDEM_REVIEW_API_DECISION_SIGNING_KEY must be set outside development: "
                "without it anyone who can write to the decisions topic closes reviews"
            )
        return self
