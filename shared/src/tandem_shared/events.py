"""The v1 event contract: one pydantic model per CloudEvents ``type``.

These models are public: producers and consumers outside Tandem depend on them, so fields are
only ever added (optional) within a version; anything else is a new version.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

# No control characters (PostgreSQL cannot store NUL) and no "/" (ids are path segments).
TaskId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f/]+$")
]
# An RFC 3339 time carries its offset (the published schemas say "date-time"). A time without
# one is refused where it enters: downstream it cannot be compared with Tandem's own times, nor
# stored, and a handler failing on it would cost its whole batch retries.
Time = AwareDatetime
FeatureValue = float | int | bool | str | None
# The task's segment: the values of the context fields the policy names as segment attributes
# (``segments:``), each as text, "(none)" where the task has none. Outcomes are compared by it.
Segment = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=64)],
    Annotated[str, StringConstraints(max_length=64)],
]


class EventData(BaseModel):
    """Base of every event body; unknown fields are kept so newer producers do not break us."""

    model_config = ConfigDict(extra="allow", frozen=True)


class TaskSubmitted(EventData):
    task_id: TaskId
    task_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    features: dict[str, FeatureValue]
    context: dict[str, Any] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    critical: bool = False


class ModelRef(EventData):
    name: str
    version: str


class PolicyRef(EventData):
    name: str
    version: int


class QualityFlag(EventData):
    code: Literal["missing", "wrong_type", "out_of_range", "not_finite", "unknown_feature"]
    feature: str
    detail: str


class Contribution(EventData):
    feature: str
    contribution: float


class ShadowScore(EventData):
    """What a candidate version scoring beside the live one said; it never routes."""

    model: ModelRef
    prediction: str
    probabilities: dict[str, float]
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    agrees: bool
    confidence_delta: float  # shadow confidence minus live confidence


class Score(EventData):
    model: ModelRef
    prediction: str
    probabilities: dict[str, float]
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    quality_flags: list[QualityFlag] = Field(default_factory=list)
    explanation: list[Contribution] = Field(default_factory=list)
    shadow: ShadowScore | None = None


class TaskScored(EventData):
    task: TaskSubmitted
    score: Score
    submitted_at: Time
    scored_at: Time


class TaskRouted(EventData):
    task: TaskSubmitted
    score: Score
    route: Literal["review", "escalate"]
    reasons: list[str]
    policy: PolicyRef
    qa_sample: bool = False
    required_approvals: Annotated[int, Field(ge=1)] = 1
    outcomes: list[str]
    review_priority: Annotated[int, Field(ge=0, le=100)]
    due_at: Time
    # What the policy says happens to the review if it is still open at due_at.
    on_overdue: Literal["escalate", "pending", "fallback"] = "escalate"
    fallback_outcome: str | None = None
    submitted_at: Time
    routed_at: Time
    # Blind first look: reviewers record their own verdict before they see the model's
    # outcome, confidence and explanation (the policy says which reviews).
    blind: bool = False
    # The named queue the review goes to: only people qualified for it take it (the policy
    # says which); None is the general queue.
    queue: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    segment: Segment = Field(default_factory=dict)


class FirstLook(EventData):
    """One reviewer's verdict on a blind review before the model's view was revealed, and the
    outcome they gave after it."""

    reviewer: str
    before: str  # the verdict recorded blind
    after: str  # the outcome approved once the model's view was shown
    changed: bool  # the reveal changed the reviewer's verdict


class ReviewTime(EventData):
    """One person's time on a review: when their claim began, when they approved, and the
    time they worked in between (the claim and heartbeats; null when it was not measured)."""

    reviewer: str
    claimed_at: Time | None
    decided_at: Time
    active_seconds: float | None


class DecisionMade(EventData):
    task_id: TaskId
    task_type: str
    outcome: str
    # "policy": a review still open at its due time, decided with the policy's fallback outcome.
    decided_by: Literal["model", "human", "policy"]
    confidence: float | None
    model: ModelRef
    policy: PolicyRef
    reviewers: list[str] = Field(default_factory=list)
    rationale: str | None = None
    overrode_model: bool = False
    submitted_at: Time
    decided_at: Time
    # Ed25519 by the review API over the decision, its source and id (people's and its
    # fallback decisions; tandem_review_api.authorship); which key signed.
    signature: str | None = None
    key_id: str | None = None
    # On a blind review: each approver's verdict before and after the model's view.
    first_looks: list[FirstLook] = Field(default_factory=list)
    # People's decisions: each approver's time on the review, in the order they approved.
    review_times: list[ReviewTime] = Field(default_factory=list)
    segment: Segment = Field(default_factory=dict)


class FeedbackRecorded(EventData):
    task_id: TaskId
    task_type: str
    features: dict[str, FeatureValue]
    model: ModelRef
    prediction: str
    probabilities: dict[str, float]
    confidence: float
    label: str
    reviewer: str
    qa_sample: bool
    agreed: bool
    policy: PolicyRef
    labelled_at: Time
    # On a blind review: the label the reviewer gave before the model's view was revealed.
    first_look: str | None = None
    changed_after_reveal: bool | None = None
    # The reviewer's time on the review: when their claim began and the time they worked.
    claimed_at: Time | None = None
    active_seconds: float | None = None
    # What the reviewer said of the model on this case, if they did: 1 (not at all) to 5.
    explanation_useful: Annotated[int, Field(ge=1, le=5)] | None = None
    trust: Annotated[int, Field(ge=1, le=5)] | None = None
    note: str | None = None
    segment: Segment = Field(default_factory=dict)


class ControlChanged(EventData):
    kind: Literal[
        "policy", "model", "kill_switch", "drift", "model_registry", "risk", "incident",
        "error_budget",
    ]  # fmt: skip
    name: str
    value: dict[str, Any]
    changed_by: str
    changed_at: Time
    # Ed25519 over the change and its key (tandem_shared.control_signing); which key signed.
    signature: str | None = None
    key_id: str | None = None


class DeadLetter(EventData):
    """A record that can never be processed, with where it came from and why.

    ``payload`` is the original value as text; past a size limit it is cut, and
    ``payload_truncated`` says so. ``payload_size`` and ``payload_sha256`` always describe the
    whole original, so an operator can match it with the record still on its topic.
    """

    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_key: str | None
    service: str
    error: str
    error_type: str
    payload: str
    headers: dict[str, str]
    failed_at: Time
    payload_size: int | None = None
    payload_sha256: str | None = None
    payload_truncated: bool = False


class LedgerCheckpoint(EventData):
    """A signed tree head of the audit ledger (see the audit sink's checkpoint module)."""

    origin: str
    tree_size: int
    root_hash: str
    issued_at: Time
    public_key: str
    key_id: str
    signature: str


EVENT_TYPES: dict[str, type[EventData]] = {
    "tandem.task.submitted.v1": TaskSubmitted,
    "tandem.task.scored.v1": TaskScored,
    "tandem.task.routed.v1": TaskRouted,
    "tandem.decision.made.v1": DecisionMade,
    "tandem.feedback.recorded.v1": FeedbackRecorded,
    "tandem.control.changed.v1": ControlChanged,
    "tandem.deadletter.recorded.v1": DeadLetter,
    "tandem.audit.checkpoint.v1": LedgerCheckpoint,
}
TYPE_OF: dict[type[EventData], str] = {model: name for name, model in EVENT_TYPES.items()}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every event type, keyed by its CloudEvents type."""
    return {name: model.model_json_schema() for name, model in EVENT_TYPES.items()}
