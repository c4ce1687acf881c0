"""End to end: the four services as processes on the real broker, driven by a producer that is
not Tandem code and by reviewers calling the HTTP API, as a front-end would."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tandem_cli.dataset import sample_tasks
from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.process import free_port
from tandem_cli.stack.services import ServiceSet
from tandem_shared.auth import mint_token
from tandem_shared.events import DeadLetter, DecisionMade
from tandem_shared.settings import RuntimeSettings
from tandem_shared.topics import Topics, ensure_topics

from tests.kafka_utils import (
    TopicReader,
    ce_headers,
    consume,
    produce,
    submit_tasks,
    traceparent_for,
)
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.timeout(300)]


class Stack:
    def __init__(
        self, services: ServiceSet, topics: Topics, bootstrap: str, traces: OtlpReceiver
    ) -> None:
        self.services = services
        self.topics = topics
        self.bootstrap = bootstrap
        self.traces = traces
        self.api = services.get("review-api").url
        self.audit_db = services.home / "audit-sink.db"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack(
    kafka_broker: KafkaBroker, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    topics = Topics(f"e2e{uuid.uuid4().hex[:8]}.")
    asyncio.run(ensure_topics(kafka_broker.bootstrap_servers, topics))
    services = ServiceSet(
        tmp_path_factory.mktemp("stack"),
        kafka_broker.bootstrap_servers,
        topics.prefix,
        ports={name: free_port() for name in ("scoring", "router", "audit-sink", "review-api")},
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TANDEM_SCORING_BATCH_TIMEOUT_MS": "50",
            "TANDEM_ROUTER_BATCH_TIMEOUT_MS": "50",
        },
    )
    services.start()
    try:
        services.wait_ready()
        yield Stack(services, topics, kafka_broker.bootstrap_servers, receiver)
    finally:
        services.stop()


def token(subject: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(RuntimeSettings(), subject, [role])}"}


async def review_until_decided(
    stack: Stack, task_ids: set[str], truth: dict[str, str]
) -> dict[str, DecisionMade]:
    """Reviewers work the queue through the API until every task has its decision."""
    decisions: dict[str, DecisionMade] = {}
    people = [
        token("reviewer-1", "reviewer"),
        token("reviewer-2", "reviewer"),
        token("sam", "senior"),
    ]
    async with (
        httpx.AsyncClient(base_url=stack.api, timeout=30) as client,
        TopicReader(stack.bootstrap, stack.topics.decisions) as reader,
    ):
        for _ in range(600):
            for n, headers in enumerate(people):
                queue = "escalated" if n == 2 else "pending"
                params = {"status": queue, "limit": 100}
                page = (await client.get("/v1/reviews", params=params, headers=headers)).json()
                for item in page["items"]:
                    if item["task_id"] not in task_ids:
                        continue
                    rid = item["review_id"]
                    claim = await client.post(f"/v1/reviews/{rid}/claim", headers=headers)
                    if claim.status_code != 200:
                        continue
                    if item["blind"]:  # the policy's blind reviews: a verdict before the model's
                        verdict = {"outcome": truth[item["task_id"]]}
                        first = await client.post(
                            f"/v1/reviews/{rid}/first-look", json=verdict, headers=headers
                        )
                        assert first.status_code == 200, first.text
                    answer = await client.post(
                        f"/v1/reviews/{rid}/decision",
                        json={"outcome": truth[item["task_id"]], "rationale": "checked the case"},
                        headers=headers,
                    )
                    assert answer.status_code == 200, answer.text
            for r in await reader.poll(0.3):
                d = DecisionMade.model_validate_json(r.value)
                if d.task_id in task_ids:
                    decisions[d.task_id] = d
            if set(decisions) == task_ids:
                return decisions
    raise AssertionError(f"{len(task_ids - set(decisions))} tasks never got a decision")


@pytest.fixture(scope="module")
def run(stack: Stack) -> dict[str, Any]:
    """One realistic run shared by the checks below: tasks, a duplicate and two bad records."""
    drawn = sample_tasks(60, seed=11)
    bodies = [
        {**b, "task_id": f"e2e-{n}", "critical": n % 15 == 0} for n, (b, _) in enumerate(drawn)
    ]
    truth = {b["task_id"]: label for b, (_, label) in zip(bodies, drawn, strict=True)}

    async def go() -> dict[str, Any]:
        await submit_tasks(stack.bootstrap, stack.topics.submitted, bodies[:30])
        await produce(
            stack.bootstrap,
            stack.topics.submitted,
            [
                (
                    "bad-json",
                    b"{this is not json",
                    ce_headers("tandem.task.submitted.v1", "bad-json"),
                ),
                (
                    "bad-schema",
                    json.dumps({"task_id": "bad-schema", "features": {}}).encode(),
                    ce_headers("tandem.task.submitted.v1", "bad-schema"),
                ),
            ],
        )
        await submit_tasks(stack.bootstrap, stack.topics.submitted, bodies[30:])
        await submit_tasks(stack.bootstrap, stack.topics.submitted, [bodies[3]])  # a duplicate
        decisions = await review_until_decided(stack, set(truth), truth)
        await asyncio.sleep(2)  # let late duplicates, if any, arrive before counting
        records = await consume(stack.bootstrap, stack.topics.decisions, 10**6, timeout=2)
        letters = await consume(stack.bootstrap, stack.topics.deadletter, 2)
        return {"decisions": decisions, "records": records, "letters": letters, "truth": truth}

    return asyncio.run(go())


def test_every_task_gets_exactly_one_decision(run: dict[str, Any]) -> None:
    per_task = Counter(r.key.decode() for r in run["records"])
    assert set(per_task) == set(run["truth"])
    assert all(n == 1 for n in per_task.values()), {k: n for k, n in per_task.items() if n != 1}
    decided_by = Counter(d.decided_by for d in run["decisions"].values())
    assert decided_by["model"] > 0
    assert decided_by["human"] >= 4  # the critical ones at least
    for d in run["decisions"].values():
        if d.decided_by == "human":
            assert d.outcome == run["truth"][d.task_id]
            assert d.reviewers
        assert d.policy.version >= 1
        assert d.model.version


def test_critical_tasks_were_decided_by_two_people(run: dict[str, Any]) -> None:
    critical = [d for t, d in run["decisions"].items() if int(t.split("-")[1]) % 15 == 0]
    assert critical
    assert all(d.decided_by == "human" for d in critical)
    assert all(len(set(d.reviewers)) >= 2 for d in critical)


def test_bad_records_are_dead_lettered_with_reasons(run: dict[str, Any]) -> None:
    letters = {r.key.decode(): DeadLetter.model_validate_json(r.value) for r in run["letters"]}
    assert set(letters) == {"bad-json", "bad-schema"}
    assert "not JSON" in letters["bad-json"].error
    assert "task_type" in letters["bad-schema"].error
    assert all(letter.service == "scoring" for letter in letters.values())
    # and the tasks published after them were decided: e2e-30 … e2e-59
    assert {f"e2e-{n}" for n in range(30, 60)} <= set(run["decisions"])


def test_http_shows_a_task_and_its_decision(stack: Stack, run: dict[str, Any]) -> None:
    task_id = next(iter(run["decisions"]))
    body = httpx.get(f"{stack.api}/v1/tasks/{task_id}", headers=token("ops", "service")).json()
    assert body["status"] == "decided"
    assert body["decision"]["outcome"] == run["decisions"][task_id].outcome


def _verify(db: Path) -> Any:
    import subprocess

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem_cli.main",
            "audit",
            "verify",
            "--database-url",
            f"sqlite+aiosqlite:///{db}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_audit_ledger_verifies_and_detects_a_changed_row(stack: Stack, run: dict[str, Any]) -> None:
    async def lineage(task_id: str) -> list[str]:
        async with httpx.AsyncClient(base_url=stack.services.get("audit-sink").url) as client:
            for _ in range(100):
                response = await client.get(
                    f"/v1/audit/tasks/{task_id}", headers=token("ann", "auditor")
                )
                if response.status_code == 200:
                    types = [e["type"] for e in response.json()["events"]]
                    if "tandem.decision.made.v1" in types:
                        return types
                await asyncio.sleep(0.2)
        raise AssertionError(f"no complete lineage for {task_id}")

    human = next(t for t, d in run["decisions"].items() if d.decided_by == "human")
    types = asyncio.run(lineage(human))
    assert types[0] == "tandem.task.submitted.v1"
    assert {
        "tandem.task.scored.v1",
        "tandem.task.routed.v1",
        "tandem.decision.made.v1",
        "tandem.feedback.recorded.v1",
    } <= set(types)

    ok = _verify(stack.audit_db)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout

    copy = stack.audit_db.parent / "tampered.db"
    source = sqlite3.connect(stack.audit_db)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    triggers = [
        name for (name,) in target.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    ]
    for name in triggers:  # an attacker with file access can drop the guards; the chain still tells
        target.execute(f'DROP TRIGGER "{name}"')
    seq = target.execute("SELECT seq FROM ledger ORDER BY seq LIMIT 1 OFFSET 10").fetchone()[0]
    target.execute(
        "UPDATE ledger SET canonical = replace(canonical, 'e2e', 'xxx') WHERE seq = ?", (seq,)
    )
    target.commit()
    target.close()
    bad = _verify(copy)
    assert bad.returncode == 1
    assert f"seq {seq}" in bad.stdout


def test_one_task_is_one_trace_across_all_four_services(stack: Stack, run: dict[str, Any]) -> None:
    """The producer's W3C trace context carries through every service, people included."""
    human = next(t for t, d in run["decisions"].items() if d.decided_by == "human")
    trace_id = traceparent_for(human).split("-")[1]
    wanted = {"scoring", "router", "review-api", "audit-sink"}
    for _ in range(100):
        spans = stack.traces.snapshot()
        keyed = [s for s in spans if s.attributes.get("messaging.kafka.message.key") == human]
        in_trace = [s for s in spans if s.trace_id == trace_id]
        if wanted <= {s.service for s in in_trace} and any(
            s.name == "review decide" for s in in_trace
        ):
            break
        asyncio.run(asyncio.sleep(0.3))
    assert keyed
    assert {s.trace_id for s in keyed} == {trace_id}
    assert wanted <= {s.service for s in in_trace}
    process = [s for s in in_trace if s.name.endswith(" process")]
    assert {s.attributes["messaging.system"] for s in process} == {"kafka"}
    assert {s.attributes["messaging.destination.name"] for s in process} >= {
        stack.topics.submitted,
        stack.topics.scored,
        stack.topics.routed,
        stack.topics.decisions,
    }
    [decide] = [s for s in in_trace if s.name == "review decide"]
    assert decide.service == "review-api"


def test_every_service_exports_its_metrics(stack: Stack, run: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for name in ("scoring", "router", "review-api", "audit-sink"):
        text = httpx.get(f"{stack.services.get(name).url}/metrics").text
        samples = {
            (s.name, s.labels.get("topic", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        processed = [
            v for (metric, _), v in samples.items() if metric == "tandem_messages_processed_total"
        ]
        assert sum(processed) > 0, f"{name} reports nothing processed"
        assert all(not labels.startswith("e2e-") for _, labels in samples), "task ids as labels"
    router = httpx.get(f"{stack.services.get('router').url}/metrics").text
    assert "tandem_decisions_total{" in router
    scoring = httpx.get(f"{stack.services.get('scoring').url}/metrics").text
    assert "tandem_model_confidence_bucket" in scoring
