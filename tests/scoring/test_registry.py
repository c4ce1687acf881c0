"""The registry loads models checked against their manifests and refuses the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import (
    LoadedModel,
    ModelError,
    ModelRegistry,
    check_session,
    load_model,
)

from tests.scoring.conftest import MODELS

Copy = Callable[..., Path]


def test_default_registry_serves_the_reference_model(registry: ModelRegistry) -> None:
    model = registry.get("tumor_screening")
    assert model is not None and model.key == "tumor_screening/1"
    assert registry.get("loan_application") is None
    assert [m.key for m in registry.models] == ["tumor_screening/1", "wine_cultivar/1"]
    wine = registry.get("wine_cultivar")
    assert wine is not None and wine.manifest.labels[0] == "cultivar_a"


def test_newest_version_serves_by_default_and_serve_pins_one(model_copy: Copy) -> None:
    model_copy(version="1")
    newest = model_copy(version="10")
    model_copy(version="9")
    models_dir = newest.parent.parent
    assert ModelRegistry.load(models_dir).task_types["tumor_screening"].key == (
        "tumor_screening/10"
    )
    pinned = ModelRegistry.load(models_dir, {"tumor_screening": "tumor_screening/9"})
    assert pinned.task_types["tumor_screening"].key == "tumor_screening/9"
    by_name = ModelRegistry.load(models_dir, {"other_type": "tumor_screening"})
    assert set(by_name.task_types) == {"other_type"}
    assert by_name.task_types["other_type"].key == "tumor_screening/10"


def test_serve_naming_what_is_not_there(model_copy: Copy) -> None:
    models_dir = model_copy().parent.parent
    with pytest.raises(ModelError, match="no version '2'"):
        ModelRegistry.load(models_dir, {"tumor_screening": "tumor_screening/2"})
    with pytest.raises(ModelError, match="no model named 'nope'"):
        ModelRegistry.load(models_dir, {"tumor_screening": "nope"})


def test_two_models_claiming_one_task_type_must_be_resolved(model_copy: Copy) -> None:
    model_copy(name="tumor_screening")
    other = model_copy(name="tumor_screening_b")
    with pytest.raises(ModelError, match="claimed by tumor_screening/1 and tumor_screening_b/1"):
        ModelRegistry.load(other.parent.parent)


def test_an_empty_or_absent_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        ModelRegistry.load(tmp_path / "absent")
    with pytest.raises(ModelError, match="no models"):
        ModelRegistry.load(tmp_path)


def drop_last_feature(data: dict[str, Any]) -> None:
    dropped = data["features"].pop()
    del data["explanation"]["coefficients"][dropped["name"]]


def swap_labels(data: dict[str, Any]) -> None:
    data["labels"] = list(reversed(data["labels"]))


def drop_tensors(data: dict[str, Any]) -> None:
    del data["tensors"]


def range_inverted(data: dict[str, Any]) -> None:
    feature = data["features"][0]
    feature["min"], feature["max"] = feature["max"], feature["min"]


def rename_output(data: dict[str, Any]) -> None:
    data["tensors"]["probabilities"] = "probs"


def wrong_checksum(data: dict[str, Any]) -> None:
    data["model_sha256"] = "f" * 64


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop_last_feature, r"input shape \[None, 30\] does not match the manifest's 29 input"),
        (swap_labels, "tandem.labels do not match the manifest"),
        (drop_tensors, "not a valid manifest: tensors: Field required"),
        (range_inverted, "min is above max"),
        (rename_output, r"outputs \['probs'\] missing"),
        (wrong_checksum, "does not match the manifest's model_sha256"),
    ],
)
def test_a_broken_manifest_is_refused(
    model_copy: Copy, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    directory = model_copy(edit)
    with pytest.raises(ModelError, match=message):
        load_model(directory)
    with pytest.raises(ModelError, match=message):
        ModelRegistry.load(directory.parent.parent)


def test_unparseable_manifest_and_misplaced_model(model_copy: Copy) -> None:
    directory = model_copy()
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="is not a valid manifest"):
        load_model(directory)
    moved = model_copy(version="3")
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["version"] = "4"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="describes tumor_screening/4, but lives in"):
        load_model(moved)


def test_a_corrupt_model_file_is_refused(model_copy: Copy) -> None:
    import hashlib

    junk = b"not an onnx model"

    def checksum(data: dict[str, Any]) -> None:
        data["model_sha256"] = hashlib.sha256(junk).hexdigest()

    directory = model_copy(checksum)
    (directory / "model.onnx").write_bytes(junk)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(directory)


class NoMetadata:
    """The real session without the label metadata: the probe must catch a wrong label order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_modelmeta(self) -> Any:
        class Meta:
            custom_metadata_map: dict[str, str] = {}  # noqa: RUF012

        return Meta()


