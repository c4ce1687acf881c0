"""The manifest that travels with every model: what it reads, what it answers, how it was made.

``models/NAME/VERSION/manifest.json`` is validated against these models when the model is
loaded, so a model whose description is incomplete or inconsistent is refused before it scores.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceDistribution(_Strict):
    """The training distribution of one feature, the baseline for drift (PSI): ``bin_edges``
    are the interior cut points, ``bin_fractions`` the share of training rows in each bin."""

    mean: float
    std: Annotated[float, Field(ge=0)]
    bin_edges: list[float]
    bin_fractions: list[Annotated[float, Field(ge=0, le=1)]]

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceDistribution:
        if len(self.bin_fractions) != len(self.bin_edges) + 1:
            raise ValueError("bin_fractions needs one more entry than bin_edges")
        if any(b < a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must be ascending")
        if self.bin_fractions and not math.isclose(sum(self.bin_fractions), 1.0, abs_tol=1e-6):
            raise ValueError("bin_fractions must sum to 1")
        return self


class FeatureSpec(_Strict):
    name: Name
    order: Annotated[int, Field(ge=0)]
    type: Literal["numeric"]
    min: float
    max: float
    # Stands in for a missing or invalid value, so the task is still scored (and flagged).
    impute: float
    reference: ReferenceDistribution | None = None

    @model_validator(mode="after")
    def _range(self) -> FeatureSpec:
        if not all(math.isfinite(v) for v in (self.min, self.max, self.impute)):
            raise ValueError(f"feature {self.name!r}: min, max and impute must be finite")
        if self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min is above max")
        if not self.min <= self.impute <= self.max:
            raise ValueError(f"feature {self.name!r}: impute lies outside [min, max]")
        return self


class Tensors(_Strict):
    input: Name
    label: Name
    probabilities: Name


class TrainingMetrics(_Strict):
    holdout_accuracy: Annotated[float, Field(ge=0, le=1)]
    roc_auc: Annotated[float, Field(ge=0, le=1)]
    train_rows: Annotated[int, Field(ge=1)]
    holdout_rows: Annotated[int, Field(ge=0)]


class DatasetInfo(_Strict):
    source: str
    split: str
    fingerprint: Digest


class Training(_Strict):
    algorithm: str
    libraries: dict[str, str] = Field(default_factory=dict)
    opset: dict[str, int] = Field(default_factory=dict)


class ModelManifest(_Strict):
    name: Name
    version: Name
    task_types: Annotated[list[Name], Field(min_length=1)]
    features: Annotated[list[FeatureSpec], Field(min_length=1)]
    labels: Annotated[list[Name], Field(min_length=2)]
    tensors: Tensors
    metrics: TrainingMetrics
    dataset: DatasetInfo
    training: Training
    model_sha256: Digest
    created_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if sorted(f.order for f in self.features) != list(range(len(self.features))):
            raise ValueError("feature orders must be 0..n-1, each once")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self

    # Cached: both are read for every task scored.
    @cached_property
    def ordered_features(self) -> list[FeatureSpec]:
        """Features in the column order of the model's input tensor."""
        return sorted(self.features, key=lambda f: f.order)

    @cached_property
    def feature_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features)

    @property
    def width(self) -> int:
        return len(self.features)
