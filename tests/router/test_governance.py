"""The policy lifecycle on the real broker: the review API's admin endpoints change what a
running router does, live, and the what-if of a policy matches what the router then does."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from tandem_policy.whatif import WhatIf
from tandem_router.app import create_app as router_app
from tandem_router.settings import RouterSettings
from tandem_shared.control import read_control_history
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import DecisionMade, PolicyRef, TaskRouted, TaskScored
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader, produce
from tests.policy.factories import POLICY_YAML, scored
from tests.review_api.test_api import auth
from tests.router.test_service import record
from tests.service_utils import OPEN_TRUST, bearer, committed, eventually, running

pytestmark = pytest.mark.kafka
ADMIN = auth("ana", "admin")
# v4 trusts the model less for benign and samples more automatic decisions for QA.
V4 = POLICY_YAML.replace("version: 3", "version: 4").replace("benign: 0.97", "benign: 0.995")
V4 = V4.replace("qa_sample_rate: 0.0", "qa_sample_rate: 0.2")


def router_settings(kafka: KafkaSettings, policy_file: Path, group: str) -> RouterSettings:
    return RouterSettings(
        kafka=kafka,
        policy_file=policy_file,
        group_id=group,
        batch_timeout_ms=50,
        retry_backoff_s=0.05,
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML)
    return path


async def test_policy_changes_and_the_kill_switch_take_effect_live_and_roll_back(
    kafka_settings: KafkaSettings, topics: Topics, policy_file: Path, admin_api: httpx.AsyncClient
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    settings = router_settings(kafka_settings, policy_file, "router-live")
    async with (
        running(router_app(settings)) as router,
        TopicReader(bootstrap, topics.decisions) as decisions,
        TopicReader(bootstrap, topics.routed) as routed,
    ):

        async def route(task: TaskScored) -> TaskRouted | DecisionMade:
            await produce(bootstrap, topics.scored, [record(task)])
            return await _output(decisions, routed, task.task.task_id)

        async def control() -> dict[str, object]:
            return dict((await router.get("/v1/control", headers=bearer("auditor"))).json())

        first = await route(scored("a", confidence=0.98))
        assert isinstance(first, DecisionMade) and first.policy.version == 3
        # The policy the router started with goes on record, so a rollback can return to it.
        started = await admin_api.post(
            "/v1/admin/policy/apply", json={"document": POLICY_YAML}, headers=ADMIN
        )
        assert started.status_code == 200, started.text

        # An invalid document is refused with its line; nothing is published.
        bad = V4.replace("benign: 0.995", "benign: 2")
        refused = await admin_api.post(
            "/v1/admin/policy/apply", json={"document": bad}, headers=ADMIN
        )
        assert refused.status_code == 422
        assert "line 8" in refused.json()["detail"]
        assert len(await read_control_history(bootstrap, topics, "policy/active", OPEN_TRUST)) == 1

        applied = await admin_api.post(
            "/v1/admin/policy/apply", json={"document": V4}, headers=ADMIN
        )
        assert applied.status_code == 200, applied.text
        assert applied.json()["active"]["version"] == 4

        async def on_v4() -> bool:
            return (await control())["policy"] == {"name": "test", "version": 4}

        await eventually(on_v4, "the router to apply v4", timeout=10)
        second = await route(scored("b", confidence=0.98))
        assert isinstance(second, TaskRouted) and second.policy.version == 4
        assert second.reasons == ["low_confidence"]

        # The same version twice is refused: a version names one document.
        again = await admin_api.post("/v1/admin/policy/apply", json={"document": V4}, headers=ADMIN)
        assert again.status_code == 409

        switch = {"on": True, "task_type": "tumor_screening"}
        on = await admin_api.post("/v1/admin/kill-switch", json=switch, headers=ADMIN)
        assert on.json()["task_types"] == ["tumor_screening"]

        async def killed() -> bool:
            return (await control())["kill_switch"]["task_types"] == ["tumor_screening"]

        await eventually(killed, "the kill switch on the router", timeout=10)
        third = await route(scored("c", confidence=1.0))
        assert isinstance(third, TaskRouted) and third.reasons == ["kill_switch"]
        metrics = (await router.get("/metrics")).text
        assert 'tandem_router_kill_switch{task_type="tumor_screening"} 1.0' in metrics

        off = {"on": False, "task_type": "tumor_screening"}
        await admin_api.post("/v1/admin/kill-switch", json=off, headers=ADMIN)

        async def lifted() -> bool:
            return (await control())["kill_switch"]["task_types"] == []

        await eventually(lifted, "the kill switch off again", timeout=10)
        fourth = await route(scored("d", confidence=1.0))
        assert isinstance(fourth, DecisionMade) and fourth.policy.version == 4

        back = await admin_api.post("/v1/admin/policy/rollback", headers=ADMIN)
        assert back.json()["active"]["version"] == 3

        async def on_v3() -> bool:
            return (await control())["policy"] == {"name": "test", "version": 3}

        await eventually(on_v3, "the rollback to v3", timeout=10)
        fifth = await route(scored("e", confidence=0.98))
        assert isinstance(fifth, DecisionMade) and fifth.policy.version == 3

    history = (await admin_api.get("/v1/admin/policy/history", headers=ADMIN)).json()
    assert [(h["version"], h["action"], h["changed_by"]) for h in history] == [
        (3, "apply", "ana"),
        (4, "apply", "ana"),
        (3, "rollback", "ana"),
    ]
    switches = await read_control_history(bootstrap, topics, "kill_switch", OPEN_TRUST)
    assert [s.changed_by for s in switches] == ["ana", "ana"]


async def _output(
    decisions: TopicReader, routed: TopicReader, task_id: str
) -> TaskRouted | DecisionMade:
    found: list[TaskRouted | DecisionMade] = []

    async def arrived() -> bool:
        await decisions.poll(0.1)
        await routed.poll(0.1)
        found[:] = [
            DecisionMade.model_validate_json(r.value)
            for r in decisions.records
            if r.key == task_id.encode()
        ] + [
            TaskRouted.model_validate_json(r.value)
            for r in routed.records
            if r.key == task_id.encode()
        ]
        return bool(found)

    await eventually(arrived, f"the router's output for {task_id}", timeout=30)
    return found[0]


def window() -> list[TaskScored]:
    """Sixty tasks across the confidence range, both outcomes, a few critical."""
    tasks = []
    for n in range(60):
        confidence = 0.55 + 0.45 * ((n * 37) % 60) / 59
        prediction = "malignant" if n % 7 == 0 else "benign"
        tasks.append(
            scored(f"w-{n:02d}", confidence=confidence, prediction=prediction, critical=n % 13 == 0)
        )
    return tasks


def human(task: TaskScored, outcome: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    decision = DecisionMade(
        task_id=task.task.task_id,
        task_type=task.task.task_type,
        outcome=outcome,
        decided_by="human",
        confidence=None,
        model=task.score.model,
        policy=PolicyRef(name="test", version=3),
        reviewers=["rui"],
        submitted_at=task.submitted_at,
        decided_at=task.scored_at,
    )
    event = Event.derived(
        decision, source="tandem/review-api", subject=task.task.task_id, stage="decision-human"
    )
    return (task.task.task_id, event.value(), event.headers())


async def routes(bootstrap: str, topics: Topics, version: int) -> dict[str, tuple[str, bool]]:
    """Task id → (route, QA sampled) of every output of the router under one policy version."""
    out: dict[str, tuple[str, bool]] = {}
    async with TopicReader(bootstrap, topics.decisions) as decisions:
        await decisions.to_end()
        for r in decisions.records:
            d = DecisionMade.model_validate_json(r.value)
            if d.decided_by == "model" and d.policy.version == version:
                out[d.task_id] = ("auto", False)
    async with TopicReader(bootstrap, topics.routed) as routed:
        await routed.to_end()
        for r in routed.records:
            t = TaskRouted.model_validate_json(r.value)
            if t.policy.version == version:
                if t.qa_sample:
                    out[t.task.task_id] = ("auto", True)
                else:
                    out[t.task.task_id] = (t.route, False)
    return out


async def test_the_what_if_matches_what_the_router_does_once_the_policy_is_applied(
    kafka_settings: KafkaSettings, topics: Topics, policy_file: Path, admin_api: httpx.AsyncClient
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    tasks = window()
    since = utcnow() - timedelta(seconds=5)
    await produce(bootstrap, topics.scored, [record(t) for t in tasks])
    # People decided ten of them; two against the model.
    labels = {t.task.task_id: t.score.prediction for t in tasks[:10]}
    labels["w-01"] = labels["w-02"] = "malignant"
    await produce(
        bootstrap, topics.decisions, [human(t, labels[t.task.task_id]) for t in tasks[:10]]
    )

    async def routed_all(group: str) -> None:
        async def done() -> bool:
            return await committed(kafka_settings, group, [topics.scored]) >= len(tasks)

        await eventually(done, f"{group} to route every task", timeout=60)

    applied = await admin_api.post(
        "/v1/admin/policy/apply", json={"document": POLICY_YAML}, headers=ADMIN
    )
    assert applied.status_code == 200
    async with running(router_app(router_settings(kafka_settings, policy_file, "router-v3"))):
        await routed_all("router-v3")

    body = {"document": V4, "since": since.isoformat(), "reviews_per_hour": 10}
    response = await admin_api.post("/v1/admin/policy/simulate", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    report = WhatIf.model_validate(response.json())

    applied = await admin_api.post("/v1/admin/policy/apply", json={"document": V4}, headers=ADMIN)
    assert applied.status_code == 200
    async with running(router_app(router_settings(kafka_settings, policy_file, "router-v4"))):
        await routed_all("router-v4")

    for side, version in ((report.active, 3), (report.proposed, 4)):
        actual = await routes(bootstrap, topics, version)
        assert len(actual) == side.tasks == len(tasks)
        automatic = [t for t, (route, _) in actual.items() if route == "auto"]
        assert side.automatic == len(automatic)
        assert side.qa_samples == sum(qa for _, qa in actual.values())
        assert side.reviews == sum(route == "review" for route, _ in actual.values())
        assert side.escalations == sum(route == "escalate" for route, _ in actual.values())
        labelled = [t for t in automatic if t in labels]
        assert side.accuracy.labelled == len(labelled)
        model_said = {t.task.task_id: t.score.prediction for t in tasks}
        assert side.accuracy.correct == sum(labels[t] == model_said[t] for t in labelled)
    before, after = await routes(bootstrap, topics, 3), await routes(bootstrap, topics, 4)
    changed = {t for t in before if before[t][0] != after[t][0]}
    assert {c.task_id for c in report.changed} == changed
    assert report.changed_total == len(changed) > 0
    assert report.proposed.automatic < report.active.automatic


async def test_when_the_control_topic_cannot_be_read_tasks_go_to_people(
    kafka_settings: KafkaSettings, topics: Topics, policy_file: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    settings = router_settings(kafka_settings, policy_file, "router-failsafe")
    settings = settings.model_copy(update={"control_stale_after_s": 2.0})
    async with (
        running(router_app(settings)) as router,
        TopicReader(bootstrap, topics.decisions) as decisions,
        TopicReader(bootstrap, topics.routed) as routed,
    ):
        await produce(bootstrap, topics.scored, [record(scored("before", confidence=1.0))])
        assert isinstance(await _output(decisions, routed, "before"), DecisionMade)

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topics.control])
        finally:
            await admin.close()

        async def unreadable() -> bool:
            state = (await router.get("/v1/control", headers=bearer("auditor"))).json()
            return bool(state["control_unreadable"])

        await eventually(unreadable, "the router to notice", timeout=30)
        await produce(bootstrap, topics.scored, [record(scored("after", confidence=1.0))])
        after = await _output(decisions, routed, "after")
        assert isinstance(after, TaskRouted)
        # The last known policy still applies: the route names it, the reason says why.
        assert (after.reasons, after.policy.version) == (["control_unreadable"], 3)
