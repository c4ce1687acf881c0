"""What the deployment checks run: the tools tests/deploy/install-tools.sh puts in .tandem/tools
(`make setup` runs it), found here or reported missing with the command that installs them."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

Doc = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tandem" / "tools"
CRDS = TOOLS / "crds"
OVERLAYS = ("dev", "production")


def tool(name: str) -> Path:
    path = TOOLS / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (tests/deploy/install-tools.sh)")
    return path


def crd_file(name: str) -> Path:
    path = CRDS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (tests/deploy/install-tools.sh)")
    return path


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(tool("kustomize")), "build", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects an overlay renders to (callers must not change them)."""
    return kustomize_build(ROOT / "deploy" / "k8s" / "overlays" / overlay)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def compose() -> dict[str, Any]:
    """docker-compose.yml, loaded afresh (callers may change it)."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def template_of(doc: Doc) -> Doc:
    """The pod template of a Deployment, a Job or a CronJob (its Jobs' template)."""
    spec: Doc = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    template: Doc = spec["template"]
    return template


def pod_of(doc: Doc) -> Doc:
    spec: Doc = template_of(doc)["spec"]
    return spec


def container_of(doc: Doc) -> Doc:
    [container] = pod_of(doc)["containers"]
    return container


def every_container(doc: Doc) -> list[Doc]:
    pod = pod_of(doc)
    return [*pod.get("initContainers", []), *pod["containers"]]


def workloads(docs: list[Doc]) -> list[Doc]:
    """Everything that runs pods."""
    return [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]


@cache
def keda_kafka_keys(source: str) -> frozenset[str]:
    """What the KEDA Kafka scaler reads from ``source`` (triggerMetadata, resolvedEnv or
    authParams, a TriggerAuthentication's), from its struct tags."""
    text = crd_file("keda_kafka_scaler.go").read_text()
    keys: set[str] = set()
    for names, order in re.findall(r'keda:"name=([\w;]+),order=([\w;]+)', text):
        if source in order.split(";"):
            keys.update(names.split(";"))
    return frozenset(keys)
