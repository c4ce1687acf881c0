"""Fixtures of the scoring tests: the committed reference model and copies of it to break."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import LoadedModel, ModelRegistry, load_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
REFERENCE = MODELS / "tumor_screening" / "1"


@pytest.fixture(scope="session")
def reference_model() -> LoadedModel:
    return load_model(REFERENCE)


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.load(MODELS)


@pytest.fixture(scope="session")
def training() -> ModuleType:
    """The training script, imported from its file so the tests refit the same pipeline."""
    spec = importlib.util.spec_from_file_location(
        "train_tumor_screening", MODELS / "train_tumor_screening.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ManifestEdit = Callable[[dict[str, Any]], None]


@pytest.fixture
def model_copy(tmp_path: Path) -> Callable[..., Path]:
    """Copy the reference model to ``tmp/models/NAME/VERSION``, editing its manifest JSON."""

    def _copy(
        edit: ManifestEdit | None = None, name: str = "tumor_screening", version: str = "1"
    ) -> Path:
        target = tmp_path / "models" / name / version
        shutil.copytree(REFERENCE, target)
        manifest = ModelManifest.model_validate_json((target / "manifest.json").read_bytes())
        data = manifest.model_dump(mode="json")
        data["name"], data["version"] = name, version
        if edit is not None:
            edit(data)
        (target / "manifest.json").write_text(json.dumps(data, indent=2))
        return target

    return _copy
