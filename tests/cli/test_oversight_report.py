"""The periodic oversight report on the real broker, review API and audit API: a month of
known events in, the report written, rendered in headless Chromium (screenshot kept), and
every figure it shows recomputed here from the events the test published and the decisions
it made."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright
from tandem_audit_sink.checkpoint import Checkpoint
from tandem_cli.main import app
from tandem_cli.period import month_period, parse_period
from tandem_scoring.drift import DriftChange, drift_control_event
from tandem_shared.envelope import utcnow
from tandem_shared.fairness import wilson
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.review_api.apps import audited_review_api
from tests.review_api.test_api import auth, pending, publish_routed, routed
from tests.review_api.test_risks import risk
from tests.review_api.test_stats import decided, publish_decisions
from tests.service_utils import eventually, publish_events

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "test-artifacts" / "oversight-report.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADA, IVY, ANA = auth("ada", "admin"), auth("ivy", "auditor"), auth("ana", "reviewer")
POLICY = (ROOT / "deploy" / "local" / "policy.yaml").read_text()
PSI = (0.05, 0.31, 0.12)  # three votes on mean_radius; the second an alarm


def test_periods_are_quarters_months_and_the_one_before_now() -> None:
    q4 = parse_period("2026-Q4")
    assert (q4.since, q4.until) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert parse_period("2026-02").until == datetime(2026, 3, 1, tzinfo=UTC)
    january = datetime(2027, 1, 15, tzinfo=UTC)
    assert parse_period("last-month", january).label == "2026-12"
    assert parse_period("last-quarter", january).label == "2026-Q4"
    with pytest.raises(ValueError, match="2026-Q4, 2026-11"):
        parse_period("2026-13")


def share(value: float) -> str:
    return f"{value:.1%}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_report_shows_what_the_raw_events_say(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str, tmp_path: Path
) -> None:
    now = utcnow()
    period = month_period(now.year, now.month)
    clinics = ["east"] * 4 + ["west"] * 2
    automatic = [
        decided(n, "model", 1, segment={"clinic": c}, at=now) for n, c in enumerate(clinics)
    ]
    this_month = {"submitted_at": now, "routed_at": now, "due_at": now + timedelta(hours=4)}
    reviews = [
        routed(task_id, qa=task_id == "q-1").model_copy(
            update={**this_month, "segment": {"clinic": clinic}}
        )
        for task_id, clinic in (("q-1", "east"), ("r-1", "west"), ("r-2", "west"))
    ]
    # People's verdicts: the QA sample confirms the model; r-1 overrides it, r-2 agrees.
    verdicts = {"q-1": "benign", "r-1": "malignant", "r-2": "benign"}
    # Two of them say what they made of the model: explanations useful 4 and 2, trust 2 and 4.
    ratings = {
        "q-1": {"explanation_useful": 4, "trust": 2},
        "r-2": {"explanation_useful": 2, "trust": 4},
    }
    votes = [
        drift_control_event(
            DriftChange("tumor_screening", "1", "mean_radius", psi, psi > 0.2),
            "scoring",
            now + timedelta(seconds=n),
            "a",
        )
        for n, psi in enumerate(PSI)
    ]
    out = tmp_path / "report"
    async with (
        audited_review_api(kafka_settings, database_url, tmp_path, checkpoint_seconds=0.5) as (
            url,
            audit_url,
        ),
        httpx.AsyncClient(base_url=url, timeout=30) as api,
    ):
        await publish_decisions(kafka_settings, topics, automatic)
        await publish_routed(kafka_settings, topics, reviews)
        await publish_events(kafka_settings, [Outgoing(topics.control, v) for v in votes])
        for item in await pending(api, 3):
            review = f"/v1/reviews/{item['review_id']}"
            await api.post(f"{review}/claim", headers=ANA)
            body = {
                "outcome": verdicts[item["task_id"]],
                "rationale": "seen",
                **ratings.get(item["task_id"], {}),
            }
            assert (await api.post(f"{review}/decision", json=body, headers=ANA)).status_code == 200
        applied = await api.post("/v1/admin/policy/apply", json={"document": POLICY}, headers=ADA)
        assert applied.status_code == 200, applied.text
        assert (await api.put("/v1/risks/missed-malignancy", json=risk(), headers=ADA)).is_success
        # What people write is shown as text: an image tag in a title would fetch, and did not.
        title = "Drift at the east clinic <img src=x.png> </script>"
        opened = {"title": title, "risks": ["missed-malignancy"], "text": "x"}
        assert (await api.post("/v1/incidents/open", json=opened, headers=ADA)).is_success

        async def recorded() -> bool:
            """Every control change in the ledger under a signed checkpoint, and every decision
            in the review API."""
            window = {"since": period.since.isoformat(), "until": period.until.isoformat()}
            async with httpx.AsyncClient(base_url=audit_url, headers=IVY) as audit:
                lines = (
                    await audit.get(
                        "/v1/audit/export", params={**window, "type": "tandem.control.changed.v1"}
                    )
                ).text.splitlines()
                signed = await audit.get("/v1/audit/checkpoints/latest")
            stats = await api.get("/v1/stats", params={**window, "group_by": "none"}, headers=IVY)
            kinds = sorted(json.loads(line)["data"]["kind"] for line in lines)
            return (
                kinds == ["drift"] * 3 + ["incident", "policy", "risk"]
                and stats.json()["overall"]["decisions"] == len(automatic) + 2
                and signed.status_code == 200
                and signed.json()["tree_size"] >= int(json.loads(lines[-1])["seq"])
            )

        await eventually(recorded, "the events in the ledger and the review API", timeout=60)
        written = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["report", "--period", period.label, "--out", str(out), "--url", url,
             "--audit-url", audit_url],
        )  # fmt: skip
        assert written.exit_code == 0, written.output
        async with httpx.AsyncClient(base_url=audit_url, headers=IVY) as audit:
            latest = (await audit.get("/v1/audit/checkpoints/latest")).json()

    html = out / f"oversight-{period.label}.html"
    assert f"wrote {html}" in written.output
    assert (out / f"oversight-{period.label}.pdf").read_bytes().startswith(b"%PDF")
    shown, figures, fetched = await render(html)
    assert fetched == [html.as_uri()]  # self-contained: nothing else was asked for

    # The whole: 6 automatic and 2 people's decisions (a QA verdict is feedback, not a decision).
    low, high = wilson(1, 1) or (0.0, 0.0)
    assert shown["overall.decisions"] == "8" and shown["overall.automatic"] == "6"
    assert shown["overall.automation_rate"] == share(6 / 8)
    assert shown["overall.override_rate"] == share(1 / 2)
    assert shown["overall.qa_accuracy"] == share(1.0)
    assert shown["overall.qa_accuracy_interval"] == f"{low:.1%} to {high:.1%}"
    assert shown["overall.sla_breaches"] == "0"
    # By clinic: east 4 automatic of 4, west 2 of 4 with one override in two.
    assert shown["segments.clinic=east.automation_rate"] == share(1.0)
    assert shown["segments.clinic=east.automation_gap"] == f"{(1.0 - 6 / 8) * 100:+.1f}"
    assert shown["segments.clinic=west.automation_rate"] == share(2 / 4)
    assert shown["segments.clinic=west.override_rate"] == share(1 / 2)
    assert shown["segments.clinic=east.qa_accuracy"] == share(1.0)
    # The one day of the period is the whole; reviewers' ratings are means of what they gave.
    [today] = figures["days"]
    assert (today["decisions"], today["automation_rate"]) == (8, 6 / 8)
    said = "feedback.tumor_screening.tumor_screening/1"
    assert shown[f"{said}.rated"] == str(len(ratings))
    assert shown[f"{said}.explanation_useful"] == f"{(4 + 2) / 2:.1f}"
    assert shown[f"{said}.trust"] == f"{(2 + 4) / 2:.1f}"
    # Drift: three votes, one alarm, the largest PSI.
    feature = "drift.tumor_screening/1/mean_radius"
    assert (shown[f"{feature}.votes"], shown[f"{feature}.alarms"]) == ("3", "1")
    assert shown[f"{feature}.max_psi"] == f"{max(PSI):.3f}"
    # Changes with their authors; the incident and the risk; the checkpoint the ledger signed.
    assert [(c["kind"], c["changed_by"]) for c in figures["changes"]] == [("policy", "ada")]
    assert [i["title"] for i in figures["incidents"]] == [opened["title"]]
    assert [r["id"] for r in figures["risks"]] == ["missed-malignancy"]
    checkpoint = Checkpoint.of(figures["checkpoint"])
    checkpoint.check()
    assert figures["checkpoint"]["tree_size"] <= latest["tree_size"]
    assert shown["checkpoint.tree_size"] == str(checkpoint.tree_size)


async def render(html: Path) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """The page in headless Chromium: each shown figure by name, the figures' JSON, and every
    URL the page asked for; a screenshot is kept."""
    fetched: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: fetched.append(request.url))
            await page.goto(html.as_uri())
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            cells = page.locator("[data-figure]")
            shown = {
                str(await cell.get_attribute("data-figure")): (await cell.inner_text()).strip()
                for cell in await cells.all()
            }
            figures = json.loads(await page.locator("#tandem-figures").text_content() or "{}")
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 20_000
    return shown, figures, fetched
