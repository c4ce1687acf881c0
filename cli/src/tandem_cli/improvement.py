"""The improvement loop's core: people's labels as rows, a candidate retrained with the model's
own recipe, and a validation of candidate against live on labels the candidate never saw.

Rows are what ``tandem feedback export`` writes (one per task, its last label, the features as
columns), read from the feedback topic or from such a file. Nothing here promotes anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel
from tandem_policy.policy import Policy, decide
from tandem_policy.replay import human_outcomes, scored_between
from tandem_scoring.manifest import (
    ContextSegment,
    DatasetInfo,
    FeedbackWindow,
    ModelManifest,
    NumericFeature,
    Segment,
    TrainingMetrics,
)
from tandem_scoring.registry import LoadedModel, ModelRegistry, load_model, read_manifest
from tandem_scoring.scorer import Scorer, ScoreResult
from tandem_shared.events import TaskScored, TaskSubmitted
from tandem_shared.fairness import Gap, wilson
from tandem_shared.promotion import Evidence, Scores, SegmentResult
from tandem_shared.topics import Topics

from tandem_cli.feedback import SEGMENT_COLUMN
from tandem_cli.figures import interval
from tandem_cli.figures import share as shown

Row = dict[str, Any]
ECE_BINS = 10


class ImprovementError(ValueError):
    """What the loop cannot do with the rows or models given; the message says why."""


# ---- the registry ------------------------------------------------------------------------------


def _version_number(path: Path) -> int | None:
    return int(path.name) if path.name.isdigit() else None


def versions(models_dir: Path, name: str) -> list[str]:
    """The numbered versions of a model in the registry, oldest first."""
    found = [v for p in (models_dir / name).glob("*") if (v := _version_number(p)) is not None]
    return [str(v) for v in sorted(found)]


def load_recipe(models_dir: Path, name: str) -> ModuleType:
    """The training script that made the model (``train_NAME.py`` in the registry): a candidate
    is trained by the same recipe, never by another."""
    path = models_dir / f"train_{name}.py"
    if not path.is_file():
        raise ImprovementError(f"no recipe for {name}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"train_{name}", path)
    if spec is None or spec.loader is None:
        raise ImprovementError(f"cannot load the recipe {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for needed in ("original_train", "candidate"):
        if not hasattr(module, needed):
            raise ImprovementError(f"the recipe {path} cannot retrain: it has no {needed}()")
    return module


# ---- rows --------------------------------------------------------------------------------------


def labelled_at(row: Row) -> datetime:
    value = row["labelled_at"]
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def for_model(rows: Sequence[Row], manifest: ModelManifest) -> list[Row]:
    """The rows of the model's task types whose label it knows, oldest first."""
    wanted = [
        r
        for r in rows
        if r.get("task_type") in manifest.task_types and r.get("label") in manifest.labels
    ]
    return sorted(wanted, key=lambda r: (labelled_at(r), str(r["task_id"])))


