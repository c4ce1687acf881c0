"""Inter-reviewer agreement: Cohen's and Fleiss' kappa against figures worked by hand and a
published example, and the report's rows by task type and by reviewer."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from tandem_review_api.agreement import Judged, agreement, cohen_kappa, fleiss_kappa
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed

# Fleiss (1971) as Wikipedia works it: 10 items, 14 raters each, 5 categories: kappa 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_cohen_kappa_as_worked_by_hand() -> None:
    # Observed 3/4; chance (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa (3/4 - 1/2) / (1/2).
    assert cohen_kappa([("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]) == 0.5
    assert cohen_kappa([("a", "a"), ("b", "b")]) == 1.0
    assert cohen_kappa([("a", "b"), ("b", "a")]) == -1.0
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None  # chance explains it all
    assert cohen_kappa([]) is None


def test_fleiss_kappa_of_the_published_example() -> None:
    items = [
        [str(category) for category, count in enumerate(row) for _ in range(count)]
        for row in FLEISS_TABLE
    ]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa([["a"], ["b"]]) is None  # nobody judged twice


def test_agreement_by_task_type_and_by_reviewer() -> None:
    judged = [
        Judged("tumor", (("al", "benign"), ("bo", "benign"))),
        Judged("tumor", (("al", "benign"), ("bo", "malignant"))),
        Judged("tumor", (("al", "malignant"), ("cy", "malignant"))),
        Judged("tumor", (("al", "malignant"), ("bo", "benign"), ("cy", "malignant"))),
        Judged("loans", (("al", "approve"),)),  # judged once: no agreement to speak of
    ]
    rows = agreement(judged)
    [tumor] = [r for r in rows if r.scope == "task_type"]
    assert (tumor.key, tumor.tasks, tumor.pairs) == ("tumor", 4, 6)
    assert tumor.observed == pytest.approx(3 / 6, abs=1e-4)
    # The three tasks two people judged: (b,b), (b,m), (m,m): observed 2/3, chance
    # (2·1 + 1·2)/9 = 4/9, kappa (2/3 - 4/9) / (5/9).
    assert tumor.cohen_kappa == pytest.approx(0.4, abs=1e-4)
    # One task judged by three: Fleiss over it alone (observed 1/3, chance 5/9).
    assert tumor.fleiss_kappa == pytest.approx(-0.5, abs=1e-4)
    reviewers = {r.key: r for r in rows if r.scope == "reviewer"}
    assert sorted(reviewers) == ["al", "bo", "cy"]
    assert (reviewers["al"].tasks, reviewers["al"].pairs) == (4, 5)
    assert reviewers["cy"].observed == pytest.approx(2 / 3, abs=1e-4)
    assert all(r.fleiss_kappa is None for r in reviewers.values())


async def test_the_report_gives_agreement_on_the_tasks_two_people_decided(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    critical = [routed(f"k-{n}", critical=True) for n in range(3)]
    await publish_routed(kafka_settings, topics, critical)
    # al and bo agree on two tasks and split on one (which then waits for a senior).
    verdicts = {
        "k-0": ("benign", "benign"),
        "k-1": ("malignant", "malignant"),
        "k-2": ("benign", "malignant"),
    }
    items = {i["task_id"]: i["review_id"] for i in await pending(api, 3)}
    for task_id, labels in verdicts.items():
        for name, label in zip(("al", "bo"), labels, strict=True):
            who, rid = auth(name, "reviewer"), items[task_id]
            assert (await api.post(f"/v1/reviews/{rid}/claim", headers=who)).status_code == 200
            body = {"outcome": label, "rationale": "seen"}
            answer = await api.post(f"/v1/reviews/{rid}/decision", json=body, headers=who)
            assert answer.status_code == 200, answer.text
    window = {
        "since": (NOW - timedelta(days=1)).isoformat(),
        "until": (NOW + timedelta(days=1)).isoformat(),
    }
    rows = (await api.get("/v1/stats", params=window, headers=auth("ivy", "auditor"))).json()[
        "agreement"
    ]
    by = {(r["scope"], r["key"]): r for r in rows}
    tumor = by[("task_type", "tumor_screening")]
    # Observed 2/3; chance (2·1 + 1·2)/9 = 4/9: kappa 0.4.
    assert (tumor["tasks"], tumor["pairs"], tumor["cohen_kappa"]) == (3, 3, 0.4)
    assert by[("reviewer", "al")]["observed"] == pytest.approx(2 / 3, abs=1e-4)
