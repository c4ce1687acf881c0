"""docker-compose.yml without Docker: valid against the Compose Specification's JSON Schema (the
copy check-jsonschema vendors), then checked for what a schema cannot see: dependencies,
health checks, images, ports, and the Prometheus and OpenTelemetry files it mounts."""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator
from tandem_audit_sink.migrate import MigrationSettings
from tandem_audit_sink.roles import LOGIN_NAME

from tests.deploy.images import stages
from tests.deploy.services import SETTINGS
from tests.deploy.tools import ROOT, compose

Compose = dict[str, Any]
ONE_SHOT = "service_completed_successfully"


@cache
def _validator() -> Draft202012Validator:
    vendored = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    return Draft202012Validator(json.loads((vendored / "compose-spec.json").read_text()))


def schema_errors(doc: Compose) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _validator().iter_errors(doc)
    ]


def _image_has_healthcheck(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    final = stages((ROOT / build["context"] / build["dockerfile"]).read_text())[-1]
    return bool(final.all("HEALTHCHECK"))


def problems(doc: Compose) -> list[str]:
    """What the schema lets through but `docker compose up` would trip on, or we do not want."""
    found: list[str] = []
    services: dict[str, Any] = doc["services"]
    for name, service in services.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            condition = dependency.get("condition")
            if target not in services:
                found.append(f"{name} depends on {target}, which is not a service")
            elif condition == "service_healthy" and not (
                "healthcheck" in services[target] or _image_has_healthcheck(services[target])
            ):
                found.append(f"{name} waits for {target} to be healthy; it has no health check")
            elif condition == ONE_SHOT and services[target].get("restart", "no") != "no":
                found.append(f"{name} waits for {target} to finish; it restarts instead")
        build = service.get("build")
        if build is not None:
            dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                found.append(f"{name} builds from {dockerfile}, which does not exist")
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                found.append(f"{name} publishes {port} beyond the loopback interface")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/") or ".." in source:
                found.append(f"{name} mounts {source}, outside the repository")
    for name, settings in SETTINGS.items():
        service = services.get(name, {})
        if service.get("build", {}).get("dockerfile") != f"services/{name}/Dockerfile":
            found.append(f"{name} is not built from services/{name}/Dockerfile")
        port = settings.model_fields["port"].default
        if service.get("ports") != [f"127.0.0.1:{port}:{port}"]:
            found.append(f"{name} does not publish its port {port}")
        prefix = settings.model_config["env_prefix"]
        for variable in service.get("environment", {}):
            field = variable.removeprefix(prefix).lower()
            if variable.startswith(prefix) and field not in settings.model_fields:
                found.append(f"{name}: {variable} is not a setting of the service")
    return found


def test_compose_file_follows_the_specification() -> None:
    assert schema_errors(compose()) == []


def test_compose_file_holds_together() -> None:
    assert problems(compose()) == []


def _edit(path: str, value: Any) -> Compose:
    doc = compose()
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


SCHEMA_BREAKS = {
    "unknown condition": ("services/scoring/depends_on/topics/condition", "service_ready"),
    "unknown key": ("services/router/restart_policy", "always"),
    "ports as a mapping": ("services/review-api/ports", {"8000": 8000}),
    "health check test as a number": ("services/kafka/healthcheck/test", 1),
}
SEMANTIC_BREAKS = {
    "unknown dependency": ("services/scoring/depends_on/broker", {"condition": "service_started"}),
    "waits on no health check": (
        "services/scoring/depends_on/otel-collector/condition",
        "service_healthy",
    ),
    "one-shot that restarts": ("services/topics/restart", "unless-stopped"),
    "public port": ("services/router/ports", ["8002:8002"]),
    "missing Dockerfile": ("services/scoring/build/dockerfile", "services/scoring/Containerfile"),
    "unknown setting": ("services/audit-sink/environment/TANDEM_AUDIT_NOPE", "1"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_BREAKS))
def test_the_schema_refuses_a_broken_compose_file(case: str) -> None:
    assert schema_errors(_edit(*SCHEMA_BREAKS[case])) != []


@pytest.mark.parametrize("case", sorted(SEMANTIC_BREAKS))
def test_a_compose_file_that_would_not_hold_together_is_refused(case: str) -> None:
    doc = _edit(*SEMANTIC_BREAKS[case])
    assert schema_errors(doc) == []
    assert problems(doc) != []


def test_every_service_waits_for_topics_and_its_migrations() -> None:
    services = compose()["services"]
    for name in SETTINGS:
        depends_on = services[name]["depends_on"]
        assert depends_on["topics"]["condition"] == ONE_SHOT, name
    for name in ("review-api", "audit-sink"):
        assert services[name]["depends_on"][f"{name}-migrations"]["condition"] == ONE_SHOT
    # The one-shot jobs wait for what they work on.
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("review-api-migrations", "audit-sink-migrations"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def _user(url: str) -> str:
    """The user of a database URL whose password is still a ${VARIABLE:?message}."""
    found = re.match(r"[\w+]+://([^:@/]+)[:@]", url)
    assert found, url
    return found[1]


def test_the_audit_sink_logs_in_as_its_writer_and_only_its_migrations_as_the_owner() -> None:
    """The migrations run as the owner and make the sink's own user a login that may only read
    and append; the sink never gets the owner's URL."""
    services = compose()["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    migrations = services["audit-sink-migrations"]
    sink = services["audit-sink"]["environment"]
    assert migrations["command"] == ["python", "-m", "tandem_audit_sink.migrate"]
    assert importlib.util.find_spec("tandem_audit_sink.migrate") is not None
    for variable in migrations["environment"]:
        assert variable.removeprefix("TANDEM_AUDIT_").lower() in MigrationSettings.model_fields
    assert _user(migrations["environment"]["TANDEM_AUDIT_OWNER_DATABASE_URL"]) == owner
    url = sink["TANDEM_AUDIT_DATABASE_URL"]
    assert migrations["environment"]["TANDEM_AUDIT_DATABASE_URL"] == url
    login = _user(url)
    assert login != owner and LOGIN_NAME.fullmatch(login), login
    assert "${AUDIT_DB_PASSWORD:?" in url
    assert "TANDEM_AUDIT_OWNER_DATABASE_URL" not in sink
    assert sink["TANDEM_AUDIT_MIGRATE_ON_START"] == "false"


def test_prometheus_scrapes_every_service_and_loads_the_rules() -> None:
    prometheus = compose()["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name, settings in SETTINGS.items():
        assert f"{name}:{settings.model_fields['port'].default}" in targets
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_traces_go_from_the_services_through_the_collector_to_jaeger() -> None:
    doc = compose()
    services = doc["services"]
    collector = services["otel-collector"]
    [mount] = collector["volumes"]
    source, target, _ = mount.split(":")
    assert collector["command"] == [f"--config={target}"]
    config = yaml.safe_load((ROOT / source).read_text())
    for name in SETTINGS:
        endpoint = urlsplit(services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == "otel-collector"
        # The services export OTLP over HTTP.
        http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert http.rsplit(":", 1)[1] == str(endpoint.port)
    [pipeline] = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    [exporter] = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"].split(":")[0] == "jaeger"
    assert "jaeger" in services


def test_compose_has_no_default_secret_and_runs_as_production() -> None:
    """A secret with a default in the file is a secret everyone knows: each one must come from
    the environment or .env (`make secrets`), and Compose refuses to start without it."""
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = re.findall(r"\$\{(\w*(?:SECRET|PASSWORD|KEY)\w*)(:?[-?])?", text)
    assert secrets, "the file names its secrets"
    assert {name: form for name, form in secrets if form != ":?"} == {}
    doc = compose()
    for name in SETTINGS:
        assert doc["services"][name]["environment"]["TANDEM_ENV"] == "production", name
