"""The command line: tokens, sample tasks, publishing to the real broker, clear input errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tandem_cli.main import app
from tandem_shared.auth import verify_token
from tandem_shared.control import ModelState, model_state, read_control
from tandem_shared.envelope import decode
from tandem_shared.events import TaskSubmitted
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.kafka_utils import consume
from tests.service_utils import OPEN_TRUST

runner = CliRunner()
MODELS = Path(__file__).resolve().parents[2] / "models"


def test_token_is_verifiable_with_its_roles() -> None:
    result = runner.invoke(
        app, ["token", "--role", "reviewer", "--role", "senior", "--subject", "ada"]
    )
    assert result.exit_code == 0, result.output
    principal = verify_token(RuntimeSettings(), result.stdout.strip())
    assert principal.subject == "ada"
    assert principal.roles == {"reviewer", "senior"}


def test_token_refuses_a_lifetime_over_a_day() -> None:
    result = runner.invoke(app, ["token", "--role", "admin", "--subject", "x", "--hours", "25"])
    assert result.exit_code == 2 and "less than or equal to 24" in result.output


def test_token_refuses_an_unknown_role() -> None:
    result = runner.invoke(app, ["token", "--role", "overlord", "--subject", "x"])
    assert result.exit_code == 2
    assert "unknown role" in result.output


def test_sample_tasks_are_valid_and_repeatable_with_a_seed() -> None:
    first = runner.invoke(app, ["sample-tasks", "--count", "5", "--seed", "3"]).stdout.splitlines()
    again = runner.invoke(app, ["sample-tasks", "--count", "5", "--seed", "3"]).stdout.splitlines()
    other = runner.invoke(app, ["sample-tasks", "--count", "5"]).stdout.splitlines()
    assert first == again
    assert len(first) == 5
    assert {json.loads(line)["task_id"] for line in first}.isdisjoint(
        json.loads(line)["task_id"] for line in other
    )
    for line in first:
        task = TaskSubmitted.model_validate_json(line)
        assert task.task_type == "tumor_screening"
        assert len(task.features) == 30


def test_submit_refuses_bad_input_with_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"task_id": "a", "task_type": "t", "features": {}}\n{oops\n')
    result = runner.invoke(app, ["submit", str(bad)])
    assert result.exit_code == 2
    assert "line 2" in result.output
    invalid = tmp_path / "invalid.jsonl"
    invalid.write_text('{"task_id": "a"}\n')
    result = runner.invoke(app, ["submit", str(invalid)])
    assert result.exit_code == 2
    assert "task_type" in result.output


@pytest.mark.kafka
async def test_submit_publishes_cloudevents_from_stdin(
    kafka_settings: KafkaSettings, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    lines = runner.invoke(app, ["sample-tasks", "--count", "3", "--seed", "9"]).stdout
    # The command runs its own event loop, so it runs in a worker thread here.
    result = await asyncio.to_thread(runner.invoke, app, ["submit", "-"], input=lines)
    assert result.exit_code == 0, result.output
    assert "published 3 task(s)" in result.output
    records = await consume(kafka_settings.bootstrap_servers, topics.submitted, 3)
    sent = {json.loads(line)["task_id"] for line in lines.splitlines()}
    assert {r.key.decode() for r in records} == sent
    for r in records:
        event = decode(r.value, r.headers, {"tandem.task.submitted.v1": TaskSubmitted})
        assert event.subject == r.key.decode()
        assert event.source == "tandem/cli"


@pytest.mark.kafka
async def test_model_promote_and_rollback_publish_control_changes(
    kafka_settings: KafkaSettings, topics: Topics, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    models = MODELS
    args = ["model", "promote", "tumor_screening", "1", "--models-dir", str(models)]
    ungated = await asyncio.to_thread(runner.invoke, app, args)
    assert ungated.exit_code == 1
    assert "refused: no validation evidence was given" in ungated.output
    reason = ["--override", "the first version, validated when it was trained"]
    first = await asyncio.to_thread(runner.invoke, app, [*args, *reason])
    assert first.exit_code == 0, first.output
    assert "OK tumor_screening/1" in first.output
    assert "gate overridden: the first version" in first.output
    second = await asyncio.to_thread(
        runner.invoke, app, ["model", "promote", "tumor_screening", "7", *reason]
    )
    assert "live 7, rollback to 1" in second.output
    back = await asyncio.to_thread(runner.invoke, app, ["model", "rollback", "tumor_screening"])
    assert back.exit_code == 0, back.output
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    assert model_state(changes, "tumor_screening") == ModelState(live="1", previous="7")
    shadow = await asyncio.to_thread(
        runner.invoke, app, ["model", "shadow", "tumor_screening", "3"]
    )
    assert "live 1, shadow 3" in shadow.output
    stop = await asyncio.to_thread(runner.invoke, app, ["model", "shadow", "tumor_screening"])
    assert "shadow none" in stop.output

    broken = tmp_path / "tumor_screening" / "2"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{}")
    refused = await asyncio.to_thread(
        runner.invoke,
        app,
        ["model", "promote", "tumor_screening", "2", "--models-dir", str(tmp_path), *reason],
    )
    assert refused.exit_code == 1
    assert "refused" in refused.output
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    assert model_state(changes, "tumor_screening") == ModelState(live="1", previous="7")