def matrix(rows: Sequence[Row], manifest: ModelManifest) -> tuple[NDArray[np.float64], list[str]]:
    """Features in the model's column order, and the labels; numeric features only (the
    recipes that retrain have only those)."""
    columns = []
    for feature in manifest.ordered_features:
        if not isinstance(feature, NumericFeature):
            raise ImprovementError(f"feature {feature.name} is not numeric: no recipe for it")
        columns.append(feature.name)
    values = np.empty((len(rows), len(columns)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, name in enumerate(columns):
            value = row.get(name)
            if not isinstance(value, int | float) or value != value:
                raise ImprovementError(f"task {row['task_id']} has no number for {name}")
            values[i, j] = float(value)
    return values, [str(r["label"]) for r in rows]


def fingerprint(features: NDArray[np.float64], labels: Sequence[str]) -> str:
    """sha256 of the rows' feature bytes (little-endian float64) and labels, as datasets do."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features, dtype="<f8").tobytes())
    digest.update("\n".join(labels).encode())
    return digest.hexdigest()


# ---- retraining --------------------------------------------------------------------------------


class Registration(BaseModel):
    """What the registry records of a new version on the control topic (and so in the audit
    trail): the data it learnt from, people's labels included, and how well it did."""

    action: str = "registered"
    version: str
    model_sha256: str
    dataset: DatasetInfo
    feedback: FeedbackWindow | None
    metrics: TrainingMetrics

    @classmethod
    def of(cls, manifest: ModelManifest) -> Registration:
        return cls(
            version=manifest.version,
            model_sha256=manifest.model_sha256,
            dataset=manifest.dataset,
            feedback=manifest.feedback,
            metrics=manifest.metrics,
        )


def retrain(
    models_dir: Path,
    name: str,
    rows: Sequence[Row],
    source: str,
    weight: float,
    until: datetime | None = None,
) -> ModelManifest:
    """A new version of ``name``: its original training rows and people's labels (those up to
    ``until``), each label counted ``weight`` times, fitted by the model's own recipe."""
    known = versions(models_dir, name)
    if not known:
        raise ImprovementError(f"no version of {name} in {models_dir}")
    base = read_manifest(models_dir / name / known[-1])
    recipe = load_recipe(models_dir, name)
    learnt = [r for r in for_model(rows, base) if until is None or labelled_at(r) <= until]
    if not learnt:
        raise ImprovementError(f"no labels for {name} to learn from")
    original = recipe.original_train()
    extra, extra_labels = matrix(learnt, base)
    features = np.vstack([original.features, extra])
    labels = np.concatenate([original.labels, np.asarray(extra_labels)])
    weights = np.concatenate([np.ones(len(original)), np.full(len(learnt), weight)])
    window = FeedbackWindow(
        source=source,
        labelled_since=labelled_at(learnt[0]),
        labelled_until=labelled_at(learnt[-1]),
        rows=len(learnt),
        fingerprint=fingerprint(extra, extra_labels),
    )
    version = str(int(known[-1]) + 1)
    combined = type(original)(features, labels)
    # Written aside, checked as scoring will check it, then moved in whole: a failed run
    # leaves no version behind, and scoring never sees half of one.
    staging = Path(tempfile.mkdtemp(prefix=".retrain-", dir=models_dir))
    try:
        written = staging / name / version
        manifest: ModelManifest = recipe.candidate(combined, written, version, window, weights)
        load_model(written)
        os.replace(written, models_dir / name / version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


# ---- validation --------------------------------------------------------------------------------


def held_out(rows: Sequence[Row], candidate: ModelManifest) -> list[Row]:
    """Labels the candidate never trained on: those given after its feedback window."""
    mine = for_model(rows, candidate)
    if candidate.feedback is None:
        return mine
    return [r for r in mine if labelled_at(r) > candidate.feedback.labelled_until]


def tasks_of(rows: Sequence[Row], manifest: ModelManifest) -> list[TaskSubmitted]:
    names = [f.name for f in manifest.ordered_features]
    return [
        TaskSubmitted(
            task_id=str(r["task_id"]),
            task_type=str(r["task_type"]),
            features={n: r[n] for n in names if r.get(n) is not None},
        )
        for r in rows
    ]


def score(model: LoadedModel, tasks: Sequence[TaskSubmitted]) -> list[ScoreResult]:
    registry = ModelRegistry(dict.fromkeys(model.manifest.task_types, model))
    results = Scorer(registry, top_k=0).predict(tasks)
    scored = [r for r in results if isinstance(r, ScoreResult)]
    if len(scored) != len(tasks):
        raise ImprovementError(f"{model.key} refused {len(tasks) - len(scored)} of the tasks")
    return scored


def scores_of(
    results: Sequence[ScoreResult],
    labels: Sequence[str],
    tasks: Sequence[TaskSubmitted],
    policy: Policy,
) -> Scores:
    """Accuracy, Brier score, calibration error, and what the policy would automate."""
    right = [r.prediction == label for r, label in zip(results, labels, strict=True)]
    brier = [
        sum((p - (1.0 if outcome == label else 0.0)) ** 2 for outcome, p in r.probabilities.items())
        for r, label in zip(results, labels, strict=True)
    ]
    now = datetime.now(UTC)
    automated = []
    for r, task, ok in zip(results, tasks, right, strict=True):
        scored = TaskScored(task=task, score=r.to_score(), submitted_at=now, scored_at=now)
        routing = decide(policy, scored, now)
        if routing.route == "auto" and not routing.qa_sample:
            automated.append(ok)
    return Scores(
        accuracy=_mean(right),
        brier=_mean(brier),
        ece=calibration_error([r.confidence for r in results], right),
        automation_rate=len(automated) / len(results) if results else 0.0,
        automated_accuracy=_mean(automated) if automated else None,
    )


def calibration_error(confidences: Sequence[float], right: Sequence[bool]) -> float:
    """Expected calibration error: per confidence bin, |accuracy − mean confidence|, weighted
    by the bin's share of rows."""
    if not confidences:
        return 0.0
    bins: dict[int, list[tuple[float, bool]]] = {}
    for c, ok in zip(confidences, right, strict=True):
        bins.setdefault(min(int(c * ECE_BINS), ECE_BINS - 1), []).append((c, ok))
    total = len(confidences)
    return sum(
        len(members)
        / total
        * abs(_mean([ok for _, ok in members]) - _mean([c for c, _ in members]))
        for members in bins.values()
    )


@dataclass(frozen=True)
class Band:
    """Rows whose feature is in [low, high); an open end is None."""

    feature: str
    low: float | None
    high: float | None

    @property
    def name(self) -> str:
        if self.low is None:
            return f"{self.feature} < {self.high:g}"
        if self.high is None:
            return f"{self.feature} ≥ {self.low:g}"
        return f"{self.low:g} ≤ {self.feature} < {self.high:g}"

    def __contains__(self, row: Row) -> bool:
        value = float(row[self.feature])
        return (self.low is None or value >= self.low) and (self.high is None or value < self.high)


def segment_bands(segment: Segment) -> list[Band]:
    """Each band of a segment, from below its first edge to above its last."""
    edges: list[float | None] = [None, *segment.edges, None]
    return [Band(segment.feature, low, high) for low, high in pairwise(edges)]


def validate(
    models_dir: Path,
    name: str,
    candidate: str,
    live: str,
    rows: Sequence[Row],
    policy: Policy,
    margin: float,
) -> Evidence:
    """Candidate against live on the held-out labels, overall and by the manifest's segments."""
    cand = load_model(models_dir / name / candidate)
    current = load_model(models_dir / name / live)
    test = held_out(rows, cand.manifest)
    if not test:
        raise ImprovementError(
            f"no labels given after version {candidate}'s training window to validate on"
        )
    tasks = tasks_of(test, cand.manifest)
    labels = [str(r["label"]) for r in test]
    live_results, cand_results = score(current, tasks), score(cand, tasks)
    live_scores = scores_of(live_results, labels, tasks, policy)
    cand_scores = scores_of(cand_results, labels, tasks, policy)
    whole_live = live_outcomes(test)
    segments = [
        _with_live(
            _segment_result(
                slice_name,
                [live_results[i] for i in idx],
                [cand_results[i] for i in idx],
                [labels[i] for i in idx],
                [tasks[i] for i in idx],
                policy,
                cand_scores,
                margin,
            ),
            live_outcomes([test[i] for i in idx]),
            whole_live,
        )
        for segment in cand.manifest.segments
        for slice_name, idx in slices(segment, test)
    ]
    return Evidence(
        model=name,
        live=live,
        candidate=candidate,
        rows=len(test),
        labelled_since=labelled_at(test[0]),
        labelled_until=labelled_at(test[-1]),
        policy=f"{policy.name} v{policy.version}",
        margin=margin,
        live_scores=live_scores,
        candidate_scores=cand_scores,
        segments=segments,
    )


def slices(segment: Segment | ContextSegment, rows: Sequence[Row]) -> list[tuple[str, list[int]]]:
    """Each slice of a segment with its rows: a feature's bands, or a context field's values
    (the labels carry those the policy names among its segments)."""
    if isinstance(segment, Segment):
        return [
            (band.name, [i for i, r in enumerate(rows) if r in band])
            for band in segment_bands(segment)
        ]
    column = f"{SEGMENT_COLUMN}{segment.context}"
    values: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.get(column) is not None:
            values[str(r[column])].append(i)
    if not values:
        raise ImprovementError(
            f"no label carries context {segment.context!r}: name it among the policy's "
            "segments, so that decisions and labels carry it"
        )
    return [(f"{segment.context}={value}", idx) for value, idx in sorted(values.items())]


@dataclass(frozen=True)
class LiveOutcomes:
    """What happened live on labelled rows (``tandem feedback export`` writes ``agreed`` and
    ``qa_sample``): people's labels against the model that scored them, overall and on the QA
    samples (automatic decisions people checked). None where the rows do not say."""

    override_rate: float | None
    qa_samples: int
    qa_accuracy: float | None
    qa_accuracy_interval: tuple[float, float] | None


def live_outcomes(rows: Sequence[Row]) -> LiveOutcomes:
    said = [r for r in rows if isinstance(r.get("agreed"), bool)]
    checked = [r for r in said if r.get("qa_sample") is True]
    right = sum(r["agreed"] for r in checked)
    return LiveOutcomes(
        override_rate=1 - _mean([r["agreed"] for r in said]) if said else None,
        qa_samples=len(checked),
        qa_accuracy=right / len(checked) if checked else None,
        qa_accuracy_interval=wilson(right, len(checked)),
    )


def _with_live(result: SegmentResult, segment: LiveOutcomes, whole: LiveOutcomes) -> SegmentResult:
    """The segment's live outcomes, and how they depart from all rows'."""
    return result.model_copy(
        update={
            "override_rate": segment.override_rate,
            "qa_samples": segment.qa_samples,
            "qa_accuracy": segment.qa_accuracy,
            "qa_accuracy_interval": segment.qa_accuracy_interval,
            "disparity": {
                **result.disparity,
                "override_rate": Gap.of(segment.override_rate, whole.override_rate),
                "qa_accuracy": Gap.of(segment.qa_accuracy, whole.qa_accuracy),
            },
        }
    )


def _segment_result(
    name: str,
    live: Sequence[ScoreResult],
    candidate: Sequence[ScoreResult],
    labels: Sequence[str],
    tasks: Sequence[TaskSubmitted],
    policy: Policy,
    whole: Scores,
    margin: float,
) -> SegmentResult:
    """The segment's errors, the candidate's automation on it, and how both depart from the
    candidate's on all rows."""
    live_error, cand_error = _error(live, labels), _error(candidate, labels)
    result = SegmentResult(
        name=name,
        rows=len(candidate),
        live_error=live_error,
        candidate_error=cand_error,
        weak=bool(candidate) and cand_error > (1 - whole.accuracy) + margin,
    )
    if not candidate:
        return result
    rates = scores_of(candidate, labels, tasks, policy)
    automated = round(rates.automation_rate * len(candidate))
    right = round((rates.automated_accuracy or 0.0) * automated)
    return result.model_copy(
        update={
            "automation_rate": rates.automation_rate,
            "automated_accuracy": rates.automated_accuracy,
            "automated_accuracy_interval": wilson(right, automated),
            "disparity": {
                "automation_rate": Gap.of(rates.automation_rate, whole.automation_rate),
                "automated_accuracy": Gap.of(rates.automated_accuracy, whole.automated_accuracy),
                "error": Gap.of(cand_error, 1 - whole.accuracy),
            },
        }
    )


def _mean(values: Sequence[float] | Sequence[bool]) -> float:
    return float(sum(values)) / len(values) if values else 0.0


def _error(results: Sequence[ScoreResult], labels: Sequence[str]) -> float:
    if not results:
        return 0.0
    return 1.0 - _mean([r.prediction == label for r, label in zip(results, labels, strict=True)])


# ---- the report --------------------------------------------------------------------------------


def markdown(evidence: Evidence, refused_for: Sequence[str]) -> str:
    """The validation as a model owner reads it."""
    live, cand = evidence.live_scores, evidence.candidate_scores

    def share(value: float | None) -> str:
        return shown(value, "–")

    lines = [
        f"# {evidence.model}: version {evidence.candidate} against live {evidence.live}",
        "",
        f"{evidence.rows} tasks labelled by people from {evidence.labelled_since:%Y-%m-%d %H:%M} "
        f"to {evidence.labelled_until:%Y-%m-%d %H:%M} UTC, none of which version "
        f"{evidence.candidate} trained on. Automation under policy {evidence.policy}.",
        "",
        f"| | live {evidence.live} | candidate {evidence.candidate} |",
        "|---|---|---|",
        f"| accuracy | {share(live.accuracy)} | {share(cand.accuracy)} |",
        f"| Brier score (lower is better) | {live.brier:.4f} | {cand.brier:.4f} |",
        f"| expected calibration error | {live.ece:.4f} | {cand.ece:.4f} |",
        f"| automation rate | {share(live.automation_rate)} | {share(cand.automation_rate)} |",
        f"| accuracy of automatic decisions | {share(live.automated_accuracy)} | "
        f"{share(cand.automated_accuracy)} |",
        "",
        f"## By segment (margin {evidence.margin:.1%})",
        "",
        "The candidate's automation and the accuracy of its automatic decisions on each "
        "segment, with the 95% interval and the gap to all tasks.",
        "",
        "| segment | tasks | live error | candidate error | automation (gap) "
        "| accuracy of automatic decisions (gap) | |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in evidence.segments:
        note = "weak: worse than the whole by more than the margin" if s.weak else ""
        within = interval(s.automated_accuracy_interval)
        lines.append(
            f"| {s.name} | {s.rows} | {share(s.live_error)} | {share(s.candidate_error)} "
            f"| {share(s.automation_rate)} ({_points(s.disparity.get('automation_rate'))}) "
            f"| {share(s.automated_accuracy)}{', ' + within if within else ''} "
            f"({_points(s.disparity.get('automated_accuracy'))}) | {note} |"
        )
    lines += [
        "",
        "What happened live on the same tasks: people's labels against the model that scored "
        "them, and the automatic decisions people checked (QA samples).",
        "",
        "| segment | people overriding the model (gap) | QA samples | QA accuracy (gap) |",
        "|---|---|---|---|",
    ]
    for s in evidence.segments:
        within = interval(s.qa_accuracy_interval)
        lines.append(
            f"| {s.name} | {share(s.override_rate)} ({_points(s.disparity.get('override_rate'))}) "
            f"| {s.qa_samples} | {share(s.qa_accuracy)}{', ' + within if within else ''} "
            f"({_points(s.disparity.get('qa_accuracy'))}) |"
        )
    lines += ["", "## Verdict", ""]
    if refused_for:
        lines += [f"The gate refuses version {evidence.candidate}:", ""]
        lines += [f"- {reason}" for reason in refused_for]
    else:
        lines.append(f"Version {evidence.candidate} may be promoted.")
    return "\n".join(lines) + "\n"


def _points(gap: Gap | None) -> str:
    if gap is None or gap.difference is None:
        return "–"
    return f"{gap.difference * 100:+.1f} points"


def evidence_json(evidence: Evidence) -> str:
    return json.dumps(evidence.model_dump(mode="json"), indent=2) + "\n"


# ---- live against shadow -----------------------------------------------------------------------


class ShadowComparison(BaseModel):
    """Live and shadow versions on the same live tasks, and on those people labelled since."""

    model: str
    live: list[str]
    shadow: list[str]
    tasks: int
    agreement: float
    confidence_shift: float
    labelled: int
    live_accuracy: float | None
    shadow_accuracy: float | None


def compare_shadow(
    name: str, scored: Sequence[TaskScored], labels: Mapping[str, str]
) -> ShadowComparison:
    """Over the scored events of ``name`` that carry a shadow score (each task once)."""
    seen: dict[str, TaskScored] = {}
    for event in scored:
        if event.score.model.name == name and event.score.shadow is not None:
            seen.setdefault(event.task.task_id, event)
    both = list(seen.values())
    shadows = [e.score.shadow for e in both if e.score.shadow is not None]
    judged = [e for e in both if e.task.task_id in labels]
    return ShadowComparison(
        model=name,
        live=sorted({e.score.model.version for e in both}),
        shadow=sorted({s.model.version for s in shadows}),
        tasks=len(both),
        agreement=_mean([s.agrees for s in shadows]),
        confidence_shift=_mean([s.confidence_delta for s in shadows]),
        labelled=len(judged),
        live_accuracy=_mean([e.score.prediction == labels[e.task.task_id] for e in judged])
        if judged
        else None,
        shadow_accuracy=_mean(
            [
                e.score.shadow.prediction == labels[e.task.task_id]
                for e in judged
                if e.score.shadow is not None
            ]
        )
        if judged
        else None,
    )


async def live_against_shadow(
    bootstrap_servers: str,
    topics: Topics,
    name: str,
    since: datetime,
    tasks: Collection[str] | None = None,
) -> ShadowComparison:
    """Scored traffic since ``since`` (only ``tasks``, if given) and what people said of it."""
    scored = await scored_between(bootstrap_servers, topics, since, datetime.now(UTC))
    if tasks is not None:
        scored = [s for s in scored if s.task.task_id in tasks]
    return compare_shadow(name, scored, await human_outcomes(bootstrap_servers, topics, since))
