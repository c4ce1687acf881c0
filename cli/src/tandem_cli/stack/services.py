"""The four services as separate processes: started with their settings, checked by /readyz."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tandem_cli.stack.process import Process, wait_until


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str
    default_port: int


SERVICES = (
    ServiceSpec("scoring", "tandem_scoring", "TANDEM_SCORING_", 8001),
    ServiceSpec("router", "tandem_router", "TANDEM_ROUTER_", 8002),
    ServiceSpec("audit-sink", "tandem_audit_sink", "TANDEM_AUDIT_", 8003),
    ServiceSpec("review-api", "tandem_review_api", "TANDEM_REVIEW_API_", 8000),
)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class RunningService:
    spec: ServiceSpec
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ServiceSet:
    """Starts every service against one broker and one topic prefix, logs under ``home``."""

    home: Path
    bootstrap_servers: str
    topic_prefix: str = "tandem."
    ports: Mapping[str, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    # Settings of one service only, by its name (its own Kafka credentials, say).
    env_of: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    running: list[RunningService] = field(default_factory=list)

    def service_env(self, spec: ServiceSpec, port: int) -> dict[str, str]:
        return {
            "TANDEM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "TANDEM_KAFKA_TOPIC_PREFIX": self.topic_prefix,
            f"{spec.env_prefix}HOST": "127.0.0.1",
            f"{spec.env_prefix}PORT": str(port),
            f"{spec.env_prefix}DATABASE_URL": f"sqlite+aiosqlite:///{self.home / spec.name}.db",
            "OTEL_SERVICE_NAME": spec.name,
            # One name per replica, the same at each restart: a restart takes its
            # transactional ids back, and two replicas never take each other's.
            "TANDEM_INSTANCE_ID": f"{spec.name}-{port}",
            **self._peers(spec),
            **self.env,
            **self.env_of.get(spec.name, {}),
        }

    def _peers(self, spec: ServiceSpec) -> dict[str, str]:
        """Where a service finds the others it calls: the review API, the audit API."""
        if spec.name != "review-api":
            return {}
        audit = next(s for s in SERVICES if s.name == "audit-sink")
        port = self.ports.get(audit.name, audit.default_port)
        return {"TANDEM_REVIEW_API_AUDIT_URL": f"http://127.0.0.1:{port}"}

    def start(self, only: tuple[str, ...] = ()) -> list[RunningService]:
        started = []
        for spec in SERVICES:
            if only and spec.name not in only:
                continue
            port = self.ports.get(spec.name, spec.default_port)
            process = Process.start(
                spec.name,
                [sys.executable, "-m", spec.module],
                log=self.home / "logs" / f"{spec.name}.log",
                env=self.service_env(spec, port),
            )
            service = RunningService(spec, port, process)
            self.running.append(service)
            started.append(service)
        return started

    def wait_ready(self, timeout: float = 120.0) -> None:
        for service in self.running:

            def check(s: RunningService = service) -> bool:
                if not s.process.alive():
                    raise RuntimeError(f"{s.spec.name} exited; see {s.process.log}")
                return ready(s.url)

            wait_until(check, timeout, f"{service.spec.name} on {service.url}")

    def get(self, name: str) -> RunningService:
        return next(s for s in self.running if s.spec.name == name)

    def stop(self, only: tuple[str, ...] = ()) -> None:
        for service in reversed(self.running):
            if not only or service.spec.name in only:
                service.process.stop()
        self.running = [s for s in self.running if only and s.spec.name not in only]
