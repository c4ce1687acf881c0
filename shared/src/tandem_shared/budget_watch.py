"""The live watch of an error budget, as the review API publishes it on the control topic (key
``error-budget/TASK_TYPE``, or ``error-budget/TASK_TYPE/ATTRIBUTE=VALUE`` where the budget is
kept per segment; kind ``error_budget``) and the router follows it: whether the QA samples'
upper bound on the error of a task type's (or segment's) automatic decisions has passed the
budget of the policy version that made them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tandem_shared.events import PolicyRef

KIND = "error_budget"


class BudgetWatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: Annotated[str, Field(min_length=1, max_length=64)]
    # Where the budget is kept per segment, which one: "attribute=value".
    segment: Annotated[str, Field(max_length=130)] | None = None
    policy: PolicyRef  # the version whose thresholds and budget the samples are judged by
    max_error: Annotated[float, Field(gt=0, le=0.5)]
    confidence: Annotated[float, Field(ge=0.5, le=0.999)]
    qa_samples: Annotated[int, Field(ge=0)]
    errors: Annotated[int, Field(ge=0)]
    upper_bound: Annotated[float, Field(ge=0, le=1)]
    breached: bool  # the bound passed the budget: the promise no longer shows
    at: datetime

    @property
    def scope(self) -> tuple[str, str | None]:
        """What it watches, as the router's policy names it (``Policy.budget_scope``)."""
        return self.task_type, self.segment


def budget_key(watch: BudgetWatch) -> str:
    scope = watch.task_type if watch.segment is None else f"{watch.task_type}/{watch.segment}"
    return f"error-budget/{scope}"
