"""The outcomes report: a case computed by hand, and the same figures through the API."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import httpx
import pytest
from tandem_cli.main import app
from tandem_review_api.segments import standings
from tandem_review_api.stats import BlindVerdict, Rated, ReviewFacts, report
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import DecisionMade, ModelRef, PolicyRef
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.review_api.apps import review_api
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.service_utils import eventually, publish_events

runner = CliRunner()
V1, V2 = (
    ModelRef(name="tumor_screening", version="1"),
    ModelRef(name="tumor_screening", version="2"),
)


def decided(
    n: int,
    by: str,
    seconds: float,
    model: ModelRef = V1,
    overrode: bool = False,
    segment: dict[str, str] | None = None,
    at: datetime | None = None,
) -> DecisionMade:
    """``at``: submitted and decided then (the fixed test time by default, decided after
    ``seconds``)."""
    return DecisionMade(
        task_id=f"t-{n}",
        task_type="tumor_screening",
        outcome="benign",
        decided_by=by,  # type: ignore[arg-type]
        confidence=0.9,
        model=model,
        policy=PolicyRef(name="default", version=1),
        overrode_model=overrode,
        submitted_at=at or NOW,
        decided_at=at or NOW + timedelta(seconds=seconds),
        segment=segment or {},
    )


def facts(
    approvals: tuple[str, ...] = (),
    qa: bool = False,
    outcome: str | None = None,
    breached: bool = False,
    first_looks: tuple[BlindVerdict, ...] = (),
    active_seconds: tuple[float, ...] = (),
    ratings: tuple[Rated, ...] = (),
    queue: str | None = None,
    segment: dict[str, str] | None = None,
) -> ReviewFacts:
    return ReviewFacts(
        task_type="tumor_screening",
        model="tumor_screening/1",
        policy="default v1",
        qa_sample=qa,
        prediction="benign",
        outcome=outcome,
        approvals=approvals,
        breached=breached,
        created_at=NOW,
        first_looks=first_looks,
        active_seconds=active_seconds,
        ratings=ratings,
        approvers=tuple(f"person-{n}" for n in range(len(approvals))),
        queue=queue,
        segment=segment or {},
    )


def test_a_report_computed_by_hand() -> None:
    decisions = [
        decided(1, "model", 1),
        decided(2, "model", 2),
        decided(3, "model", 3, model=V2),
        decided(4, "human", 100, overrode=True),
        decided(5, "human", 300),
        decided(6, "policy", 14_400),
    ]
    reviews = [
        facts(("benign", "benign"), outcome="benign"),
        facts(("benign", "malignant"), outcome="malignant"),
        facts(("benign",), qa=True, outcome="benign"),
        facts(("malignant",), qa=True, outcome="malignant"),
        facts(breached=True),
    ]
    [whole] = report(decisions, reviews, NOW, NOW + timedelta(days=1), "none", 6.0).groups
    assert (whole.decisions, whole.automatic, whole.by_people, whole.by_policy_fallback) == (
        6,
        3,
        2,
        1,
    )
    assert whole.automation_rate == 0.5 and whole.override_rate == 0.5
    assert whole.reviewer_agreement == 0.5  # one of the two reviews with two approvers agreed
    assert (whole.qa_samples_reviewed, whole.qa_accuracy) == (2, 0.5)
    assert whole.sla_breaches == 1
    assert whole.reviewer_hours_saved == 0.3  # three automatic decisions at 6 minutes
    automatic = whole.seconds_to_decision["automatic"]
    assert (automatic.p50, automatic.p90) == (2.0, 2.8)
    assert whole.seconds_to_decision["people"].p50 == 200.0

    by_model = report(decisions, [], NOW, NOW + timedelta(days=1), "model", 6.0).groups
    assert [(g.key, g.automatic) for g in by_model] == [
        ("tumor_screening/1", 2),
        ("tumor_screening/2", 1),
    ]
    empty = report([], [], NOW, NOW + timedelta(days=1), "day", 6.0)
    assert empty.groups == []


def test_a_report_by_queue_counts_each_queue_s_breaches_and_decisions() -> None:
    decisions = [
        decided(1, "model", 1),  # nobody reviewed it
        decided(2, "human", 100),
        decided(3, "human", 50, overrode=True),
        decided(4, "policy", 3_600),
    ]
    reviews = [
        facts(("benign",), outcome="benign"),
        facts(("malignant",), outcome="malignant", queue="senior"),
        facts(breached=True, queue="senior"),
        facts(breached=True, queue="senior"),
    ]
    queues = {"t-2": None, "t-3": "senior", "t-4": "senior"}
    window = (NOW, NOW + timedelta(days=1))
    groups = report(decisions, reviews, *window, "queue", 6.0, (), queues).groups
    by_key = {
        g.key: (g.decisions, g.by_people, g.by_policy_fallback, g.sla_breaches) for g in groups
    }
    assert by_key == {
        "(general)": (1, 1, 0, 0),
        "(no review)": (1, 0, 0, 0),
        "senior": (2, 1, 1, 2),
    }
    senior = next(g for g in groups if g.key == "senior")
    assert senior.override_rate == 1.0
    assert senior.seconds_to_decision["people"].p50 == 50.0


def test_a_report_by_segment_sets_each_segment_beside_the_whole() -> None:
    east, west = {"clinic": "east"}, {"clinic": "west"}
    decisions = [
        decided(1, "model", 1, segment=east),
        decided(2, "model", 1, segment=east),
        decided(3, "human", 60, overrode=True, segment=west),
        decided(4, "model", 1, segment=west),
        decided(5, "human", 60, segment=west),
    ]
    reviews = [
        facts(("benign",), qa=True, outcome="benign", segment=east),
        facts(("benign",), qa=True, outcome="benign", segment=east),
        facts(("malignant",), qa=True, outcome="malignant", segment=east),
        facts(("benign",), qa=True, outcome="benign", segment=west),
    ]
    result = report(decisions, reviews, NOW, NOW + timedelta(days=1), "segment", 6.0)
    whole = result.overall
    assert (whole.automation_rate, whole.override_rate, whole.qa_accuracy) == (0.6, 0.5, 0.75)
    by_key = {g.key: g for g in result.groups}
    assert sorted(by_key) == ["clinic=east", "clinic=west"]

    east_group = by_key["clinic=east"]
    assert (east_group.automation_rate, east_group.override_rate) == (1.0, None)
    assert east_group.qa_accuracy == pytest.approx(2 / 3)
    # Wilson's 95% interval of 2 in 3: 20.8% to 93.9%.
    low, high = east_group.qa_accuracy_interval or (0.0, 0.0)
    assert (round(low, 3), round(high, 3)) == (0.208, 0.939)
    gaps = {m: (g.difference, g.ratio) for m, g in east_group.disparity.items()}
    assert gaps == {
        "automation_rate": (0.4, pytest.approx(1.666667)),
        "override_rate": (None, None),
        "qa_accuracy": (pytest.approx(-0.083333), pytest.approx(0.888889)),
    }
    west_group = by_key["clinic=west"]
    assert west_group.disparity["automation_rate"].difference == pytest.approx(-0.266667)
    assert west_group.disparity["override_rate"].ratio == 1.0
    assert west_group.disparity["qa_accuracy"].difference == 0.25
    assert all(not g.disparity for g in report(decisions, reviews, NOW, NOW, "none", 6.0).groups)


def test_the_live_standings_name_each_segment_s_rates_samples_and_gaps() -> None:
    east, west = {"clinic": "east"}, {"clinic": "west"}
    decisions = [decided(n, "model", 1, segment=east) for n in range(4)]
    decisions += [decided(n, "human", 60, overrode=n % 2 == 0, segment=west) for n in range(4, 8)]
    reviews = [facts(("benign",), qa=True, outcome="benign", segment=east)]
    found = {
        (s.segment, s.measure): (s.rate, s.samples, s.gap)
        for s in standings(decisions, reviews, most=20)
    }
    assert found == {
        ("east", "automation_rate"): (1.0, 4, 0.5),
        ("east", "qa_accuracy"): (1.0, 1, 0.0),
        ("west", "automation_rate"): (0.0, 4, -0.5),
        ("west", "override_rate"): (0.5, 4, 0.0),
    }
    # Only the largest segments of an attribute are named: labels stay bounded.
    assert {s.segment for s in standings(decisions[:5], [], most=1)} == {"east"}


async def publish_decisions(
    kafka: KafkaSettings, topics: Topics, decisions: list[DecisionMade]
) -> None:
    await publish_events(
        kafka,
        [
            Outgoing(
                topics.decisions,
                Event.derived(d, source="tandem/router", subject=d.task_id, stage="decision"),
            )
            for d in decisions
        ],
    )


@pytest.mark.kafka
async def test_the_api_reports_the_decisions_it_holds(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_decisions(
        kafka_settings, topics, [decided(n, "model", 0.5) for n in (10, 11, 12)]
    )
    await publish_routed(kafka_settings, topics, [routed("t-20")])
    [item] = await pending(api, 1)
    ana = auth("ana", "reviewer")
    await api.post(f"/v1/reviews/{item['review_id']}/claim", headers=ana)
    body = {"outcome": "malignant", "rationale": "border"}
    assert (
        await api.post(f"/v1/reviews/{item['review_id']}/decision", json=body, headers=ana)
    ).status_code == 200

    # The router's decisions carry the fixed test time, the person's the real one: span both.
    now = utcnow()
    window = {
        "since": (min(NOW, now) - timedelta(days=1)).isoformat(),
        "until": (max(NOW, now) + timedelta(days=1)).isoformat(),
        "group_by": "none",
    }

    async def counted() -> bool:
        groups = (await api.get("/v1/stats", params=window, headers=auth("au", "auditor"))).json()[
            "groups"
        ]
        return bool(groups) and groups[0]["decisions"] == 4

    await eventually(counted, "the decisions in the report", timeout=30)
    [whole] = (await api.get("/v1/stats", params=window, headers=auth("au", "auditor"))).json()[
        "groups"
    ]
    assert (whole["automatic"], whole["by_people"], whole["override_rate"]) == (3, 1, 1.0)
    assert whole["automation_rate"] == 0.75
    # Ana's approval was timed (a moment): the time saved counts her time, not 4 minutes.
    assert whole["minutes_per_review_measured_from"] == 1 and whole["minutes_per_review"] < 0.5
    assert whole["reviewer_hours_saved"] < 0.03  # 3 × under half a minute, not 3 × 4 minutes
    # By queue: the person's decision in the general queue, the router's without a review.
    by_queue = {**window, "group_by": "queue"}
    groups = (await api.get("/v1/stats", params=by_queue, headers=auth("au", "auditor"))).json()
    assert [(g["key"], g["decisions"], g["by_people"]) for g in groups["groups"]] == [
        ("(general)", 1, 1),
        ("(no review)", 3, 0),
    ]
    bad = await api.get(
        "/v1/stats",
        params={"since": NOW.isoformat(), "until": NOW.isoformat()},
        headers=auth("au", "auditor"),
    )
    assert bad.status_code == 422
    # Each call reads its whole window: a year at once is refused, not read.
    year = {"since": (NOW - timedelta(days=365)).isoformat(), "until": NOW.isoformat()}
    too_long = await api.get("/v1/stats", params=year, headers=auth("au", "auditor"))
    assert too_long.status_code == 422
    assert too_long.json()["detail"] == "the window spans at most 92 days; ask for less"


@pytest.mark.kafka
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_tandem_report_prints_the_report_of_a_running_api(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    now = utcnow()
    recent = [
        decided(n, "model", 1, segment={"clinic": clinic}, at=now)
        for n, clinic in ((30, "east"), (31, "west"))
    ]
    await publish_decisions(kafka_settings, topics, recent)

    async def tandem(*args: str) -> str:
        result = await asyncio.to_thread(
            runner.invoke, app, ["report", "--url", server, "--by", "none", *args]
        )
        assert result.exit_code == 0, result.output
        return result.output

    async def both_counted() -> bool:
        groups = json.loads(await tandem("--json"))["groups"]
        return bool(groups) and groups[0]["automatic"] == 2

    await eventually(both_counted, "the decisions in the report", timeout=30)
    table = await tandem()
    assert "Tandem outcomes" in table and "2 (100.0%)" in table
    # By segment, the whole comes first and each segment says how far it departs from it.
    by_clinic = await tandem("--by", "segment")
    assert by_clinic.index("all") < by_clinic.index("clinic=east") < by_clinic.index("clinic=west")
    assert "automation vs all" in by_clinic and "+0.0%, x1.00" in by_clinic


@pytest.mark.kafka
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_segments_reach_people_s_decisions_the_report_and_the_metrics(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    now = utcnow()
    west = [decided(n, "model", 1, segment={"clinic": "west"}, at=now) for n in (40, 41, 42)]
    # The router's segment on the review: the review API carries it onto people's decision.
    east = routed("t-43").model_copy(update={"segment": {"clinic": "east"}})
    async with review_api(kafka_settings, database_url, segment_refresh_seconds=0.3) as (client, _):
        await publish_decisions(kafka_settings, topics, west)
        await publish_routed(kafka_settings, topics, [east])
        [item] = await pending(client, 1)
        ana = auth("ana", "reviewer")
        await client.post(f"/v1/reviews/{item['review_id']}/claim", headers=ana)
        body = {"outcome": "malignant", "rationale": "irregular border"}
        decision = f"/v1/reviews/{item['review_id']}/decision"
        assert (await client.post(decision, json=body, headers=ana)).status_code == 200

        window = {
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": (utcnow() + timedelta(hours=1)).isoformat(),
            "group_by": "segment",
        }

        async def by_segment() -> dict[str, tuple[int, int, int]]:
            report = await client.get("/v1/stats", params=window, headers=auth("au", "auditor"))
            return {
                g["key"]: (g["decisions"], g["automatic"], g["by_people"])
                for g in report.json()["groups"]
            }

        async def both_segments() -> bool:
            return len(await by_segment()) == 2

        await eventually(both_segments, "both segments in the report", timeout=30)
        assert await by_segment() == {"clinic=east": (1, 0, 1), "clinic=west": (3, 3, 0)}

        def line(metric: str, measure: str, segment: str, value: str) -> str:
            labels = f'attribute="clinic",measure="{measure}",segment="{segment}"'
            return f'tandem_segment_{metric}{{{labels},task_type="tumor_screening"}} {value}'

        # West: 3 automatic of 3, against 3 of 4 in all; east: one decision by people.
        wanted = [
            line("rate", "automation_rate", "west", "1.0"),
            line("gap", "automation_rate", "west", "0.25"),
            line("samples", "override_rate", "east", "1.0"),
        ]

        async def measured() -> bool:
            text = (await client.get("/metrics")).text
            return all(line in text for line in wanted)

        await eventually(measured, "the segments' gauges", timeout=15)