def test_label_order_is_probed_without_metadata(reference_model: LoadedModel) -> None:
    session = NoMetadata(reference_model.session)
    check_session(reference_model.manifest, session)  # the true order passes
    data = reference_model.manifest.model_dump()
    data["labels"] = list(reversed(data["labels"]))
    with pytest.raises(ModelError, match="manifest's label order"):
        check_session(ModelManifest.model_validate(data), session)
    data["labels"] = [*reference_model.manifest.labels, "unsure"]
    data["explanation"] = {"method": "none"}  # a linear one needs two labels
    with pytest.raises(ModelError, match="lists 3 labels"):
        check_session(ModelManifest.model_validate(data), session)


def test_the_repository_models_folder_is_the_default() -> None:
    from tandem_scoring.settings import ScoringSettings

    assert ScoringSettings().models_dir == MODELS


def typed_manifest(**explanation: Any) -> ModelManifest:
    """A manifest with one feature of each type (a one-hot and an ordinal category)."""
    reference = {"bin_edges": [0.5], "bin_fractions": [0.25, 0.75]}
    return ModelManifest.model_validate(
        {
            "name": "typed",
            "version": "1",
            "task_types": ["typed"],
            "features": [
                {"name": "n", "order": 0, "type": "numeric", "min": 0, "max": 9, "impute": 1},
                {
                    "name": "b",
                    "order": 1,
                    "type": "boolean",
                    "impute": True,
                    "reference": reference,
                },
                {
                    "name": "c",
                    "order": 2,
                    "type": "categorical",
                    "categories": ["red", "green", "blue"],
                    "encoding": "one_hot",
                    "impute": "green",
                },
                {
                    "name": "o",
                    "order": 3,
                    "type": "categorical",
                    "categories": ["low", "high"],
                    "encoding": "ordinal",
                    "impute": "low",
                    "reference": reference,
                },
            ],
            "labels": ["no", "yes"],
            "tensors": {"input": "x", "label": "label", "probabilities": "probabilities"},
            "explanation": explanation or {"method": "none"},
            "metrics": {"holdout_accuracy": 1, "roc_auc": 1, "train_rows": 1, "holdout_rows": 0},
            "dataset": {"source": "test", "split": "none", "fingerprint": "0" * 64},
            "training": {"algorithm": "none"},
            "model_sha256": "0" * 64,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )


def test_feature_types_map_to_input_columns() -> None:
    from tandem_scoring.registry import edge_rows, reference_rows
    from tandem_scoring.scorer import prepare

    manifest = typed_manifest()
    assert manifest.width == 6
    assert manifest.missing_references == ["n", "c", "confidence"]
    row, flags = prepare(manifest, {"n": 3, "b": False, "c": "blue", "o": "high"})
    assert (row, flags) == ([3.0, 0.0, 0.0, 0.0, 1.0, 1.0], [])
    row, flags = prepare(manifest, {"n": 3, "b": 1, "c": "purple", "o": 2})
    assert row == [3.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert [(f.code, f.feature) for f in flags] == [("out_of_range", "c"), ("wrong_type", "o")]
    row, flags = prepare(manifest, {"n": 3, "b": "yes"})
    assert row == [3.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert [f.code for f in flags] == ["wrong_type", "missing", "missing"]
    assert edge_rows(manifest).tolist() == [
        [1, 1, 0, 1, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [9, 1, 0, 0, 1, 1],
    ]
    # Two bins deep: booleans and ordinal categories walk theirs, the rest hold their impute.
    assert reference_rows(manifest).tolist() == [[1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 1]]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"features": [{"impute": "black"}]}, "impute is not one of its categories"),
        ({"features": [{"categories": ["a", "a"], "impute": "a"}]}, "categories must be unique"),
        ({"features": [{"reference": {"bin_edges": [], "bin_fractions": [1]}}]}, "one bin per"),
        ({"explanation": {"method": "linear"}}, "positive"),
    ],
)
def test_typed_manifests_are_validated(edit: dict[str, Any], message: str) -> None:
    data = typed_manifest().model_dump(mode="json")
    if "features" in edit:
        data["features"][2].update(edit["features"][0])
    else:
        data.update(edit)
    with pytest.raises(ValueError, match=message):
        ModelManifest.model_validate(data)


def test_a_linear_explanation_needs_one_coefficient_per_numeric_feature() -> None:
    with pytest.raises(ValueError, match="numeric or boolean features"):
        typed_manifest(
            method="linear", positive="yes", intercept=0, coefficients=dict.fromkeys("nbco", 1.0)
        )
    with pytest.raises(ValueError, match="one coefficient per feature"):
        typed_manifest(method="linear", positive="yes", intercept=0, coefficients={"n": 1.0})
