"""Loading policy documents: errors name the field and the line; the JSON Schema export."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from tandem_policy.check import main as check
from tandem_policy.loader import PolicyError, load_policy, parse_policy
from tandem_policy.policy import Policy, policy_json_schema
from tandem_router.settings import RouterSettings, default_policy_file

from tests.policy.factories import POLICY_YAML

ROOT = Path(__file__).resolve().parents[2]
REPO_POLICY = ROOT / "deploy" / "local" / "policy.yaml"


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    return info.value


def test_the_example_document_loads() -> None:
    policy = parse_policy(POLICY_YAML)
    rules = policy.task_types["tumor_screening"]
    assert (policy.name, policy.version) == ("test", 3)
    assert rules.auto == {"benign": 0.97, "malignant": 0.99}
    assert rules.review_due == timedelta(hours=4)


def test_review_due_takes_seconds_too() -> None:
    text = POLICY_YAML.replace("review_due: PT4H", "review_due: 900")
    assert parse_policy(text).task_types["tumor_screening"].review_due == timedelta(minutes=15)


def test_the_repository_policy_is_valid_and_is_the_default() -> None:
    policy = load_policy(REPO_POLICY)
    rules = policy.task_types["tumor_screening"]
    assert set(rules.auto) <= set(rules.outcomes) == {"benign", "malignant"}
    assert default_policy_file() == REPO_POLICY
    assert RouterSettings().policy_file == REPO_POLICY


def test_the_documented_example_is_a_valid_policy() -> None:
    docs = (ROOT / "docs" / "policy.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, source="docs/policy.md")
    rules = policy.task_types["tumor_screening"]
    first, combined = rules.rules
    assert (first.reason, first.feature, first.op) == ("large_lesion", "mean_radius", "gt")
    assert combined.all is not None and combined.route == "escalate"
    assert (rules.drift, rules.overdue.action) == ("review", "escalate")


def test_a_value_error_names_the_field_path_and_its_line() -> None:
    error = error_of(POLICY_YAML.replace("benign: 0.97", "benign: 1.5"))
    [problem] = error.problems
    assert problem.path == "task_types.tumor_screening.auto.benign"
    assert problem.line == 8
    assert "less than or equal to 1" in problem.message
    assert "p.yaml" in str(error) and "line 8" in str(error)


def test_every_problem_is_reported() -> None:
    text = POLICY_YAML.replace("qa_sample_rate: 0.0", "qa_sample_rat: 0.1").replace(
        "review_due: PT4H", "review_due: soon"
    )
    error = error_of(text)
    assert sorted(error.paths) == [
        "task_types.tumor_screening.qa_sample_rat",
        "task_types.tumor_screening.review_due",
    ]
    assert {p.line for p in error.problems} == {11, 13}


def test_a_missing_field_names_where_it_is_missing() -> None:
    error = error_of(POLICY_YAML.replace("    outcomes: [benign, malignant]\n", ""))
    assert error.paths == ["task_types.tumor_screening.outcomes"]
    assert error.problems[0].line == 5  # the task type that lacks it


def test_auto_outcomes_must_be_outcomes() -> None:
    error = error_of(POLICY_YAML.replace("malignant: 0.99", "maybe: 0.99"))
    assert error.paths == ["task_types.tumor_screening"]
    assert "['maybe']" in error.problems[0].message


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{reason: big, feature: radius, context: clinic, op: gt, value: 1}", "exactly one"),
        ("{reason: big, feature: radius, op: gt, value: [1]}", "single value"),
        ("{reason: big, feature: radius, op: in, value: 1}", "a list"),
        ("{reason: big, feature: radius, op: lt, value: small}", "must be a number"),
        ("{reason: Big Lesion, feature: radius, op: gt, value: 1}", "pattern"),
        ("{reason: confident, feature: radius, op: gt, value: 1}", "reserved"),
    ],
)
def test_invalid_rules(rule: str, message: str) -> None:
    error = error_of(POLICY_YAML + f"    rules:\n      - {rule}\n")
    assert error.paths[0].startswith("task_types.tumor_screening.rules.0")
    assert error.problems[0].line == 16
    assert message in str(error)


def test_yaml_syntax_errors_carry_the_line() -> None:
    error = error_of("name: x\nversion: 1\ntask_types: {\n  t: [a,\n")
    assert error.problems[0].line is not None and error.problems[0].line >= 4
    assert "YAML" in error.problems[0].message


def test_duplicate_keys_are_refused() -> None:
    error = error_of(POLICY_YAML.replace("malignant: 0.99", "malignant: 0.99\n      benign: 0.5"))
    assert error.paths == ["task_types.tumor_screening.auto.benign"]
    assert error.problems[0].line == 10
    assert "duplicate key" in str(error)


def test_aliases_are_refused() -> None:
    text = POLICY_YAML.replace("outcomes: [benign, malignant]", "outcomes: &o [benign, malignant]")
    text += "  other:\n    outcomes: *o\n"
    assert "aliases" in str(error_of(text))


@pytest.mark.parametrize("text", ["", "# nothing\n", "[1, 2]", "just text"])
def test_documents_that_are_not_a_policy(text: str) -> None:
    assert error_of(text).problems


def test_an_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


def test_json_schema_describes_the_document() -> None:
    schema = policy_json_schema()
    json.dumps(schema)  # plain JSON
    assert schema["title"] == "Tandem routing policy"
    assert set(schema["required"]) == {"name", "version", "task_types"}
    assert schema["additionalProperties"] is False
    rules = schema["$defs"]["TaskTypePolicy"]["properties"]
    assert rules["auto"]["additionalProperties"]["maximum"] == 1.0
    assert {"type": "number", "exclusiveMinimum": 0, "description": "seconds"} in rules[
        "review_due"
    ]["anyOf"]


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY_YAML.replace("version: 3", "version: 0"))
    assert check([str(REPO_POLICY)]) == 0
    assert "ok (default v1" in capsys.readouterr().out
    assert check([str(bad)]) == 1
    assert "line 3: version" in capsys.readouterr().err
    assert check(["--schema"]) == 0
    assert (
        Policy.model_json_schema()["properties"].keys()
        <= json.loads(capsys.readouterr().out)["properties"].keys()
    )


def test_characters_yaml_does_not_allow_are_refused_with_a_reason() -> None:
    error = error_of("name: x\x7f")
    assert "YAML" in str(error) and "special characters" in str(error)
