"""What the audit API's document says besides its routes: every answer a route can give, and
the links from the ids and tree sizes in an answer to the requests they lead to (a task's
events to their proofs, checkpoints to the proof that one extends another), which a client
reading the document, or a tool testing it, follows to real entries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """What a refused request gets: what to fix, in a sentence."""

    detail: str


class InvalidRequest(BaseModel):
    """A request that does not match the document: each parameter that is wrong, and why."""

    detail: list[dict[str, Any]]


def refused(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


def invalid(also: str = "") -> dict[int | str, dict[str, Any]]:
    """The 422 of a route with parameters; ``also`` what else it refuses with one."""
    what = "A parameter is malformed" + (f", or {also}" if also else "") + "."
    return {422: {"model": InvalidRequest | Problem, "description": what}}


# Declared on both routers: each refuses these before the route runs.
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: refused("The body nests its JSON deeper than the limit (32 unless configured)."),
    401: refused("No bearer token, or one that is not valid here."),
    403: refused("The token's roles do not allow this."),
    413: refused("The body is larger than the limit (1 MiB unless configured)."),
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: refused("The ledger's database is not reachable; try again.")
}


def link(method: str, path: str, description: str, **parameters: Any) -> dict[str, Any]:
    """An OpenAPI link to ``method path``; each parameter a runtime expression such as
    ``$response.body#/events/0/seq``, or a value."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": parameters,
        "description": description,
    }


def _on_200(**links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"links": links}}


TASK, INCLUSION = "/v1/audit/tasks/{task_id}", "/v1/audit/proofs/inclusion"
CONSISTENCY = "/v1/audit/proofs/consistency"


def _prove(entry: str, description: str) -> dict[str, Any]:
    """The inclusion proof of the entry at ``entry`` (a JSON pointer), named whole: by id,
    source and seq, since an id may name several entries."""
    at = f"$response.body#{entry}"
    return link(
        "get",
        INCLUSION,
        description,
        event_id=f"{at}/event_id",
        source=f"{at}/source",
        seq=f"{at}/seq",
        shard=f"{at}/shard",
    )


LINEAGE_LINKS = _on_200(ProveFirst=_prove("/events/0", "The proof of its first event."))
COMPLETENESS_LINKS = _on_200(
    GetConflictingTask=link(
        "get",
        TASK,
        "A task decided differently.",
        task_id="$response.body#/conflicting_decisions/0",
    ),
    GetConflictTask=link(
        "get", TASK, "The task of a conflict.", task_id="$response.body#/event_conflicts/0/task_id"
    ),
    ProveConflict=_prove("/event_conflicts/0", "The proof of a conflicting record."),
)
CHECKPOINTS_LINKS = _on_200(
    ProveConsistency=link(
        "get",
        CONSISTENCY,
        "That the second checkpoint extends the first.",
        first="$response.body#/0/tree_size",
        second="$response.body#/1/tree_size",
    ),
    Later=link(
        "get",
        "/v1/audit/checkpoints",
        "Those after the first.",
        after="$response.body#/0/tree_size",
    ),
)
LATEST_LINKS = _on_200(
    ProveConsistency=link(
        "get",
        CONSISTENCY,
        "That it extends itself: the empty proof.",
        first="$response.body#/tree_size",
        second="$response.body#/tree_size",
    ),
)
PROOF_LINKS = _on_200(
    ProveConsistency=link(
        "get",
        CONSISTENCY,
        "That its checkpoint extends itself: the empty proof.",
        first="$response.body#/checkpoint/tree_size",
        second="$response.body#/checkpoint/tree_size",
        shard="$response.body#/shard",
    ),
)
