"""The reviewer console end to end in headless Chromium (Debian's, driven by Playwright): a
reviewer pastes a token, sees the queue, claims, reads the case and the model's reasons,
decides with a rationale and is handed the next one. The screenshot is kept under build/."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect
from tandem_shared.auth import mint_token
from tandem_shared.events import Contribution, DecisionMade, FeedbackRecorded, FirstLook
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.apps import audited_review_api
from tests.review_api.test_api import publish_routed, routed
from tests.service_utils import eventually

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "test-artifacts" / "console.png"
BLIND_SCREENSHOT = SCREENSHOT.with_name("console-blind.png")
KEYBOARD_SCREENSHOT = SCREENSHOT.with_name("console-keyboard.png")
HISTORY_SCREENSHOT = SCREENSHOT.with_name("console-history.png")
# Installed by deploy/local/install-system-deps.sh (make setup), from Debian's packages.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.kafka


@asynccontextmanager
async def console(server: str, height: int) -> AsyncIterator[Page]:
    """The console in headless Chromium, 1280 pixels wide."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": height})
            await page.goto(f"{server}/console")
            yield page
        finally:
            await browser.close()


async def connect(page: Page, token: str, waiting: int) -> None:
    """Paste the token, connect, and wait for the queue to show ``waiting`` reviews."""
    await page.get_by_test_id("token").fill(token)
    await page.get_by_test_id("connect").click()
    await expect(page.get_by_test_id("queue").locator("li")).to_have_count(waiting, timeout=30_000)


