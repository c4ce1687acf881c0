"""The two stages of bench/pipeline.py written on Quix Streams, one process each.

    uv run --project bench/quix --frozen python bench/quix/stages.py score --broker HOST:PORT \
        --group G --source SUBMITTED --target SCORED --manifest PATH --model PATH
    uv run --project bench/quix --frozen python bench/quix/stages.py route --broker HOST:PORT \
        --group G --source SCORED --automatic DECISIONS --review ROUTED [--threshold 0.9]

Quix's ordinary API: an ``Application`` (at-least-once, its default), topics with its JSON
(de)serializers, a ``StreamingDataFrame`` that handles one record at a time. ``score`` decodes a
task (the record's value; its CloudEvents attributes are headers, passed on unchanged), runs the
ONNX model on that one row (features in the manifest's order, float32, the impute value for a
missing one) and sends the task with its prediction and confidence; ``route`` sends a decision
to ``--automatic`` when the confidence reaches ``--threshold``, else the scored task to
``--review``. Runs in an environment of its own (bench/quix/pyproject.toml) and imports nothing
from Tandem: the model and what it needs to know of it come from the files the bench names.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from quixstreams import Application  # type: ignore[import-not-found, unused-ignore]

Value = dict[str, Any]


class Model:
    """One ONNX model and what its manifest says of its input and output."""

    def __init__(self, manifest_path: Path, model_path: Path) -> None:
        manifest = json.loads(manifest_path.read_text())
        features = sorted(manifest["features"], key=lambda f: f["order"])
        others = [f["name"] for f in features if f["type"] != "numeric"]
        if others:
            raise SystemExit(f"{manifest_path}: only numeric features are handled, not {others}")
        self.names = [f["name"] for f in features]
        self.impute = [float(f["impute"]) for f in features]
        self.labels: list[str] = manifest["labels"]
        self.input: str = manifest["tensors"]["input"]
        self.outputs = [manifest["tensors"]["probabilities"]]
        # The scoring service's thread settings: one thread, no parallel branches.
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_path.read_bytes(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, task: Value) -> Value:
        """The task, its predicted label and the label's probability."""
        features = task.get("features") or {}
        row = np.array(
            [[_number(features.get(n), d) for n, d in zip(self.names, self.impute, strict=True)]],
            dtype=np.float32,
        )
        (probabilities,) = self.session.run(self.outputs, {self.input: row})
        best = int(np.argmax(probabilities[0]))
        confidence = float(probabilities[0][best])
        return {"task": task, "prediction": self.labels[best], "confidence": confidence}


def _number(value: object, impute: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return impute
    return float(value)


def application(args: argparse.Namespace) -> Any:
    return Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
    )


def score(args: argparse.Namespace) -> None:
    model = Model(args.manifest, args.model)
    app = application(args)
    sdf = app.dataframe(app.topic(args.source))
    sdf = sdf.apply(model)
    sdf.to_topic(app.topic(args.target))
    app.run()


def route(args: argparse.Namespace) -> None:
    threshold: float = args.threshold
    app = application(args)
    automatic, review = app.topic(args.automatic), app.topic(args.review)

    def routed(scored: Value) -> Value:
        if scored["confidence"] >= threshold:
            return {
                "task_id": scored["task"]["task_id"],
                "outcome": scored["prediction"],
                "confidence": scored["confidence"],
                "decided_by": "model",
            }
        return {**scored, "route": "review"}

    def topic(value: Value, *_: object) -> Any:
        return automatic if "outcome" in value else review

    sdf = app.dataframe(app.topic(args.source))
    sdf = sdf.apply(routed)
    sdf.to_topic(topic)
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--broker", required=True, help="bootstrap servers")
    common.add_argument("--group", required=True, help="consumer group")
    common.add_argument("--source", required=True, help="topic read")
    common.add_argument("--state-dir", type=Path, default=Path("state"), help="Quix's state")
    scoring = stages.add_parser("score", parents=[common], help="tasks in, scored tasks out")
    scoring.add_argument("--target", required=True, help="topic of the scored tasks")
    scoring.add_argument("--manifest", type=Path, required=True, help="the model's manifest")
    scoring.add_argument("--model", type=Path, required=True, help="the ONNX model")
    routing = stages.add_parser("route", parents=[common], help="scored tasks in, routes out")
    routing.add_argument("--automatic", required=True, help="topic of automatic decisions")
    routing.add_argument("--review", required=True, help="topic of tasks sent to review")
    routing.add_argument("--threshold", type=float, default=0.9, help="least confidence to decide")
    args = parser.parse_args()
    run: dict[str, Callable[[argparse.Namespace], None]] = {"score": score, "route": route}
    run[args.stage](args)


if __name__ == "__main__":
    main()
