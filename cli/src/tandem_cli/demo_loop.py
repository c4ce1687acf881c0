"""`make demo-loop`: one turn of the improvement loop on the running stack.

The tasks now come from a population where what the data set calls benign is malignant from a
mean radius of 13 mm: the live model is confidently wrong on that slice. Simulated reviewers,
who know the truth, correct it where they see it (reviews and QA samples). A retraining uses
their labels, validation on later labels shows the gain, the candidate scores in shadow, is
promoted through the gate on that evidence, and the next tasks are decided by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tandem_policy.lifecycle import active_policy
from tandem_policy.loader import load_policy
from tandem_policy.policy import Policy
from tandem_shared.control import (
    ModelState,
    model_change,
    model_state,
    promoted,
    publish_change,
    read_control,
    registry_change,
    rolled_back,
    shadowed,
)
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import ControlChanged
from tandem_shared.promotion import GateRefused, gate

from tandem_cli import improvement
from tandem_cli.control import control_publisher, keys
from tandem_cli.demo import Run, work
from tandem_cli.feedback import feedback_rows
from tandem_cli.stack.local import models_dir, state_dir
from tandem_cli.stack.process import project_root

MODEL = "tumor_screening"
SLICE_FROM_MM = 13.0
WEIGHT = 3.0
MARGIN = 0.05
AUTHOR = "demo-loop"
FOLLOW_S = 3.0  # time for every scoring replica to follow a control change


def shifted(body: dict[str, Any], label: str) -> str:
    """The truth in the population the tasks now come from."""
    radius = body["features"]["mean_radius"]
    return "malignant" if label == "benign" and radius >= SLICE_FROM_MM else label


def in_slice(features: dict[str, Any]) -> bool:
    return float(features["mean_radius"]) >= SLICE_FROM_MM


@dataclass(frozen=True)
class Figures:
    """How a round went, overall and on the slice."""

    tasks: int
    automated: float
    automated_accuracy: float | None
    accuracy: float
    slice_tasks: int
    slice_automated: float
    slice_automated_accuracy: float | None
    slice_accuracy: float

    @classmethod
    def of(cls, run: Run) -> Figures:
        features = {t.task_id: t.features for t in run.tasks}
        decided = list(run.decisions.values())
        sliced = [d for d in decided if in_slice(features[d.task_id])]

        def rates(ds: list[Any]) -> tuple[float, float | None, float]:
            auto = [d for d in ds if d.decided_by == "model"]
            right = [d.outcome == run.truth[d.task_id] for d in ds]
            auto_right = [d.outcome == run.truth[d.task_id] for d in auto]
            return (
                len(auto) / len(ds) if ds else 0.0,
                sum(auto_right) / len(auto_right) if auto_right else None,
                sum(right) / len(right) if right else 0.0,
            )

        all_rates, slice_rates = rates(decided), rates(sliced)
        return cls(len(decided), *all_rates, len(sliced), *slice_rates)


async def run_loop(per_round: int, reviewers: int, seed: int, console: Console) -> int:
    async with control_publisher() as (kafka, topics, publisher):
        signing = keys()

        async def publish(event: Event[Any]) -> None:
            await publish_change(publisher, topics, event, signing.signer)

        registry = models_dir()
        changes = await read_control(kafka.bootstrap_servers, topics, signing.trust)
        state = model_state(changes, MODEL)
        if state is None:  # what serves by default, recorded so that nothing else can go live
            state = ModelState(live=improvement.versions(registry, MODEL)[-1])
            await publish(model_change(MODEL, state, AUTHOR))
        live = state.live
        policy = _policy(changes)
        console.rule(f"1. {per_round} tasks from the shifted population, live version {live}")
        began = utcnow()
        before = await work(per_round, reviewers, seed, console, truth=shifted)

        console.rule("2. retraining on the labels people gave")
        rows = [
            r for r in await feedback_rows(kafka, began.isoformat()) if r["task_id"] in before.truth
        ]
        if len(rows) < 20:
            console.print(f"[red]only {len(rows)} labels came back: too few to learn from[/red]")
            return 1
        cut = improvement.labelled_at(rows[int(len(rows) * 0.7) - 1])
        manifest = improvement.retrain(registry, MODEL, rows, topics.feedback, WEIGHT, until=cut)
        candidate = manifest.version
        await publish(
            registry_change(MODEL, candidate, improvement.Registration.of(manifest), AUTHOR)
        )
        window = manifest.feedback
        assert window is not None
        console.print(
            f"version {candidate}: {window.rows} of people's labels (to {cut:%H:%M:%S}), data "
            f"fingerprint {manifest.dataset.fingerprint[:16]}…; not live"
        )

        console.rule("3. validation on the later labels")
        evidence = improvement.validate(registry, MODEL, candidate, live, rows, policy, MARGIN)
        reports = _write_reports(evidence)
        console.print(improvement.markdown(evidence, []).split("## Verdict")[0], markup=False)
        console.print(f"report: {reports}")

        console.rule(f"4. version {candidate} in shadow beside live {live}")
        state = shadowed(state, candidate)
        await publish(model_change(MODEL, state, AUTHOR))
        await asyncio.sleep(FOLLOW_S)
        shadow_began = utcnow()
        shadow_run = await work(per_round // 2, reviewers, seed + 1, console, truth=shifted)
        compared = await improvement.live_against_shadow(
            kafka.bootstrap_servers, topics, MODEL, shadow_began, shadow_run.truth
        )
        console.print(
            f"live {live} against shadow {candidate} on {compared.tasks} tasks: agreement "
            f"{compared.agreement:.1%}, confidence shift {compared.confidence_shift:+.3f}; "
            f"accuracy where people labelled ({compared.labelled}): live "
            f"{_share(compared.live_accuracy)}, shadow {_share(compared.shadow_accuracy)}"
        )

        console.rule(f"5. promotion of version {candidate} through the gate")
        try:
            promotion = gate(candidate, evidence, None)
        except GateRefused as exc:
            console.print(f"[red]the gate refuses: {exc}[/red]")
            return 1
        await publish(registry_change(MODEL, candidate, promotion, AUTHOR))
        state = promoted(state, candidate)
        await publish(model_change(MODEL, state, AUTHOR))
        await asyncio.sleep(FOLLOW_S)
        console.print(f"version {candidate} is live; rollback to {state.previous} is one command")

        console.rule(f"6. {per_round} more tasks, decided by version {candidate}")
        after = await work(per_round, reviewers, seed + 2, console, truth=shifted)
        _summary(Figures.of(before), Figures.of(after), live, candidate, console)
        # The shifted population was the demo's own: leave the stack serving what it served.
        await publish(model_change(MODEL, rolled_back(state), AUTHOR))
    console.print(
        f"rolled back to version {live}, so that make demo runs on the reference model again; "
        f"version {candidate} stays in {registry / MODEL / candidate}"
    )
    return 0


def _policy(changes: Mapping[str, ControlChanged]) -> Policy:
    """The active policy, or the one the local stack's router starts with."""
    return active_policy(changes) or load_policy(
        project_root() / "deploy" / "local" / "policy.yaml"
    )


