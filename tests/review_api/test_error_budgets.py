"""The live watch of error budgets, pure: the QA samples under the active policy version bound
the error of its automatic decisions; a breach needs enough samples to show, and only a change
of verdict is published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tandem_policy.budget import fewest_cases, upper_bound
from tandem_policy.loader import dump_policy
from tandem_policy.policy import ErrorBudget, Policy
from tandem_policy.whatif import WhatIf
from tandem_review_api.error_budgets import changed, watches
from tandem_review_api.stats import ReviewFacts
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.control import budget_change, read_control
from tandem_shared.envelope import utcnow
from tandem_shared.events import ModelRef, TaskRouted
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import produce
from tests.policy.factories import policy, scored
from tests.review_api.apps import review_api
from tests.review_api.test_api import auth, pending, publish_routed, routed
from tests.router.test_service import record
from tests.service_utils import OPEN_TRUST, eventually

NOW = datetime(2026, 12, 6, tzinfo=UTC)
BUDGETED = policy(error_budget=ErrorBudget(max_error=0.02, confidence=0.9))
LABEL = f"{BUDGETED.name} v{BUDGETED.version}"


def checked(
    count: int, wrong: int, version: str = LABEL, qa: bool = True, clinic: str | None = None
) -> list[ReviewFacts]:
    """QA reviews of automatic decisions (the model said benign), ``wrong`` of them overruled."""
    return [
        ReviewFacts(
            segment={"clinic": clinic} if clinic else {},
            task_type="tumor_screening",
            model="tumor_screening/1",
            policy=version,
            qa_sample=qa,
            prediction="benign",
            outcome="malignant" if n < wrong else "benign",
            approvals=(),
            breached=False,
            created_at=NOW,
        )
        for n in range(count)
    ]


def test_the_bound_comes_from_the_qa_samples_of_the_active_version() -> None:
    reviews = [*checked(100, 3), *checked(50, 50, version="test v1"), *checked(40, 40, qa=False)]
    [watch] = watches(BUDGETED, reviews, NOW)
    assert (watch.qa_samples, watch.errors) == (100, 3)
    assert watch.upper_bound == round(upper_bound(3, 100, 0.9), 6)
    # Past the budget, but on fewer samples than it takes to show the budget kept (114).
    assert fewest_cases(0.02, 0.9) == 114
    assert watch.upper_bound > 0.02 and not watch.breached
    assert watches(policy(), reviews, NOW) == []  # no budget, nothing to watch


def test_a_breach_needs_enough_samples_and_only_a_new_verdict_is_published() -> None:
    enough = fewest_cases(0.02, 0.9)
    [kept] = watches(BUDGETED, checked(enough * 3, 0), NOW)
    assert not kept.breached and kept.upper_bound < 0.02
    [broken] = watches(BUDGETED, checked(enough * 3, enough // 4), NOW)
    assert broken.breached
    held = {"error-budget/tumor_screening": budget_change(kept, "tandem/review-api").data}
    assert changed([kept], held) == []
    assert changed([broken], held) == [broken]
    assert changed([kept], {}) == [kept]


def test_a_budget_kept_per_segment_is_watched_per_calibrated_value() -> None:
    evidence = {
        "threshold": 0.9, "cases": 500, "automated": 450, "errors": 2, "upper_bound": 0.013,
        "automation_rate": 0.9, "data": "QA verdicts", "at": NOW,
    }  # fmt: skip
    data = BUDGETED.model_dump() | {"segments": ["clinic"]}
    data["task_types"]["tumor_screening"]["error_budget"] |= {
        "per_segment": "clinic",
        "segments": {"north": evidence, "south": evidence},
    }
    kept = Policy.model_validate(data)
    enough = fewest_cases(0.02, 0.9)
    reviews = [
        *checked(enough * 3, 1, clinic="north"),
        *checked(enough * 3, enough // 4, clinic="south"),
        *checked(enough * 3, enough, clinic="west"),  # no threshold of its own: not automated
    ]
    north, south = watches(kept, reviews, NOW)
    assert (north.segment, north.qa_samples, north.breached) == ("clinic=north", enough * 3, False)
    assert (south.segment, south.errors, south.breached) == ("clinic=south", enough // 4, True)
    assert budget_change(south, "tandem/review-api").data.name == "tumor_screening"
    assert budget_change(south, "tandem/review-api").subject == (
        "error-budget/tumor_screening/clinic=south"
    )
    held = {"error-budget/tumor_screening/clinic=north": budget_change(north, "t").data}
    assert changed([north, south], held) == [south]


def sample(review: TaskRouted, confidence: float, now: datetime) -> TaskRouted:
    score = review.score.model_copy(update={"confidence": confidence})
    return review.model_copy(
        update={"policy": BUDGETED.ref, "routed_at": now, "submitted_at": now, "score": score}
    )


@pytest.mark.kafka
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_review_api_publishes_a_breach_the_routers_follow(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """A budget of 5% at 90% (45 clean samples show it): 50 QA samples, the 10 the model was
    least sure of overruled."""
    document = dump_policy(policy(error_budget=ErrorBudget(max_error=0.05, confidence=0.9)))
    now = utcnow()
    samples = [sample(routed(f"qa-{n}", qa=True), 0.8 if n < 10 else 0.99, now) for n in range(50)]
    async with review_api(kafka_settings, database_url, budget_refresh_seconds=0.3) as (api, _):
        applied = await api.post(
            "/v1/admin/policy/apply", json={"document": document}, headers=auth("ada", "admin")
        )
        assert applied.status_code == 200, applied.text
        await publish_routed(kafka_settings, topics, samples)
        ana = auth("ana", "reviewer")
        unsure = {s.task.task_id for s in samples if s.score.confidence < 0.9}
        for item in await pending(api, len(samples)):
            review = f"/v1/reviews/{item['review_id']}"
            await api.post(f"{review}/claim", headers=ana)
            outcome = "malignant" if item["task_id"] in unsure else "benign"
            body = {"outcome": outcome, "rationale": "checked"}
            assert (await api.post(f"{review}/decision", json=body, headers=ana)).is_success

        async def published() -> BudgetWatch | None:
            held = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
            record = held.get("error-budget/tumor_screening")
            return BudgetWatch.model_validate(record.value) if record else None

        async def breached() -> bool:
            watch = await published()
            return watch is not None and watch.breached

        await eventually(breached, "the breach on the control topic", timeout=30)
        watch = await published()
        # Published at the first look with enough samples (45, so 5 errors at least); a later
        # sample changes no verdict, so publishes nothing.
        assert watch is not None and 45 <= watch.qa_samples <= 50
        assert watch.qa_samples - 40 <= watch.errors <= 10
        assert watch.policy == BUDGETED.ref
        scope = 'segment="all",task_type="tumor_screening"'

        async def gauged() -> bool:
            gauges = (await api.get("/metrics")).text
            counts = [
                f'tandem_error_budget_qa_samples{{kind="samples",{scope}}} 50.0',
                f'tandem_error_budget_qa_samples{{kind="errors",{scope}}} 10.0',
                f"tandem_error_budget_breached{{{scope}}} 1.0",
            ]
            return all(count in gauges for count in counts)

        await eventually(gauged, "the gauges over all 50 samples", timeout=10)
        assert f"tandem_error_budget{{{scope}}} 0.05" in (await api.get("/metrics")).text

        # The what-if of a front end: each budget's cost, calibrated on those 50 verdicts.
        await produce(
            kafka_settings.bootstrap_servers,
            topics.scored,
            [record(scored(f"w-{n}", confidence=0.9 + n / 100)) for n in range(5)],
        )
        simulated = await api.post(
            "/v1/admin/policy/simulate",
            json={"document": document, "since": (now - timedelta(minutes=5)).isoformat()},
            headers=auth("ada", "admin"),
        )
        assert simulated.status_code == 200, simulated.text
        [curve] = WhatIf.model_validate(simulated.json()).budgets
        assert (curve.task_type, curve.cases, curve.max_error) == ("tumor_screening", 50, 0.05)
        assert curve.model == ModelRef(name="tumor_screening", version="1")
        # 40 right at 0.99, 10 wrong at 0.8: too few to promise under 10%; 10% from 0.801,
        # where the window's five tasks (0.90 to 0.94) would all be decided automatically.
        assert [p.threshold for p in curve.points] == [None] * 6 + [0.801]
        assert curve.points[-1].automation_rate == 1.0
        # A budget kept per segment the policy does not name: 422, saying which.
        unnamed = document.replace("max_error: 0.05", "max_error: 0.05\n      per_segment: clinic")
        refused = await api.post(
            "/v1/admin/policy/simulate",
            json={"document": unnamed, "since": (now - timedelta(minutes=5)).isoformat()},
            headers=auth("ada", "admin"),
        )
        assert refused.status_code == 422
        assert "per_segment 'clinic' is not one of the policy's segments" in refused.text
