"""Settings of the scoring service, read from TANDEM_SCORING_* (Kafka from TANDEM_KAFKA_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tandem_shared.settings import ServiceSettings, default_models_dir


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_SCORING_")

    port: int = 8001
    group_id: str = "tandem-scoring"
    models_dir: Path = Field(default_factory=default_models_dir)
    # task type -> "NAME" (its newest version) or "NAME/VERSION"; JSON in the environment.
    # Empty: the newest version of every model serves the task types its manifest lists.
    serve: dict[str, str] = Field(default_factory=dict)
    # onnxruntime threads per inference call; batches are small and cores are shared.
    inference_threads: int = Field(default=1, ge=1)
    # Batches of at least this many tasks are scored in a worker thread, so the event loop
    # keeps fetching and acknowledging; smaller ones inline, where the hand-off between
    # threads (the GIL's 5 ms switch interval) would cost more latency than it saves.
    thread_min_batch: int = Field(default=256, ge=1)
    # Slices as large as the default batch, so a default batch is scored whole: inference
    # gains from large batches, and only a heavy one leaves the event loop for a worker thread.
    batch_slice_records: int = Field(default=500, ge=1)
    # Drift: the population stability index of each feature and of the confidence over the
    # last drift_window values, against the manifest's reference. Judged on full windows by
    # default: PSI from a few hundred values is noisy enough to cross 0.2 with no drift at all.
    drift_window: int = Field(default=1000, ge=10)
    drift_threshold: float = Field(default=0.2, gt=0)
    drift_min_count: int = Field(default=1000, ge=1)
    # Each replica votes on drift apart (tandem_shared.drift_votes) and repeats its alarms this
    # often: the router stops counting a vote not repeated within its drift_vote_ttl_seconds.
    drift_refresh_seconds: float = Field(default=60.0, gt=0)