def explained(task_id: str, priority: int, mean_radius: float = 14.2) -> object:
    review = routed(task_id, priority=priority)
    why = [
        Contribution(feature="mean_radius", contribution=1.42),
        Contribution(feature="mean_texture", contribution=-0.37),
    ]
    score = review.score.model_copy(update={"explanation": why})
    task = review.task.model_copy(update={"features": {"mean_radius": mean_radius}})
    return review.model_copy(update={"score": score, "task": task})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_reviewer_decides_in_the_console(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(
        kafka_settings,
        topics,
        [explained("first", 80, mean_radius=40.0), explained("second", 40)],  # type: ignore[list-item]
    )
    token = mint_token(RuntimeSettings(), "rui", ["reviewer"])
    async with console(server, height=900) as page:
        await connect(page, token, waiting=2)

        await page.get_by_test_id("next").click()
        await expect(page.get_by_test_id("review")).to_contain_text("tumor_screening · first")
        # The claim comes back on the live stream: one review is left waiting.
        await expect(page.get_by_test_id("queue").locator("li")).to_have_count(1, timeout=30_000)
        await expect(page.get_by_test_id("summary")).to_contain_text("says benign")
        # Each feature beside the model's ranges, the unusual marked in words.
        features = page.get_by_test_id("features")
        radius = features.locator("tr", has_text="mean_radius")
        await expect(radius).to_contain_text(
            "above the range the model knows (2.58625 to 33.2148) (most cases: 10.302 to 19.4)"
        )
        await expect(radius.locator(".standing.above_range")).to_be_visible()
        await expect(features.locator("tr", has_text="mean_texture")).to_contain_text("no value")
        await expect(page.get_by_test_id("explanation")).to_contain_text("1.420")

        await page.get_by_test_id("decide").click()  # no outcome chosen yet: refused
        await expect(page.get_by_test_id("message")).to_contain_text("Choose an outcome")
        await page.get_by_test_id("outcome-malignant").click()
        await page.get_by_test_id("rationale").fill("irregular border on the image")
        await page.get_by_test_id("decide").click()

        # Decided, and handed the next review: on the live queue nothing is left waiting.
        await expect(page.get_by_test_id("review")).to_contain_text("tumor_screening · second")
        await expect(page.get_by_test_id("queue").locator("li")).to_have_count(0, timeout=30_000)
        await expect(page.locator("#live")).to_have_text("0 waiting")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert (decision.task_id, decision.outcome, decision.reviewers) == (
        "first",
        "malignant",
        ["rui"],
    )
    assert decision.rationale == "irregular border on the image" and decision.overrode_model
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_blind_review_in_the_console_shows_the_model_after_the_reviewers_verdict(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    blind = explained("blind", 80).model_copy(update={"blind": True})  # type: ignore[attr-defined]
    await publish_routed(kafka_settings, topics, [blind])
    token = mint_token(RuntimeSettings(), "rui", ["reviewer"])
    async with console(server, height=800) as page:
        await connect(page, token, waiting=1)
        await page.get_by_test_id("next").click()
        summary = page.get_by_test_id("summary")
        await expect(summary).to_contain_text("Blind review")
        await expect(summary).not_to_contain_text("says")
        await expect(page.get_by_test_id("explanation")).to_be_hidden()
        await expect(page.get_by_test_id("rationale")).to_be_hidden()
        # The case in context is shown blind: its features beside the model's ranges.
        await expect(page.get_by_test_id("features")).to_contain_text(
            "typical: like most training cases (10.302 to 19.4)"
        )
        BLIND_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(BLIND_SCREENSHOT), full_page=True)

        await page.get_by_test_id("outcome-malignant").click()
        await page.get_by_test_id("decide").click()  # records the verdict, then reveals
        await expect(page.get_by_test_id("message")).to_contain_text(
            "Your verdict before the reveal: malignant. The model says benign"
        )
        await expect(summary).to_contain_text("says benign")
        await expect(page.get_by_test_id("explanation")).to_contain_text("1.420")
        pressed = page.get_by_test_id("outcome-malignant")
        await expect(pressed).to_have_attribute("aria-pressed", "true")
        await page.get_by_test_id("rationale").fill("the border still looks irregular")
        await page.get_by_test_id("decide").click()
        await expect(page.get_by_test_id("message")).to_contain_text("Nothing is waiting")

    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert decision.first_looks == [
        FirstLook(reviewer="rui", before="malignant", after="malignant", changed=False)
    ]
    assert BLIND_SCREENSHOT.stat().st_size > 10_000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_reviewer_works_the_queue_by_keyboard_alone_at_1280_by_800(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    blind = explained("kb-blind", 40).model_copy(update={"blind": True})  # type: ignore[attr-defined]
    await publish_routed(kafka_settings, topics, [explained("kb-seen", 80), blind])  # type: ignore[list-item]
    token = mint_token(RuntimeSettings(), "kim", ["reviewer"])
    async with console(server, height=800) as page:
        await expect(page.get_by_test_id("keys")).to_contain_text("Ctrl")
        keys = page.keyboard
        await keys.press("Tab")  # the token box comes first
        await keys.type(token)
        await keys.press("Tab")
        await keys.press("Enter")  # Connect
        await expect(page.get_by_test_id("queue").locator("li")).to_have_count(2, timeout=30_000)
        await expect(page.get_by_test_id("today")).to_contain_text("0 reviewed today")

        await keys.press("n")
        await expect(page.get_by_test_id("review")).to_contain_text("kb-seen")
        await expect(page.get_by_test_id("decide")).to_be_in_viewport()
        await keys.press("2")
        await expect(page.get_by_test_id("outcome-malignant")).to_have_attribute(
            "aria-pressed", "true"
        )
        await keys.press("/")
        await keys.type("irregular border")
        await keys.press("Tab")  # explanation useful
        await keys.type("4")
        await keys.press("Tab")  # trust
        await keys.type("2")
        await keys.press("Control+Enter")

        # Decided, and the blind one comes next: a verdict first, by keyboard too.
        await expect(page.get_by_test_id("review")).to_contain_text("kb-blind")
        await expect(page.get_by_test_id("today")).to_contain_text("1 reviewed today")
        await expect(page.get_by_test_id("summary")).to_contain_text("Blind review")
        await keys.press("1")
        await keys.press("Control+Enter")
        await expect(page.get_by_test_id("summary")).to_contain_text("says benign")
        await keys.press("m")
        await expect(page.get_by_test_id("message")).to_contain_text("Flagged")
        await keys.press("/")
        await keys.type("typical case")
        await keys.press("Escape")
        await keys.press("Control+Enter")
        await expect(page.get_by_test_id("today")).to_contain_text(
            "2 reviewed today · 50% with the model"
        )
        KEYBOARD_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(KEYBOARD_SCREENSHOT))

    decided = {
        d.task_id: d
        for d in (
            DecisionMade.model_validate_json(r.value)
            for r in await consume(kafka_settings.bootstrap_servers, topics.decisions, 2)
        )
    }
    assert (decided["kb-seen"].outcome, decided["kb-seen"].rationale) == (
        "malignant",
        "irregular border",
    )
    assert decided["kb-blind"].first_looks[0].before == "benign"
    feedback = {
        f.task_id: f
        for f in (
            FeedbackRecorded.model_validate_json(r.value)
            for r in await consume(kafka_settings.bootstrap_servers, topics.feedback, 2)
        )
    }
    assert (feedback["kb-seen"].explanation_useful, feedback["kb-seen"].trust) == (4, 2)
    assert KEYBOARD_SCREENSHOT.stat().st_size > 10_000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_console_shows_a_task_s_history_to_those_the_audit_api_lets_read_it(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str, tmp_path: Path
) -> None:
    await publish_routed(kafka_settings, topics, [explained("told", 60)])  # type: ignore[list-item]
    async with audited_review_api(kafka_settings, database_url, tmp_path) as (server, audit_url):
        auditor = mint_token(RuntimeSettings(), "ivy", ["auditor"])
        bearer = {"Authorization": f"Bearer {auditor}"}

        async def in_the_ledger() -> bool:
            async with httpx.AsyncClient(base_url=audit_url) as audit:
                found = await audit.get("/v1/audit/tasks/told", headers=bearer)
            return found.status_code == 200

        await eventually(in_the_ledger, "the routed event in the ledger", timeout=30)
        # An auditor reads the review from the queue, with its history; deciding is not
        # theirs to do.
        async with console(server, height=800) as page:
            await connect(page, auditor, waiting=1)
            await page.get_by_test_id("queue").get_by_role("button").click()
            await expect(page.get_by_test_id("review")).to_contain_text("tumor_screening · told")
            await expect(page.get_by_test_id("history")).to_contain_text("task.routed")
            await expect(page.get_by_test_id("decide")).to_be_hidden()
            await expect(page.get_by_test_id("claim")).to_be_visible()
            HISTORY_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(HISTORY_SCREENSHOT))

        # A reviewer opens it by keyboard and claims it with c; the audit API does not let
        # a reviewer's token read the history, so the console shows none.
        reviewer = mint_token(RuntimeSettings(), "rui", ["reviewer"])
        async with console(server, height=800) as page:
            await connect(page, reviewer, waiting=1)
            await page.get_by_test_id("queue").get_by_role("button").focus()
            await page.keyboard.press("Enter")
            await expect(page.get_by_test_id("claim")).to_be_visible()
            await expect(page.locator("#history-box")).to_be_hidden()
            await page.keyboard.press("c")
            await expect(page.get_by_test_id("message")).to_contain_text("Claimed until")
            await expect(page.get_by_test_id("decide")).to_be_in_viewport()
            await expect(page.get_by_test_id("claim")).to_be_hidden()
    assert HISTORY_SCREENSHOT.stat().st_size > 10_000
