"""Prometheus from Debian's package: scrapes the local services as job "tandem" and evaluates the
alert rules of deploy/prometheus/rules, with its data and log under the stack's folder."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tandem_cli.stack.process import Process, project_root, wait_until

PROMETHEUS_PORT = 9090


def rules_glob() -> Path:
    return project_root() / "deploy" / "prometheus" / "rules" / "*.yml"


def prometheus_bin() -> Path:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("Prometheus is not installed (make setup installs Debian's package)")
    return Path(found)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def ui_page(url: str, page: str) -> str:
    """The address of a page of the web UI: Debian's build serves only the classic UI, under
    /classic/, where upstream's serves /alerts and /targets."""
    for candidate in (f"{url}/{page}", f"{url}/classic/{page}"):
        if answers(candidate):
            return candidate
    return f"{url}/{page}"


@dataclass
class PrometheusServer:
    """One Prometheus on 127.0.0.1 scraping ``targets`` (host:port of each service)."""

    home: Path
    targets: Sequence[str]
    port: int = PROMETHEUS_PORT
    interval: str = "15s"
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        # The same job name as docker-compose.yml's Prometheus and the PodMonitor: one rule set.
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(rules_glob())],
            "scrape_configs": [
                {
                    "job_name": "tandem",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": list(self.targets)}],
                },
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}],
                },
            ],
        }

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "prometheus.yml"
        path.write_text(
            "# Written by `tandem stack up` on every start; edit tandem_cli/stack/prometheus.py.\n"
            + yaml.safe_dump(self.config(), sort_keys=False)
        )
        return path

    def start(self, timeout: float = 60.0) -> None:
        binary = prometheus_bin()
        config = self.write_config()
        self.process = Process.start(
            "prometheus",
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.home / 'data'}",
                "--storage.tsdb.retention.time=3d",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=self.home / "prometheus.log",
        )
        try:
            wait_until(self._ready, timeout, f"Prometheus on {self.url}")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise RuntimeError(f"Prometheus exited; see {self.process.log}")
        return answers(f"{self.url}/-/ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
