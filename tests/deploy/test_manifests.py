"""The deployment files agree with the code: modules, packages, env prefixes, ports, probes."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tandem_audit_sink.settings import AuditSettings
from tandem_review_api.settings import ReviewApiSettings
from tandem_router.settings import RouterSettings
from tandem_scoring.settings import ScoringSettings
from tandem_shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[ServiceSettings]] = {
    "scoring": ScoringSettings,
    "router": RouterSettings,
    "review-api": ReviewApiSettings,
    "audit-sink": AuditSettings,
}


def workspace_packages() -> set[str]:
    names = set()
    for path in [ROOT / "shared", ROOT / "cli", *(ROOT / "services").iterdir()]:
        names.add(tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"])
    return names


def test_compose_builds_real_packages_and_modules() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = compose["services"]
    built = {name: s["build"]["args"] for name, s in services.items() if "build" in s}
    assert set(SETTINGS) <= set(built)
    for name, args in built.items():
        assert args["SERVICE"] in workspace_packages(), name
        assert importlib.util.find_spec(args["MODULE"]) is not None, name
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for name, cls in SETTINGS.items():
        prefix = cls.model_config["env_prefix"]
        env = services[name]["environment"]
        assert f"{prefix}HOST" in env, name
        published = services[name]["ports"][0].split(":")
        assert int(published[-1]) == cls.model_fields["port"].default


def k8s_documents() -> list[dict[str, Any]]:
    base = ROOT / "deploy" / "k8s" / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((base / resource).read_text()) if d]
    return docs


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_k8s_deployment_matches_the_service(name: str) -> None:
    docs = k8s_documents()
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    settings = SETTINGS[name]
    prefix = settings.model_config["env_prefix"]
    port = settings.model_fields["port"].default
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[f"{prefix}PORT"] == str(port)
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"]
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_k8s_config_names_only_real_settings() -> None:
    [config] = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    known = {
        f"TANDEM_KAFKA_{f.upper()}"
        for f in ServiceSettings.model_fields["kafka"].annotation.model_fields
    }  # type: ignore[union-attr]
    known |= {
        f"TANDEM_{f.upper()}"
        for f in ServiceSettings.model_fields["runtime"].annotation.model_fields
    }  # type: ignore[union-attr]
    assert set(config["data"]) <= known
