"""One schemathesis run against a running API as one role: every phase (examples, coverage,
fuzzing, and stateful sequences that follow the document's links to real ids) and every check.
Where two people hold the role, the run acts as the first and replays what the first reads as
the second, who must not see what is only the first's. Runs in a process of its own, so that
roles run side by side on separate cores (schemathesis's own workers are threads, which trip
CPython 3.11 compiling ASTs). Each API's test says what is particular to it in a ``Contract``."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
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


@dataclass(frozen=True)
class Contract:
    """What one API's run needs besides its document.

    ``refusals``: per operation ("GET /v1/x"), the reasons it refuses a schema-valid request
    with 422 that no JSON Schema can state (they hang on the server's state, or on two
    parameters at once). The document says each in words; a 422 naming one of them is the
    document being kept. ``operations``: schemathesis's per-operation settings."""

    refusals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    operations: tuple[dict[str, Any], ...] = ()


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


def run(
    url: str, contract: Contract, role: str, people: Path, examples: int, sequences: int
) -> Outcome:
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
            "operations": list(contract.operations),
        }
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)

    def filter_failure(
        _: schemathesis.HookContext,
        failure: Failure,
        case: schemathesis.Case[Any],
        response: schemathesis.Response,
    ) -> bool:
        return _undocumented(contract.refusals, failure, case, response)

    schema.hook("filter_failure")(filter_failure)
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
    refusals: Mapping[str, tuple[str, ...]],
    failure: Failure,
    case: schemathesis.Case[Any],
    response: schemathesis.Response,
) -> bool:
    """Keeps every failure but a 422 for a schema-valid request that names its documented
    reason (a ``filter_failure`` hook drops what it returns False for)."""
    if not (isinstance(failure, RejectedPositiveData) and response.status_code == 422):
        return True
    try:
        detail = json.loads(response.content)["detail"]
    except (ValueError, KeyError, TypeError):
        return True
    reasons = refusals.get(case.operation.label, ())
    return not (isinstance(detail, str) and any(r in detail for r in reasons))


async def run_roles(
    url: str,
    contract: Contract,
    people: Mapping[str, Path],
    examples: int,
    sequences: int,
) -> dict[str, Outcome]:
    """``run`` once per role (``people``: the credentials of each), side by side, each in a
    process of its own (spawned: the server's loop and threads stay in this one)."""
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(people), mp_context=spawn) as pool:
        outcomes = await asyncio.gather(
            *(
                loop.run_in_executor(pool, run, url, contract, role, who, examples, sequences)
                for role, who in people.items()
            )
        )
    return dict(zip(people, outcomes, strict=True))


def findings(outcomes: Mapping[str, Outcome]) -> list[str]:
    return [f for outcome in outcomes.values() for f in outcome.findings]
