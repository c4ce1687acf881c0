"""Reviewer feedback: with a decision, a reviewer may rate the explanation and their trust in
the model (1 to 5) and leave a note; they may flag a case for the owners. Ratings flow with the
feedback label, flags are listed and counted, and the report shows both by model version and
task type."""

from __future__ import annotations

from datetime import timedelta

import httpx
from rich.console import Console
from tandem_cli.report import feedback_table
from tandem_review_api.stats import Flagged, Rated, reviewer_feedback
from tandem_shared.envelope import utcnow
from tandem_shared.events import FeedbackRecorded
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.review_api.test_stats import facts


def test_ratings_and_flags_are_summed_by_task_type_and_model() -> None:
    reviews = [
        facts(("benign",), ratings=(Rated(2, 4, True),)),
        facts(("benign",), ratings=(Rated(4, None, False), Rated(None, 2, True))),
        facts(("benign",)),  # nothing said
    ]
    flags = [
        Flagged("tumor_screening", "tumor_screening/1", "model_wrong"),
        Flagged("tumor_screening", "tumor_screening/1", "model_wrong"),
        Flagged("loans", "loans/3", "data_broken"),
    ]
    loans, tumors = reviewer_feedback(reviews, flags)
    assert (loans.task_type, loans.rated, loans.explanation_useful, loans.flags) == (
        "loans",
        0,
        None,
        {"data_broken": 1},
    )
    assert (tumors.rated, tumors.explanation_useful, tumors.trust, tumors.notes) == (3, 3.0, 3.0, 2)
    assert tumors.flags == {"model_wrong": 2}


async def test_a_reviewer_rates_the_model_and_flags_a_case_for_its_owners(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("rf-1"), routed("rf-2")])
    items = {i["task_id"]: i["review_id"] for i in await pending(api, 2)}
    rid, other = items["rf-1"], items["rf-2"]
    ana, sam = auth("ana", "reviewer"), auth("sam", "senior")

    async def raise_flag(kind: str, note: str | None = None, on: str = rid) -> httpx.Response:
        body = {"kind": kind} if note is None else {"kind": kind, "note": note}
        return await api.post(f"/v1/reviews/{on}/flags", json=body, headers=ana)

    first = await raise_flag("model_wrong", "a textbook benign case")
    assert first.status_code == 201, first.text
    assert (first.json()["kind"], first.json()["model"]) == ("model_wrong", "tumor_screening/1")
    assert (await raise_flag("model_wrong")).status_code == 409  # once a kind
    assert (await raise_flag("data_broken", on=other)).status_code == 201
    assert (await raise_flag("wrong_kind")).status_code == 422
    assert (await raise_flag("other", on="no-such-review")).status_code == 404

    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=ana)).status_code == 200
    decision = {"outcome": "malignant", "rationale": "seen", "explanation_useful": 6}
    url = f"/v1/reviews/{rid}/decision"
    assert (await api.post(url, json=decision, headers=ana)).status_code == 422
    decision.update(explanation_useful=2, trust=4, note="leans on radius alone")
    assert (await api.post(url, json=decision, headers=ana)).status_code == 200
    [fb] = await consume(kafka_settings.bootstrap_servers, topics.feedback, 1)
    said = FeedbackRecorded.model_validate_json(fb.value)
    assert (said.explanation_useful, said.trust, said.note) == (2, 4, "leans on radius alone")

    assert (await api.get("/v1/flags", headers=ana)).status_code == 403
    page = (await api.get("/v1/flags", params={"limit": 1}, headers=sam)).json()
    assert [f["task_id"] for f in page["items"]] == ["rf-2"]  # newest first
    rest = await api.get("/v1/flags", params={"cursor": page["next_cursor"]}, headers=sam)
    [older] = rest.json()["items"]
    assert (older["task_id"], older["reviewer"], older["note"]) == (
        "rf-1",
        "ana",
        "a textbook benign case",
    )
    broken = await api.get("/v1/flags", params={"kind": "data_broken"}, headers=sam)
    assert [f["task_id"] for f in broken.json()["items"]] == ["rf-2"]

    # The reviews carry the fixed test time, the flags the real one: span both.
    window = {"since": (NOW - timedelta(days=1)).isoformat(), "until": utcnow().isoformat()}
    report = (await api.get("/v1/stats", params=window, headers=sam)).json()
    [row] = report["reviewer_feedback"]
    assert (row["model"], row["rated"], row["explanation_useful"], row["trust"]) == (
        "tumor_screening/1",
        1,
        2.0,
        4.0,
    )
    assert (row["notes"], row["flags"]) == (1, {"model_wrong": 1, "data_broken": 1})
    metrics = (await api.get("/metrics")).text
    assert (
        'tandem_review_flags_total{kind="model_wrong",task_type="tumor_screening"} 1.0' in metrics
    )


def test_tandem_report_prints_what_reviewers_said() -> None:
    [row] = reviewer_feedback([facts(("benign",), ratings=(Rated(2, 5, True),))], [])
    console = Console(record=True, width=160)
    console.print(feedback_table([row.model_dump()]))
    text = console.export_text()
    assert "tumor_screening/1" in text and "2.0" in text and "5.0" in text and "none" in text
