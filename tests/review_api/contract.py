"""One schemathesis run against the running review API as one role: every phase (examples,
coverage, fuzzing, and stateful sequences that follow the document's links to real reviews)
and every check. Where two people hold the role, the run acts as the first and replays what
the first reads as the second, who must not see what is only the first's. Runs in a process of
its own, so that roles run side by side on separate cores (schemathesis's own workers are
threads, which trip CPython 3.11 compiling ASTs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure
from schemathesis.engine import events, from_schema
from schemathesis.engine.recorder import ScenarioRecorder
from schemathesis.engine.run import PhaseName
from schemathesis.openapi.checks import RejectedPositiveData

# An endless event stream cannot be fetched whole; its responses are checked in test_live.py.
SKIPPED = "/v1/reviews/events"
# Each admin call reads (a change also writes) the control topic, a good part of a second: the
# boundary values of valid requests in bulk are left out (fuzzing still sends some), and the
# sequences keep to the queue and its reviews.
SLOW = r"^/v1/admin/"
# Refusals no JSON Schema can state: they hang on the server's state, or on two fields at
# once. The document says each in words (the parameter's, the field's or the route's
# description); a schema-valid request refused with one of these is the document being kept.
DOCUMENTED_REFUSALS = {
    "GET /v1/reviews": ("cursor is not one this API returned",),
    "GET /v1/stats": ("since must be before until", "the window spans at most"),
    "POST /v1/reviews/{review_id}/decision": ("is not allowed; allowed:",),
    "POST /v1/admin/policy/validate": ("invalid policy",),
    "POST /v1/admin/policy/simulate": ("invalid policy",),
    "POST /v1/admin/policy/apply": ("invalid policy",),
}


@dataclass
class Outcome:
    """What one run found (each with a request that reproduces it), and which operations
    answered 2xx in the stateful phase, where ids come from earlier responses."""

    findings: list[str] = field(default_factory=list)
    reached: set[str] = field(default_factory=set)


def all_checks() -> list[str]:
    load_all_checks()
    return list(CHECKS.get_all_names())


def credentials(path: Path, tokens: list[str]) -> Path:
    """A Web Fuzzing Commons auth document: one user per token, named 1, 2, ..."""
    users = [
        {"name": str(n), "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
        for n, token in enumerate(tokens, 1)
    ]
    path.write_text(json.dumps({"auth": users}))
    return path


def run(url: str, role: str, people: Path, examples: int, sequences: int) -> Outcome:
    """The run as user 1 of ``people``; any others are their peers."""
    names = [user["name"] for user in json.loads(people.read_text())["auth"]]
    auth = {"path": str(people), "user": names[0]} | ({"peers": names} if names[1:] else {})
    config = schemathesis.Config.from_dict(
        {
            "seed": 20_261_125,
            "suppress-health-check": ["all"],
            "workers": 1,
            "request-timeout": 30,
            "auth": {"wfc": auth},
            "checks": {name: {"enabled": True} for name in all_checks()},
            "generation": {"max-examples": examples, "database": "none", "deterministic": True},
            "phases": {"stateful": {"generation": {"max-examples": sequences}}},
            "operations": [
                {"include-path": SKIPPED, "enabled": False},
                {
                    "include-path-regex": SLOW,
                    "phases": {
                        "coverage": {"generation": {"mode": "negative"}},
                        "stateful": {"enabled": False},
                    },
                },
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    schema.hook("filter_failure")(_undocumented)
    found: dict[tuple[str, ...], str] = {}
    outcome = Outcome()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for key, text in _failures(event.recorder):
                found.setdefault(key, f"{role}: {event.phase.value}: {text}")
            if event.phase == PhaseName.STATEFUL_TESTING:
                outcome.reached |= _succeeded(event.recorder)
        elif isinstance(event, events.NonFatalError):
            key = ("error", event.label, event.info.title)
            found[key] = f"{role}: error in {event.label}: {event.info.title}: {event.info.message}"
        elif isinstance(event, events.FatalError):
            found[("fatal",)] = f"{role}: the run failed: {event.exception!r}"
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                found[("run", failure.title)] = f"{role}: {failure.title}: {failure.message}"
    outcome.findings = list(found.values())
    return outcome


def _failures(recorder: ScenarioRecorder) -> Iterator[tuple[tuple[str, ...], str]]:
    """(what tells it from others, the failure and a request that reproduces it)."""
    for checks in recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                f = check.failure_info.failure
                key = (f.operation or "", f.title, f.message)
                yield (
                    key,
                    f"{f.operation}: {f.title}\n{f.message}\n{check.failure_info.code_sample}",
                )


def _succeeded(recorder: ScenarioRecorder) -> set[str]:
    return {
        recorder.cases[case_id].value.operation.label
        for case_id, interaction in recorder.interactions.items()
        if interaction.response is not None and 200 <= interaction.response.status_code < 300
    }


def _undocumented(
    _: schemathesis.HookContext,
    failure: Failure,
    case: schemathesis.Case[Any],
    response: schemathesis.Response,
) -> bool:
    """A ``filter_failure`` hook: keeps every failure but a 422 for a schema-valid request that
    names its documented reason."""
    if not (isinstance(failure, RejectedPositiveData) and response.status_code == 422):
        return True
    try:
        detail = json.loads(response.content)["detail"]
    except (ValueError, KeyError, TypeError):
        return True
    reasons = DOCUMENTED_REFUSALS.get(case.operation.label, ())
    return not (isinstance(detail, str) and any(r in detail for r in reasons))
