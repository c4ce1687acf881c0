"""The manifest that travels with every model: what it reads, what it answers, how it was made.

``models/NAME/VERSION/manifest.json`` is validated against these models when the model is
loaded, so a model whose description is incomplete or inconsistent is refused before it scores.
The published JSON Schema is ``docs/schemas/model-manifest.json``.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Share = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceDistribution(_Strict):
    """A training distribution, the baseline for drift (PSI): ``bin_edges`` are the interior cut
    points (a value equal to an edge falls in the bin above it), ``bin_fractions`` the share of
    training rows in each bin. Booleans have one edge at 0.5 (false, true); categories are
    binned by their index in ``categories`` (edges at 0.5, 1.5, ...)."""

    mean: float | None = None
    std: Annotated[float, Field(ge=0)] | None = None
    bin_edges: list[float]
    bin_fractions: Annotated[list[Share], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceDistribution:
        if len(self.bin_fractions) != len(self.bin_edges) + 1:
            raise ValueError("bin_fractions needs one more entry than bin_edges")
        if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must be strictly ascending")
        if not math.isclose(sum(self.bin_fractions), 1.0, abs_tol=1e-6):
            raise ValueError("bin_fractions must sum to 1")
        return self


class _Feature(_Strict):
    name: Name
    # Position among the features; the input columns follow this order.
    order: Annotated[int, Field(ge=0)]

    @property
    def width(self) -> int:
        """How many input columns the feature takes."""
        return 1


class NumericFeature(_Feature):
    type: Literal["numeric"]
    min: float
    max: float
    # Stands in for a missing or invalid value, so the task is still scored (and flagged).
    impute: float
    reference: ReferenceDistribution | None = None

    @model_validator(mode="after")
    def _range(self) -> NumericFeature:
        if not all(math.isfinite(v) for v in (self.min, self.max, self.impute)):
            raise ValueError(f"feature {self.name!r}: min, max and impute must be finite")
        if self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min is above max")
        if not self.min <= self.impute <= self.max:
            raise ValueError(f"feature {self.name!r}: impute lies outside [min, max]")
        return self

    def encode(self, value: float) -> list[float]:
        return [value]


class BooleanFeature(_Feature):
    """One input column: 0.0 for false, 1.0 for true."""

    type: Literal["boolean"]
    impute: bool
    reference: ReferenceDistribution | None = None

    def encode(self, value: bool) -> list[float]:
        return [1.0 if value else 0.0]


class CategoricalFeature(_Feature):
    """``one_hot``: one column per category (1.0 in the category's); ``ordinal``: one column
    holding the category's index in ``categories``."""

    type: Literal["categorical"]
    categories: Annotated[list[Name], Field(min_length=2)]
    encoding: Literal["one_hot", "ordinal"]
    impute: Name
    reference: ReferenceDistribution | None = None

    @model_validator(mode="after")
    def _categories(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"feature {self.name!r}: categories must be unique")
        if self.impute not in self.categories:
            raise ValueError(f"feature {self.name!r}: impute is not one of its categories")
        if self.reference and len(self.reference.bin_fractions) != len(self.categories):
            raise ValueError(f"feature {self.name!r}: reference needs one bin per category")
        return self

    @property
    def width(self) -> int:
        return len(self.categories) if self.encoding == "one_hot" else 1

    def encode(self, value: str) -> list[float]:
        index = self.categories.index(value)
        if self.encoding == "ordinal":
            return [float(index)]
        return [1.0 if i == index else 0.0 for i in range(len(self.categories))]


FeatureSpec = Annotated[
    NumericFeature | BooleanFeature | CategoricalFeature, Field(discriminator="type")
]


class LinearExplanation(_Strict):
    """Contribution of feature i to the log-odds of ``positive`` (a binary model):
    ``coefficients[i] * (x_i - impute_i)``, in raw feature units."""

    method: Literal["linear"]
    positive: Name
    coefficients: dict[Name, float]
    intercept: float


class OcclusionExplanation(_Strict):
    """Contribution of a feature: the predicted class's probability change when the feature is
    replaced by its ``impute`` value."""

    method: Literal["occlusion"]


class NoExplanation(_Strict):
    method: Literal["none"]


Explanation = Annotated[
    LinearExplanation | OcclusionExplanation | NoExplanation, Field(discriminator="method")
]


class Tensors(_Strict):
    input: Name
    label: Name
    probabilities: Name


class TrainingMetrics(_Strict):
    holdout_accuracy: Share
    # One-vs-rest, macro-averaged, for more than two labels.
    roc_auc: Share
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


class Segment(_Strict):
    """A slice of the population that validation reports on by itself: the rows whose
    ``feature`` falls in each band between ``edges`` (a region, an age band, a size class)."""

    feature: Name
    edges: Annotated[list[float], Field(min_length=1)]

    @model_validator(mode="after")
    def _sorted(self) -> Segment:
        if sorted(set(self.edges)) != self.edges:
            raise ValueError("segment edges must be increasing")
        return self


class ContextSegment(_Strict):
    """A slice per value of a context field (a clinic, a region): validation reports on each.
    The labels carry it when the policy names it among its ``segments``."""

    context: Name


class FeedbackWindow(_Strict):
    """The people's labels a retrained version learnt from, besides the original training set."""

    source: str
    labelled_since: datetime
    labelled_until: datetime
    rows: Annotated[int, Field(ge=1)]
    fingerprint: Digest


class ModelManifest(_Strict):
    name: Name
    version: Name
    task_types: Annotated[list[Name], Field(min_length=1)]
    features: Annotated[list[FeatureSpec], Field(min_length=1)]
    labels: Annotated[list[Name], Field(min_length=2)]
    tensors: Tensors
    # The model's confidence (top probability) on the training rows, the baseline for drift.
    confidence_reference: ReferenceDistribution | None = None
    explanation: Explanation = Field(default_factory=lambda: NoExplanation(method="none"))
    metrics: TrainingMetrics
    dataset: DatasetInfo
    training: Training
    model_sha256: Digest
    created_at: datetime
    segments: list[Segment | ContextSegment] = Field(default_factory=list)
    # Set on versions retrained with people's labels: which ones (dataset covers all rows).
    feedback: FeedbackWindow | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        names = [f.name for f in self.features]
        for segment in self.segments:
            if isinstance(segment, Segment) and segment.feature not in names:
                raise ValueError(f"segment feature {segment.feature!r} is not a feature")
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if sorted(f.order for f in self.features) != list(range(len(self.features))):
            raise ValueError("feature orders must be 0..n-1, each once")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if isinstance(self.explanation, LinearExplanation):
            self._check_linear(self.explanation, names)
        return self

    def _check_linear(self, explanation: LinearExplanation, names: list[str]) -> None:
        if len(self.labels) != 2 or explanation.positive not in self.labels:
            raise ValueError("a linear explanation needs two labels, positive one of them")
        if set(explanation.coefficients) != set(names):
            raise ValueError("a linear explanation needs one coefficient per feature")
        if any(isinstance(f, CategoricalFeature) for f in self.features):
            raise ValueError("a linear explanation needs numeric or boolean features")

    # Cached: both are read for every task scored.
    @cached_property
    def ordered_features(self) -> list[NumericFeature | BooleanFeature | CategoricalFeature]:
        """Features in the order of the model's input columns."""
        return sorted(self.features, key=lambda f: f.order)

    @cached_property
    def feature_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features)

    @cached_property
    def width(self) -> int:
        """Columns of the input tensor (a one-hot feature takes one per category)."""
        return sum(f.width for f in self.features)

    @property
    def missing_references(self) -> list[str]:
        """What has no reference distribution (feature names, and ``confidence``)."""
        missing = [f.name for f in self.ordered_features if f.reference is None]
        return [*missing, "confidence"] if self.confidence_reference is None else missing
