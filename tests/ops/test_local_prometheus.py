"""The local stack's Prometheus (`make up`): Debian's binary on 127.0.0.1, scraping the services
as job "tandem" with the alert rules loaded, and stopped by its pid."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, start_http_server
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_cli.stack.local import stack_prometheus
from tandem_cli.stack.process import free_port, pid_alive, wait_until
from tandem_cli.stack.prometheus import PrometheusServer
from tandem_cli.stack.services import SERVICES

from tests.ops.files import ROOT, RULE_FILES, load, promtool


def test_the_stack_scrapes_every_service_as_compose_does_and_loads_the_rules(
    tmp_path: Path,
) -> None:
    server = stack_prometheus(tmp_path)
    [job] = [j for j in server.config()["scrape_configs"] if j["job_name"] == "tandem"]
    assert {t for group in job["static_configs"] for t in group["targets"]} == {
        f"127.0.0.1:{spec.default_port}" for spec in SERVICES
    }
    compose = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert job["job_name"] in {j["job_name"] for j in compose["scrape_configs"]}
    result = promtool("check", "config", str(server.write_config()))
    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:
        assert str(path) in result.stdout  # checked along with the config


def test_prometheus_scrapes_a_service_evaluates_the_rules_and_stops_by_its_pid(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    AuditMetrics(registry).tree_size.set(42)
    port = free_port()
    http, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    server = PrometheusServer(tmp_path, [f"127.0.0.1:{port}"], port=free_port(), interval="1s")
    try:
        server.start(timeout=30)
        assert server.process is not None
        pid = server.process.pid

        def scraped() -> bool:
            found = _api(server.url, "query", query='tandem_audit_tree_size{job="tandem"}')
            return [row["value"][1] for row in found["result"]] == ["42"]

        wait_until(scraped, 30, "the first scrape")
        groups = {group["name"] for group in _api(server.url, "rules")["groups"]}
        assert groups == {g["name"] for path in RULE_FILES for g in load(path)["groups"]}
    finally:
        server.stop()
        http.shutdown()
    assert not pid_alive(pid)


def _api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=5) as response:
        return json.load(response)["data"]
