"""The review-api's tables: what it materialises from Kafka, what people did, and the events
waiting in the outbox for Kafka."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)
from tandem_shared.db import UtcDateTime
from tandem_shared.envelope import utcnow

metadata = MetaData()

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("task_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # submitted | in_review | decided
    Column("decision", JSON, nullable=True),
    Column("submitted_at", UtcDateTime(), nullable=True),
    Column("decided_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

reviews = Table(
    "reviews",
    metadata,
    Column("review_id", String(36), primary_key=True),
    Column("task_id", String(128), nullable=False, unique=True),
    Column("task_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | claimed | escalated | decided
    Column("priority", Integer, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("qa_sample", Boolean, nullable=False),
    Column("required_approvals", Integer, nullable=False),
    Column("senior_only", Boolean, nullable=False),  # escalated: a senior reviewer decides
    Column("routed", JSON, nullable=False),  # the TaskRouted body, as published
    Column("traceparent", String(64), nullable=True),  # continues the task's trace on decision
    Column("claimed_by", String(128), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("claimed_at", UtcDateTime(), nullable=True),  # heartbeats extend a claim this far
    # Time on task: the seconds the holder worked up to active_at, their last sign of work
    # (the claim or a heartbeat); a decision adds the time since (queue.active_after).
    Column("active_seconds", Float, nullable=True),
    Column("active_at", UtcDateTime(), nullable=True),
    Column("outcome", String(64), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("decided_at", UtcDateTime(), nullable=True),
    # Set once when the review is still open at due_at: an SLA breach, handled per the policy.
    Column("breached_at", UtcDateTime(), nullable=True),
    Column("escalation_reason", Text, nullable=True),  # why a reviewer sent it to a senior
    # The named queue: only people qualified for it (their token says) take it; null: general.
    Column("queue", String(64), nullable=True),
    # Set by every insert and update: the live stream of queue changes follows it.
    Column("updated_at", UtcDateTime(), nullable=True, default=utcnow, onupdate=utcnow),
    Index("ix_reviews_queue", "status", "priority", "created_at"),
    Index("ix_reviews_due", "breached_at", "due_at"),
    Index("ix_reviews_updated", "updated_at"),
)
# The open reviews in queue order (claim-next stops at the first it may take) and the claims
# each person holds: both leave out the decided reviews, the bulk of the table in time. The
# queries that use them name the status as a literal, so the planner sees they apply.
_OPEN = reviews.c.status != literal_column("'decided'")
_CLAIMED = reviews.c.status == literal_column("'claimed'")
Index(
    "ix_reviews_open",
    reviews.c.priority.desc(),
    reviews.c.due_at,
    reviews.c.created_at,
    reviews.c.review_id,
    postgresql_where=_OPEN,
    sqlite_where=_OPEN,
)
Index("ix_reviews_held", reviews.c.claimed_by, postgresql_where=_CLAIMED, sqlite_where=_CLAIMED)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("review_id", String(36), ForeignKey("reviews.review_id"), nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("rationale", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("claimed_at", UtcDateTime(), nullable=True),  # when the approver's claim began
    Column("active_seconds", Float, nullable=True),  # the time they worked on it (measured)
    # What the approver said of the model on this case, if they did: 1 to 5, and a note.
    Column("explanation_useful", Integer, nullable=True),
    Column("trust", Integer, nullable=True),
    Column("note", Text, nullable=True),
    UniqueConstraint("review_id", "reviewer", name="uq_approvals_reviewer"),
)

# Each reviewer's verdict on a blind review before its model's view was shown to them: kept
# once, never changed, and read with their approval into the decision and its feedback.
first_looks = Table(
    "first_looks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("review_id", String(36), ForeignKey("reviews.review_id"), nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("review_id", "reviewer", name="uq_first_looks_reviewer"),
)

# Cases people flagged for the owners ("model clearly wrong", "data looks broken"): one of a
# kind per person and review, listed by GET /v1/flags and counted by tandem_review_flags_total.
flags = Table(
    "flags",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("review_id", String(36), ForeignKey("reviews.review_id"), nullable=False),
    Column("task_id", String(128), nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("model", String(200), nullable=False),  # name/version of the model that scored it
    Column("reviewer", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("review_id", "reviewer", "kind", name="uq_flags_reviewer_kind"),
    Index("ix_flags_created", "created_at"),
)

# When someone qualified for a named queue last asked for work (claim-next or a claim): a
# queue whose reviews wait longer than that with nobody about is unattended.
queue_activity = Table(
    "queue_activity",
    metadata,
    Column("queue", String(64), primary_key=True),
    Column("active_at", UtcDateTime(), nullable=False),
)

# Events written in the transaction of the change they report, sent to Kafka by the relay
# (outbox.py) and deleted once the broker acknowledged them. The id gives the order they go in.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),  # SQLite numbers only INTEGER keys
        primary_key=True,
        autoincrement=True,
    ),
    Column("topic", String(249), nullable=False),  # Kafka's longest topic name
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),  # the exact bytes to send
    Column("headers", JSON, nullable=False),  # [[name, base64 of the value's bytes], ...]
    Column("created_at", UtcDateTime(), nullable=False),
)
