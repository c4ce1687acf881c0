"""Settings shared by every service; each service adds its own under its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "tandem-development-secret-do-not-use-in-production"
# An HS256 key shorter than its hash is guessable offline from one token (RFC 7518, 3.2).
MIN_SECRET_BYTES = 32
TASK_RETENTION_MS = 7 * 24 * 3600 * 1000  # seven days


def default_models_dir() -> Path:
    """The model registry's folder when none is set: the nearest ``models/`` holding a model
    above this package (the repository's in a checkout, or an image that copies it beside
    the code), else ``./models``."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "models"
        if candidate.is_dir() and any(candidate.glob("*/*/manifest.json")):
            return candidate
    return Path("models")


class KafkaSettings(BaseSettings):
    """Read from TANDEM_KAFKA_*: one broker address for the whole stack."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "tandem."
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # How long a task id is remembered (the router's changelog): resubmitted within it, a task
    # is not decided again.
    task_retention_ms: int = Field(default=TASK_RETENTION_MS, ge=60_000)
    # How every client connects: TLS verifies the brokers against ssl_cafile (the system's
    # CAs when unset) and their names; a client certificate and key give mutual TLS; SASL
    # authenticates with a user and password (SCRAM, or PLAIN over TLS only).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _security_holds_together(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"TANDEM_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "TANDEM_KAFKA_SASL_USERNAME and TANDEM_KAFKA_SASL_PASSWORD"
            )
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise ValueError("SASL PLAIN sends the password as it is: use it over SASL_SSL only")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both TANDEM_KAFKA_SSL_CERTFILE and _SSL_KEYFILE")
        return self

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


class RuntimeSettings(BaseSettings):
    """Read from TANDEM_*: how the process runs, the same for every service."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_")

    env: Literal["development", "production"] = "development"
    # This process among the replicas of its service (a pod's name): stable transactional ids,
    # so a restarted process fences the transactions its predecessor left open at once.
    instance_id: str | None = None
    log_level: str = "INFO"
    log_json: bool = False
    # HS256 with a local secret (development), or RS256 with the keys an OIDC provider
    # publishes at a JWKS URL (production). The algorithm is pinned: a token's header never
    # chooses it.
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr = SecretStr(DEV_SECRET)
    jwt_jwks_url: str | None = None
    jwt_audience: str = "tandem"
    jwt_issuer: str = "tandem"
    # Clocks of the token's issuer and of this process may differ by this much.
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    # The claim listing the review queues a person is qualified for (a list of names).
    jwt_qualifications_claim: str = Field(default="groups", min_length=1)
    # Control records (policy, model versions, kill switch, drift alarms) are Ed25519-signed by
    # whoever publishes them, and followed only when a trusted key signed them: the public
    # keys, comma-separated, each optionally limited to kinds ("KEY:drift" or
    # "KEY:policy+kill_switch"). Outside development the trusted keys are required.
    control_signing_key: SecretStr | None = None
    control_trusted_keys: str = ""

    @model_validator(mode="after")
    def _keys_fit_the_algorithm(self) -> RuntimeSettings:
        if self.jwt_algorithm == "RS256" and not self.jwt_jwks_url:
            raise ValueError("TANDEM_JWT_ALGORITHM=RS256 needs TANDEM_JWT_JWKS_URL")
        if self.env == "development" or self.jwt_algorithm != "HS256":
            return self
        secret = self.jwt_secret.get_secret_value()
        if secret == DEV_SECRET:
            raise ValueError(
                "TANDEM_JWT_SECRET must be set outside development: the default is public"
            )
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"TANDEM_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes outside development"
            )
        return self

    @model_validator(mode="after")
    def _control_is_signed(self) -> RuntimeSettings:
        if self.env != "development" and not self.control_trusted_keys.strip():
            raise ValueError(
                "TANDEM_CONTROL_TRUSTED_KEYS must be set outside development: without them "
                "anyone who can write to the control topic changes the policy"
            )
        return self


class ServiceSettings(BaseSettings):
    """Base of each service's settings; subclasses set env_prefix and the default port."""

    host: str = "127.0.0.1"
    port: int = 8000
    batch_max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    # A fetched batch is handled in slices this big (see LoopConfig.slice_records).
    batch_slice_records: int = Field(default=100, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    # How long the broker keeps a dead process's open transaction before aborting it; read
    # committed readers of its partitions wait for it meanwhile.
    transaction_timeout_ms: int = Field(default=10_000, ge=1_000)
    # Working off a backlog, a transaction takes batches for this long (LoopConfig).
    commit_interval_ms: int = Field(default=100, ge=0)
    retry_backoff_s: float = Field(default=0.2, ge=0)
    # Request bodies: larger ones get 413, JSON nested deeper 400, before anything parses them.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
