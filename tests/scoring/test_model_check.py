"""`tandem model check`: both shipped models pass, each kind of broken one is refused."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tandem_cli.model import manifest_schema, model_app
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import (
    ModelError,
    edge_rows,
    load_model,
    reference_rows,
    score_rows,
)
from typer.testing import CliRunner

from tests.scoring.conftest import MODELS, ROOT

SHIPPED = [MODELS / "tumor_screening" / "1", MODELS / "wine_cultivar" / "1"]
Edit = Callable[[dict[str, Any]], None]


def run_check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(model_app, ["check", str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_models_pass(path: Path) -> None:
    code, output = run_check(path)
    assert code == 0, output
    [line] = output.splitlines()
    assert line.startswith(f"OK {path.parent.name}/1: ")
    assert "reference rows scored" in line


def broken_copy(tmp_path: Path, source: Path, edit: Edit) -> Path:
    target = tmp_path / source.parent.name / source.name
    shutil.copytree(source, target)
    data = json.loads((target / "manifest.json").read_text())
    edit(data)
    (target / "manifest.json").write_text(json.dumps(data, indent=2))
    return target


def no_confidence_reference(data: dict[str, Any]) -> None:
    del data["confidence_reference"]


def no_feature_reference(data: dict[str, Any]) -> None:
    data["features"][2]["reference"] = None


def one_feature_short(data: dict[str, Any]) -> None:
    data["features"] = data["features"][:-1]


def feature_as_category(data: dict[str, Any]) -> None:
    feature = data["features"][-1]
    for key in ("min", "max", "reference"):
        feature.pop(key)
    feature.update(type="categorical", categories=["low", "high"], encoding="one_hot")
    feature["impute"] = "low"


def labels_renamed(data: dict[str, Any]) -> None:
    data["labels"] = [f"{label}_x" for label in data["labels"]]


def extra_label(data: dict[str, Any]) -> None:
    data["labels"] = [*data["labels"], "unsure"]


def bad_bins(data: dict[str, Any]) -> None:
    data["confidence_reference"]["bin_fractions"][0] += 0.5


def linear_for_three_labels(data: dict[str, Any]) -> None:
    data["explanation"] = {
        "method": "linear",
        "positive": "cultivar_a",
        "coefficients": {},
        "intercept": 0,
    }


@pytest.mark.parametrize(
    ("source", "edit", "message"),
    [
        (0, no_confidence_reference, "missing reference distributions: confidence"),
        (1, no_feature_reference, "missing reference distributions: ash"),
        (1, one_feature_short, r"input shape \[None, 13\] does not match the manifest's 12"),
        (1, feature_as_category, r"input shape \[None, 13\] does not match the manifest's 14"),
        (1, labels_renamed, "tandem.labels do not match the manifest"),
        (1, extra_label, "tandem.labels do not match the manifest"),
        (0, bad_bins, "bin_fractions must sum to 1"),
        (1, linear_for_three_labels, "a linear explanation needs two labels"),
    ],
)
def test_broken_models_are_refused_with_the_reason(
    tmp_path: Path, source: int, edit: Edit, message: str
) -> None:
    code, output = run_check(broken_copy(tmp_path, SHIPPED[source], edit))
    assert code == 1
    assert output.startswith("refused: ")
    assert re.search(message, output.replace("\n", "")), output


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    code, output = run_check(tmp_path / "nope" / "1")
    assert code == 1 and "cannot read manifest.json" in output


class Rigged:
    """The real session with its probabilities rewritten, for answers no real model gives."""

    def __init__(self, inner: Any, rig: Callable[[np.ndarray[Any, Any]], Any]) -> None:
        self.inner, self.rig = inner, rig

    def run(self, names: Sequence[str] | None, feed: Mapping[str, Any]) -> list[Any]:
        labels, probabilities = self.inner.run(names, feed)
        return [labels, self.rig(np.asarray(probabilities))]


@pytest.mark.parametrize(
    ("rig", "message"),
    [
        (lambda p: p * 0.9, "probabilities do not sum to 1"),
        (lambda p: np.where(p > 0.5, np.nan, p), "negative or not finite"),
        (lambda p: p[:, :2], r"shape \[10, 2\], but the manifest lists 3 labels"),
        (lambda p: p[:, ::-1], "manifest's label order"),
    ],
)
def test_the_answers_on_reference_rows_are_checked(rig: Any, message: str) -> None:
    model = load_model(SHIPPED[1])
    rows = reference_rows(model.manifest)
    assert score_rows(model.manifest, model.session, rows, "wine").shape == (len(rows), 3)
    with pytest.raises(ModelError, match=message):
        score_rows(model.manifest, Rigged(model.session, rig), rows, "wine")


def test_reference_rows_walk_the_bins() -> None:
    manifest = load_model(SHIPPED[0]).manifest
    rows = reference_rows(manifest)
    lows = np.array([f.min for f in manifest.ordered_features])  # type: ignore[union-attr]
    highs = np.array([f.max for f in manifest.ordered_features])  # type: ignore[union-attr]
    assert rows.shape == (10, 30) and rows.dtype == np.float32
    assert np.all(rows >= lows.astype(np.float32)) and np.all(rows <= highs.astype(np.float32))
    assert np.all(np.diff(rows, axis=0) >= 0)  # bin k+1 lies above bin k for every feature
    assert edge_rows(manifest).shape == (3, 30)


def test_the_published_schema_is_current() -> None:
    published = json.loads((ROOT / "docs" / "schemas" / "model-manifest.json").read_text())
    assert published == manifest_schema(), "run `tandem model schema` to refresh it"
    for path in SHIPPED:
        ModelManifest.model_validate_json((path / "manifest.json").read_bytes())