def _write_reports(evidence: Any) -> Path:
    folder = state_dir() / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{MODEL}-{evidence.candidate}-validation"
    base.with_suffix(".md").write_text(improvement.markdown(evidence, []))
    base.with_suffix(".json").write_text(improvement.evidence_json(evidence))
    return base.with_suffix(".md")


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _summary(before: Figures, after: Figures, live: str, candidate: str, console: Console) -> None:
    table = Table(title="one turn of the improvement loop", show_header=True)
    table.add_column("")
    table.add_column(f"before: version {live}", justify="right")
    table.add_column(f"after: version {candidate}", justify="right")
    rows = [
        ("tasks decided", str(before.tasks), str(after.tasks)),
        ("decided automatically", _share(before.automated), _share(after.automated)),
        (
            "accuracy of automatic decisions",
            _share(before.automated_accuracy),
            _share(after.automated_accuracy),
        ),
        ("accuracy of all decisions", _share(before.accuracy), _share(after.accuracy)),
        (f"slice (mean radius ≥ {SLICE_FROM_MM:g} mm): tasks", str(before.slice_tasks),
         str(after.slice_tasks)),
        ("  decided automatically", _share(before.slice_automated), _share(after.slice_automated)),
        (
            "  accuracy of automatic decisions",
            _share(before.slice_automated_accuracy),
            _share(after.slice_automated_accuracy),
        ),
        (
            "  accuracy of all decisions",
            _share(before.slice_accuracy),
            _share(after.slice_accuracy),
        ),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
