"""OpenAPI links: the requests a response leads to, with the ids it names filled in, so a client
reading the document (or a tool testing it) goes from the queue to a review, from a claim to
the decision. Each constant is a route's ``responses``."""

from __future__ import annotations

from typing import Any

REVIEW = "/v1/reviews/{review_id}"
TASK = "/v1/tasks/{task_id}"


def link(method: str, path: str, description: str, **parameters: Any) -> dict[str, Any]:
    """A link to ``method path``; each parameter a runtime expression such as
    ``$response.body#/review_id``, and ``body`` what the request body takes from them."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    found: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{method}"}
    body = parameters.pop("body", None)
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = body
    found["description"] = description
    return found


def _on(status: int, **links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {status: {"links": links}}


def _held(review_id: str) -> dict[str, dict[str, Any]]:
    """What the holder of a claim does next."""
    return {
        "GetReview": link("get", REVIEW, "Read it, with its outcomes.", review_id=review_id),
        "Heartbeat": link("post", f"{REVIEW}/heartbeat", "Keep it.", review_id=review_id),
        "Release": link("post", f"{REVIEW}/release", "Give it back.", review_id=review_id),
        "Escalate": link("post", f"{REVIEW}/escalate", "Hand it up.", review_id=review_id),
        "Decide": link("post", f"{REVIEW}/decision", "Decide it.", review_id=review_id),
        "FirstLook": link(
            "post",
            f"{REVIEW}/first-look",
            "On a blind review: your verdict before the model's view is shown.",
            review_id=review_id,
        ),
    }


_FIRST = "$response.body#/items/0/review_id"
QUEUE_PAGE = _on(
    200,
    GetReview=link("get", REVIEW, "The first review.", review_id=_FIRST),
    Claim=link("post", f"{REVIEW}/claim", "Claim the first review.", review_id=_FIRST),
    NextPage=link("get", "/v1/reviews", "The page after.", cursor="$response.body#/next_cursor"),
)
CLAIMED = _on(200, **_held("$response.body#/review_id"))
REVIEW_READ = _on(
    200,
    Claim=link("post", f"{REVIEW}/claim", "Claim it.", review_id="$response.body#/review_id"),
    Decide=link(
        "post",
        f"{REVIEW}/decision",
        "Decide it, when you hold it: one of its outcomes, and why.",
        review_id="$response.body#/review_id",
        body={"outcome": "$response.body#/outcomes/0"},
    ),
    GetTask=link("get", TASK, "Its task.", task_id="$response.body#/task_id"),
)
ESCALATED = _on(
    204, GetReview=link("get", REVIEW, "Read it again.", review_id="$request.path.review_id")
)
RELEASED = _on(
    204,
    Claim=link("post", f"{REVIEW}/claim", "Claim it again.", review_id="$request.path.review_id"),
)
FIRST_LOOK_RECORDED = _on(
    200,
    Decide=link(
        "post",
        f"{REVIEW}/decision",
        "Decide it, now that the model's view is shown.",
        review_id="$response.body#/review_id",
    ),
)
DECIDED = _on(
    200, GetReview=link("get", REVIEW, "The review now.", review_id="$response.body#/review_id")
)
TASK_READ = _on(
    200,
    GetReview=link(
        "get", REVIEW, "Its review, if it has one.", review_id="$response.body#/review/review_id"
    ),
)
# Also the headers of the answer to a submitted task, accepted or known already.
SUBMITTED: dict[str, Any] = {
    "headers": {"Location": {"description": "The task's own URL.", "schema": {"type": "string"}}},
    "links": {"GetTask": link("get", TASK, "The task.", task_id="$response.body#/task_id")},
}
