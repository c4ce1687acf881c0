"""Builders of scored tasks and policies for the router tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tandem_policy.loader import parse_policy
from tandem_policy.policy import Policy
from tandem_shared.events import ModelRef, QualityFlag, Score, TaskScored, TaskSubmitted

SCORED_AT = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)

POLICY_YAML = """
name: test
version: 3
task_types:
  tumor_screening:
    outcomes: [benign, malignant]
    auto:
      benign: 0.97
      malignant: 0.99
    critical_approvals: 2
    qa_sample_rate: 0.0
    review_priority: 50
    review_due: PT4H
    quality_flags: review
"""


def policy(**overrides: Any) -> Policy:
    """The test policy, with fields of its tumor_screening rules replaced."""
    base = parse_policy(POLICY_YAML)
    rules = base.task_types["tumor_screening"].model_copy(update=overrides)
    # model_copy skips validation: round-trip so overrides are checked like a document.
    data = base.model_dump()
    data["task_types"]["tumor_screening"] = rules.model_dump()
    return Policy.model_validate(data)


def scored(
    task_id: str = "task-1",
    *,
    prediction: str = "benign",
    confidence: float = 0.99,
    task_type: str = "tumor_screening",
    critical: bool = False,
    priority: int = 50,
    features: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    flags: list[QualityFlag] | None = None,
) -> TaskScored:
    other = "malignant" if prediction == "benign" else "benign"
    return TaskScored(
        task=TaskSubmitted(
            task_id=task_id,
            task_type=task_type,
            features=features if features is not None else {"radius": 12.5},
            context=context or {},
            priority=priority,
            critical=critical,
        ),
        score=Score(
            model=ModelRef(name="tumor_screening", version="1"),
            prediction=prediction,
            probabilities={prediction: confidence, other: round(1 - confidence, 12)},
            confidence=confidence,
            quality_flags=flags or [],
        ),
        submitted_at=SCORED_AT - timedelta(seconds=5),
        scored_at=SCORED_AT,
    )


def missing_flag(feature: str = "radius") -> QualityFlag:
    return QualityFlag(code="missing", feature=feature, detail="imputed with the training mean")
