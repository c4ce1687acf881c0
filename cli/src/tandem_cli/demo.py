"""`make demo`: a realistic stream through the running stack, simulated reviewers working the
queue through the review API as a front-end would, and a summary of what happened."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from tandem_audit_sink.auditor import check_inclusion
from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError
from tandem_audit_sink.merkle import ProofError
from tandem_shared.auth import mint_token
from tandem_shared.clients import aiokafka_reader
from tandem_shared.envelope import utcnow
from tandem_shared.events import DecisionMade, TaskSubmitted
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tandem_cli.audit_client import VerificationTimeout, verify_now
from tandem_cli.publish import publish_tasks
from tandem_cli.reviewers import Desk, work_queue
from tandem_cli.stack.local import prometheus_url
from tandem_cli.stack.prometheus import ui_page

API = "http://127.0.0.1:8000"
AUDIT = "http://127.0.0.1:8003"
# Three: a critical review the policy escalates needs two seniors behind its outcome, and when
# two disagree a third settles it.
SENIORS = 3
WAIT_SECONDS = 600


@dataclass
class Run:
    truth: dict[str, str]
    predictions: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, DecisionMade] = field(default_factory=dict)
    reviewed: int = 0
    tasks: list[TaskSubmitted] = field(default_factory=list)
    elapsed: float = 0.0
    started_at: datetime = field(default_factory=utcnow)


Truth = Callable[[dict[str, Any], str], str]


def as_drawn(_body: dict[str, Any], label: str) -> str:
    """The data set's own label: the demo's world is the one the model was trained on."""
    return label


async def run_demo(count: int, reviewers: int, seed: int, console: Console) -> int:
    run = await work(count, reviewers, seed, console)
    audit = await _verify_audit(console)
    audit["proof"] = await _prove_one_decision(run)
    stats = await _stats(run, "segment")
    audit["blind"] = _blind_reviews(stats["automation_bias"])
    audit["segments"] = _segments(stats["groups"])
    _summary(run, run.elapsed, audit, console)
    _where_to_look(console)
    return 0 if len(run.decisions) == count and audit.get("ok") else 1


async def work(
    count: int, reviewers: int, seed: int, console: Console, truth: Truth = as_drawn
) -> Run:
    """Publish ``count`` tasks and let simulated reviewers, who know ``truth``, work the queue
    until every task is decided (or the wait is over)."""
    from tandem_cli.dataset import sample_tasks

    run_id = uuid.uuid4().hex[:8]
    tasks: list[TaskSubmitted] = []
    labels: dict[str, str] = {}
    for n, (body, label) in enumerate(sample_tasks(count, seed)):
        body = {**body, "task_id": f"demo-{run_id}-{n:05d}"}
        tasks.append(TaskSubmitted.model_validate(body))
        labels[body["task_id"]] = truth(body, label)
    run = Run(labels, tasks=tasks)
    kafka = KafkaSettings()
    console.print(
        f"demo run {run_id}: {count} tumor screening tasks, "
        f"{reviewers} simulated reviewers and {SENIORS} senior reviewers"
    )
    stop = asyncio.Event()
    started = time.monotonic()
    with Progress(console=console) as progress:
        collector = asyncio.create_task(_collect_decisions(kafka, run, progress, stop))
        await publish_tasks(kafka, tasks, progress)
        desk = Desk(API, run.truth)
        people = work_queue(desk, reviewers, SENIORS, seed, stop)
        try:
            await asyncio.wait_for(collector, timeout=WAIT_SECONDS)
        except TimeoutError:
            console.print(
                f"[red]only {len(run.decisions)} of {count} tasks decided in {WAIT_SECONDS}s[/red]"
            )
        stop.set()
        await asyncio.gather(*people, return_exceptions=True)
    run.reviewed = desk.decided
    run.elapsed = time.monotonic() - started
    return run


async def _collect_decisions(
    kafka: KafkaSettings, run: Run, progress: Progress, stop: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(
        Topics(kafka.topic_prefix).decisions,
        **aiokafka_reader(kafka.bootstrap_servers, group_id=f"tandem-demo-{uuid.uuid4().hex[:8]}"),
    )
    await consumer.start()
    bar = progress.add_task("waiting for decisions", total=len(run.truth))
    try:
        while len(run.decisions) < len(run.truth):
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    decision = DecisionMade.model_validate_json(record.value)
                    if decision.task_id in run.truth and decision.task_id not in run.decisions:
                        run.decisions[decision.task_id] = decision
                        progress.advance(bar)
    finally:
        await consumer.stop()


async def _verify_audit(console: Console) -> dict[str, Any]:
    """Verify the whole ledger until two verifications in a row find it the same size: it has
    stopped growing."""
    token = mint_token(RuntimeSettings(), "demo-auditor", ["auditor"])
    async with httpx.AsyncClient(
        base_url=AUDIT, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        last: dict[str, Any] = {}
        for _ in range(60):
            try:
                result = await verify_now(
                    client, within=120, progress=lambda note: console.print(note, markup=False)
                )
            except VerificationTimeout as exc:
                return {"ok": False, "reason": str(exc)}
            if last and result.get("entries") == last.get("entries"):
                return result
            last = result
            await asyncio.sleep(1.0)
        console.print("[yellow]the audit ledger was still growing; verified what it had[/yellow]")
        return last


async def _prove_one_decision(run: Run) -> str:
    """An auditor's check of the first decision: its inclusion proof against the newest signed
    checkpoint, verified here with nothing but the proof and that checkpoint."""
    first = min(run.decisions.values(), key=lambda d: d.decided_at, default=None)
    if first is None:
        return "no decision to prove"
    token = mint_token(RuntimeSettings(), "demo-auditor", ["auditor"])
    async with httpx.AsyncClient(
        base_url=AUDIT, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        lineage = (await client.get(f"/v1/audit/tasks/{first.task_id}")).json()
        decided = [e for e in lineage["events"] if e["type"] == "tandem.decision.made.v1"]
        checkpoint = Checkpoint.of((await client.get("/v1/audit/checkpoints/latest")).json())
        response = await client.get(
            "/v1/audit/proofs/inclusion",
            params={"event_id": decided[0]["event_id"], "tree_size": checkpoint.tree_size},
        )
    try:
        checkpoint.check()
        check_inclusion(response.json(), checkpoint, decided[0]["data"])
    except (ProofError, CheckpointError, KeyError) as exc:
        return f"FAILED for task {first.task_id}: {exc}"
    return (
        f"task {first.task_id}'s decision proven in the tree of {checkpoint.tree_size} "
        f"signed by key {checkpoint.key_id}"
    )


async def _stats(run: Run, group_by: str) -> dict[str, Any]:
    """The review API's report of this run."""
    token = mint_token(RuntimeSettings(), "demo-auditor", ["auditor"])
    window = {
        "since": run.started_at.isoformat(),
        "until": utcnow().isoformat(),
        "group_by": group_by,
    }
    async with httpx.AsyncClient(
        base_url=API, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        report: dict[str, Any] = (await client.get("/v1/stats", params=window)).json()
    return report


def _segments(groups: list[dict[str, Any]]) -> str:
    """Each clinic's automation rate and its gap to all tasks (the policy's segments)."""
    if not groups:
        return "none: the policy names no segments"
    return ", ".join(
        f"{g['key'].partition('=')[2]} {g['automation_rate']:.0%} "
        f"({g['disparity']['automation_rate']['difference'] * 100:+.1f})"
        for g in groups
        if g["automation_rate"] is not None
    )


def _blind_reviews(rows: list[dict[str, Any]]) -> str:
    """What the review API's report says of this run's blind reviews (QA samples and critical
    tasks, in the demo's policy): agreement with the model before and after its view was
    shown, and how often people switched to it."""
    looks = sum(r["first_looks"] for r in rows)
    if not looks:
        return "none in this run"

    def overall(rate: str) -> str:
        share = sum((r[rate] or 0.0) * r["first_looks"] for r in rows) / looks
        return f"{share:.1%}"

    before, after = overall("agreement_before_reveal"), overall("agreement_after_reveal")
    switched = sum(r["switched_to_model"] for r in rows)
    return (
        f"{looks} verdicts given before the model's: agreed with it {before} before the"
        f" reveal, {after} after; {switched} switched to it"
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _summary(run: Run, elapsed: float, audit: dict[str, Any], console: Console) -> None:
    decided = list(run.decisions.values())
    auto = [d for d in decided if d.decided_by == "model"]
    human = [d for d in decided if d.decided_by == "human"]
    auto_right = sum(d.outcome == run.truth[d.task_id] for d in auto)
    human_right = sum(d.outcome == run.truth[d.task_id] for d in human)
    overrides = sum(d.overrode_model for d in human)
    all_right = auto_right + human_right
    t_auto = [(d.decided_at - d.submitted_at).total_seconds() for d in auto]
    t_human = [(d.decided_at - d.submitted_at).total_seconds() for d in human]
    t_all = t_auto + t_human

    def pct(n: int, of: int) -> str:
        return f"{n} ({100 * n / of:.1f}%)" if of else "0"

    table = Table(title="Tandem demo summary", show_header=False)
    table.add_row("tasks submitted", str(len(run.truth)))
    table.add_row("tasks decided", pct(len(decided), len(run.truth)))
    table.add_row("  automatically (model)", pct(len(auto), len(decided)))
    table.add_row("  by people", pct(len(human), len(decided)))
    table.add_row(
        "human reviews done (QA samples and second approvals included)", str(run.reviewed)
    )
    table.add_row("overrides of the model by people", pct(overrides, len(human)))
    table.add_row("accuracy of automatic decisions (vs data set truth)", pct(auto_right, len(auto)))
    table.add_row("accuracy of human decisions", pct(human_right, len(human)))
    table.add_row("accuracy of all decisions", pct(all_right, len(decided)))
    table.add_row(
        "time to decision p50 / p99, automatic",
        f"{_percentile(t_auto, 50):.3f}s / {_percentile(t_auto, 99):.3f}s",
    )
    table.add_row(
        "time to decision p50 / p99, human",
        f"{_percentile(t_human, 50):.3f}s / {_percentile(t_human, 99):.3f}s",
    )
    table.add_row(
        "time to decision p50 / p99, all",
        f"{_percentile(t_all, 50):.3f}s / {_percentile(t_all, 99):.3f}s",
    )
    table.add_row("wall time", f"{elapsed:.1f}s")
    verdict = (
        f"OK: {audit.get('entries')} entries, {audit.get('checkpoints_checked')} signed "
        f"checkpoints verified"
        if audit.get("ok")
        else f"FAILED at seq {audit.get('failed_seq')}: {audit.get('reason') or audit}"
    )
    table.add_row("audit ledger", verdict)
    table.add_row("audit proof (checked offline)", str(audit.get("proof")))
    table.add_row("blind reviews (automation bias)", str(audit.get("blind")))
    table.add_row("automation by clinic (points from all)", str(audit.get("segments")))
    Console().print(table)


def _where_to_look(console: Console) -> None:
    url = prometheus_url()
    if url is not None:
        console.print(
            f"metrics: Prometheus at {url}   ·   alerts: {ui_page(url, 'alerts')}   ·   "
            f"targets: {ui_page(url, 'targets')}"
        )
    console.print(
        "what each alert means and what to do: docs/operations.md   ·   "
        "Grafana dashboards: docker compose up, then http://127.0.0.1:3000"
    )
