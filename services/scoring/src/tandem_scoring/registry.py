"""The model registry folder: ``models/NAME/VERSION/{model.onnx,manifest.json}``.

Each model is checked against its manifest when loaded (checksum, input width and type, output
names, label order), so a model that would answer the wrong question is refused at start-up
with a message that says what does not match, never discovered later in a wrong prediction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError
from tandem_shared.events import ModelRef

from tandem_scoring.manifest import (
    BooleanFeature,
    CategoricalFeature,
    ModelManifest,
    NumericFeature,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL = "model.onnx"
# float32 probabilities of a tree ensemble sum to 1 only up to rounding.
PROBABILITY_TOLERANCE = 1e-4


class ModelError(Exception):
    """A model that cannot be served; the message names the model and what is wrong."""


class Session(Protocol):
    """What the scorer needs of an onnxruntime ``InferenceSession``."""

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[Any]:
        """Outputs in the order of ``output_names``."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: ModelManifest
    session: Session

    @cached_property
    def ref(self) -> ModelRef:
        """Made once: every score names it."""
        return ModelRef(name=self.manifest.name, version=self.manifest.version)

    @property
    def key(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"


def read_manifest(directory: Path) -> ModelManifest:
    path = directory / MANIFEST
    try:
        manifest = ModelManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"{directory}: cannot read {MANIFEST}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise ModelError(f"{path} is not a valid manifest: {problems}") from exc
    if (manifest.name, manifest.version) != (directory.parent.name, directory.name):
        raise ModelError(
            f"{path} describes {manifest.name}/{manifest.version}, "
            f"but lives in {directory.parent.name}/{directory.name}"
        )
    return manifest


def load_model(directory: Path, threads: int = 1) -> LoadedModel:
    """Load one model version and check it against its manifest; raise ModelError if it fails."""
    import onnxruntime as ort

    manifest = read_manifest(directory)
    try:
        data = (directory / MODEL).read_bytes()
    except OSError as exc:
        raise ModelError(f"{directory}: cannot read {MODEL}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != manifest.model_sha256:
        raise ModelError(f"{directory / MODEL} does not match the manifest's model_sha256")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{directory / MODEL} is not a loadable ONNX model: {exc}") from exc
    check_session(manifest, session)
    log.info("loaded model %s/%s from %s", manifest.name, manifest.version, directory)
    return LoadedModel(manifest, session)


def check_session(manifest: ModelManifest, session: Any) -> None:
    """Refuse a session whose input, outputs or labels disagree with the manifest."""
    where = f"model {manifest.name}/{manifest.version}"
    inputs = {i.name: i for i in session.get_inputs()}
    tensor = inputs.get(manifest.tensors.input)
    if tensor is None or len(inputs) != 1:
        raise ModelError(
            f"{where}: expected one input named {manifest.tensors.input!r}, has {sorted(inputs)}"
        )
    if tensor.type != "tensor(float)":
        raise ModelError(f"{where}: input is {tensor.type}, expected tensor(float)")
    shape = list(tensor.shape)
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != manifest.width):
        raise ModelError(
            f"{where}: input shape {shape} does not match the manifest's {manifest.width} "
            "input columns"
        )
    outputs = {o.name for o in session.get_outputs()}
    missing = {manifest.tensors.label, manifest.tensors.probabilities} - outputs
    if missing:
        raise ModelError(f"{where}: outputs {sorted(missing)} missing (has {sorted(outputs)})")
    meta: dict[str, str] = session.get_modelmeta().custom_metadata_map
    for key, expected in (
        ("tandem.features", [f.name for f in manifest.ordered_features]),
        ("tandem.labels", manifest.labels),
    ):
        if key in meta and json.loads(meta[key]) != expected:
            raise ModelError(f"{where}: the model's {key} do not match the manifest")
    _probe(manifest, session, where)


def _probe(manifest: ModelManifest, session: Any, where: str) -> None:
    """Score the impute, minimum and maximum rows: the width and label order must hold."""
    score_rows(manifest, session, edge_rows(manifest), where)


def edge_rows(manifest: ModelManifest) -> NDArray[np.float32]:
    """The impute row, then every feature at its lowest, then at its highest value."""
    rows: list[list[float]] = [[], [], []]
    for f in manifest.ordered_features:
        if isinstance(f, NumericFeature):
            values: tuple[list[float], ...] = ([f.impute], [f.min], [f.max])
        elif isinstance(f, BooleanFeature):
            values = (f.encode(f.impute), f.encode(False), f.encode(True))
        else:
            values = (f.encode(f.impute), f.encode(f.categories[0]), f.encode(f.categories[-1]))
        for row, value in zip(rows, values, strict=True):
            row.extend(value)
    return np.array(rows, dtype=np.float32)


def reference_rows(manifest: ModelManifest) -> NDArray[np.float32]:
    """Row k puts every feature in its k-th reference bin (its last when it has fewer): a
    numeric one at the bin's middle (bounded by min and max), a boolean or category at the
    value the bin counts."""
    specs = manifest.ordered_features
    depth = max(len(f.reference.bin_fractions) if f.reference else 1 for f in specs)
    rows: list[list[float]] = [[] for _ in range(depth)]
    for f in specs:
        for k, row in enumerate(rows):
            row.extend(_bin_value(f, k))
    return np.array(rows, dtype=np.float32)


def _bin_value(f: NumericFeature | BooleanFeature | CategoricalFeature, k: int) -> list[float]:
    if f.reference is None:
        return f.encode(f.impute)  # type: ignore[arg-type]  # impute has the spec's own type
    k = min(k, len(f.reference.bin_fractions) - 1)
    if isinstance(f, BooleanFeature):
        return f.encode(k == 1)
    if isinstance(f, CategoricalFeature):
        return f.encode(f.categories[k])
    bounds = [f.min, *f.reference.bin_edges, f.max]
    low, high = max(bounds[k], f.min), min(bounds[k + 1], f.max)
    return [(low + high) / 2 if low <= high else f.impute]


def score_rows(
    manifest: ModelManifest, session: Any, rows: NDArray[np.float32], where: str
) -> NDArray[np.float64]:
    """Run the model on ``rows``; refuse answers of the wrong shape, probabilities that are not
    a distribution, or labels that disagree with the manifest's label order."""
    try:
        labels, raw = session.run(
            [manifest.tensors.label, manifest.tensors.probabilities],
            {manifest.tensors.input: rows},
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(
            f"{where}: does not accept {manifest.width} float32 input columns: {exc}"
        ) from exc
    probabilities: NDArray[np.float64] = np.asarray(raw, dtype=np.float64)
    if probabilities.shape != (len(rows), len(manifest.labels)):
        raise ModelError(
            f"{where}: answers probabilities of shape {list(probabilities.shape)}, but the "
            f"manifest lists {len(manifest.labels)} labels {manifest.labels}"
        )
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < -PROBABILITY_TOLERANCE):
        raise ModelError(f"{where}: answers probabilities that are negative or not finite")
    sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROBABILITY_TOLERANCE:
        raise ModelError(
            f"{where}: probabilities do not sum to 1 (row {worst} sums to {sums[worst]:.6g})"
        )
    for label, row in zip(labels, probabilities, strict=True):
        if str(label) != manifest.labels[int(np.argmax(row))]:
            raise ModelError(
                f"{where}: predicted {label!r} where the manifest's label order "
                f"{manifest.labels} says {manifest.labels[int(np.argmax(row))]!r}"
            )
    return probabilities


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


class ModelRegistry:
    """Which loaded model serves which task type."""

    def __init__(self, by_task_type: Mapping[str, LoadedModel]) -> None:
        self._by_task_type = dict(by_task_type)

    def get(self, task_type: str) -> LoadedModel | None:
        return self._by_task_type.get(task_type)

    @property
    def task_types(self) -> dict[str, LoadedModel]:
        return dict(self._by_task_type)

    @property
    def models(self) -> list[LoadedModel]:
        unique = {m.key: m for m in self._by_task_type.values()}
        return [unique[k] for k in sorted(unique)]

    @classmethod
    def load(
        cls, models_dir: Path, serve: Mapping[str, str] | None = None, threads: int = 1
    ) -> ModelRegistry:
        """Load the models that serve something. ``serve`` maps a task type to ``NAME`` (its
        newest version) or ``NAME/VERSION``; without it, the newest version of each model serves
        the task types its manifest lists."""
        if not models_dir.is_dir():
            raise ModelError(f"models folder {models_dir} does not exist")
        versions: dict[str, list[Path]] = {}
        for manifest in sorted(models_dir.glob(f"*/*/{MANIFEST}")):
            versions.setdefault(manifest.parent.parent.name, []).append(manifest.parent)
        for dirs in versions.values():
            dirs.sort(key=lambda d: _version_key(d.name))
        chosen = dict(serve) if serve else _defaults(versions)
        if not chosen:
            raise ModelError(f"no models in {models_dir} (expected NAME/VERSION/{MANIFEST})")
        loaded: dict[Path, LoadedModel] = {}
        by_task_type: dict[str, LoadedModel] = {}
        for task_type, wanted in sorted(chosen.items()):
            directory = _resolve(models_dir, versions, wanted)
            if directory not in loaded:
                loaded[directory] = load_model(directory, threads)
            by_task_type[task_type] = loaded[directory]
        return cls(by_task_type)


def _defaults(versions: Mapping[str, list[Path]]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name, dirs in sorted(versions.items()):
        newest = dirs[-1]
        for task_type in read_manifest(newest).task_types:
            if task_type in chosen:
                raise ModelError(
                    f"task type {task_type!r} is claimed by {chosen[task_type]} and "
                    f"{name}/{newest.name}: choose one with TANDEM_SCORING_SERVE"
                )
            chosen[task_type] = f"{name}/{newest.name}"
    return chosen


def _resolve(models_dir: Path, versions: Mapping[str, list[Path]], wanted: str) -> Path:
    name, _, version = wanted.partition("/")
    dirs = versions.get(name)
    if not dirs:
        raise ModelError(f"no model named {name!r} in {models_dir}")
    if not version:
        return dirs[-1]
    for directory in dirs:
        if directory.name == version:
            return directory
    raise ModelError(
        f"model {name!r} has no version {version!r} in {models_dir} (has {[d.name for d in dirs]})"
    )
