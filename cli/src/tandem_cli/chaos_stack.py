"""The chaos harness's own stack, and the faults it injects.

A Kafka broker, a PostgreSQL server (the review API's database and the audit ledger) and the
four services as processes, in a folder of their own on free ports of 127.0.0.1. Faults: a
service killed with SIGKILL and started again; the broker killed with SIGKILL and started again
on the same port and data; PostgreSQL stopped at once (every session cut, no checkpoint) and
started again. Everything is started, killed and stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

import httpx
import yaml
from sqlalchemy.engine import make_url
from tandem_audit_sink.migrate import migrate_as_owner
from tandem_shared.topics import Topics, ensure_topics

from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.local import audit_signing_key, seed_models
from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import free_port, pid_alive, project_root
from tandem_cli.stack.services import SERVICES, RunningService, ServiceSet

SERVICE_NAMES = tuple(spec.name for spec in SERVICES)
PARTITIONS = 3


@dataclass(frozen=True)
class StackSettings:
    """How the stack runs for a chaos run: short leases and due times, so that a claim lost with
    a killed process, or a review nobody finishes, comes back within the run."""

    lease_seconds: int = 15
    overdue_check_seconds: float = 2.0
    # Reviews still open this long after routing are decided by the policy's fallback outcome
    # (the cautious one), a second path to a decision that races the reviewers'.
    review_due_seconds: int = 120
    fallback_outcome: str = "malignant"


class ChaosStack:
    def __init__(self, home: Path, settings: StackSettings | None = None) -> None:
        self.home = home
        self.settings = settings or StackSettings()
        self.broker = KafkaBroker(home / "kafka", port=free_port(), controller_port=free_port())
        self.postgres = PostgresServer(home / "postgres", port=free_port())
        self.topics = Topics()
        self.services = ServiceSet(
            home,
            self.broker.bootstrap_servers,
            self.topics.prefix,
            ports={name: free_port() for name in SERVICE_NAMES},
        )

    # --- start and stop (blocking: run them on a thread from async code) -------------------

    def start(self, say: Callable[[str], None]) -> None:
        say(f"starting Kafka on {self.broker.bootstrap_servers}…")
        self.broker.start()
        say(f"starting PostgreSQL on port {self.postgres.port}…")
        self.postgres.start()
        review_db = self.postgres.create_database("review")
        ledger_db = self.postgres.create_database("ledger")
        # As in production: the ledger migrated by its owner, the sink logged in as the writer,
        # which may only read and append.
        sink_db = make_url(ledger_db).set(username="tandem_audit_sink", password=token_hex(16))
        sink_url = sink_db.render_as_string(hide_password=False)
        asyncio.run(migrate_as_owner(ledger_db, sink_url))
        asyncio.run(ensure_topics(self.broker.bootstrap_servers, self.topics, PARTITIONS))
        self.services.env = {
            "TANDEM_ROUTER_POLICY_FILE": str(self._policy()),
            "TANDEM_AUDIT_SIGNING_KEY": audit_signing_key(self.home),
            "TANDEM_SCORING_MODELS_DIR": str(seed_models(self.home)),
            "TANDEM_REVIEW_API_DATABASE_URL": review_db,
            "TANDEM_AUDIT_DATABASE_URL": sink_url,
            "TANDEM_AUDIT_MIGRATE_ON_START": "false",
            "TANDEM_REVIEW_API_LEASE_SECONDS": str(self.settings.lease_seconds),
            "TANDEM_REVIEW_API_OVERDUE_CHECK_SECONDS": str(self.settings.overdue_check_seconds),
            "TANDEM_SCORING_BATCH_TIMEOUT_MS": "50",
            "TANDEM_ROUTER_BATCH_TIMEOUT_MS": "50",
        }
        say(f"starting {', '.join(SERVICE_NAMES)}…")
        self.services.start()
        self.services.wait_ready()

    def stop(self) -> None:
        """Services first (they leave their groups while the broker is there), then the rest.
        Each by its own pid; whatever fails to stop does not keep the others running."""
        steps: list[Callable[[], None]] = [s.process.stop for s in self.services.running]
        steps += [self.broker.stop, self.postgres.stop]
        for step in steps:
            try:
                step()
            except (OSError, TimeoutError):
                continue  # gone already, or not stopping: the next one all the same
        self.services.running = []

    def _policy(self) -> Path:
        """The local stack's policy with the run's due time and overdue fallback."""
        policy = yaml.safe_load((project_root() / "deploy" / "local" / "policy.yaml").read_text())
        for rules in policy["task_types"].values():
            rules["review_due"] = self.settings.review_due_seconds
            rules["overdue"] = {"action": "fallback", "outcome": self.settings.fallback_outcome}
        path = self.home / "policy.yaml"
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
        return path

    # --- faults (blocking) -------------------------------------------------------------------

    def kill_service(self, name: str) -> None:
        _kill(self.services.get(name).process.pid, signal.SIGKILL)

    def start_service(self, name: str) -> RunningService:
        self.services.stop(only=(name,))  # forgets the dead process
        (started,) = self.services.start(only=(name,))
        return started

    def kill_broker(self) -> None:
        if self.broker.process is not None:
            _kill(self.broker.process.pid, signal.SIGKILL)
        self.broker.process = None

    def start_broker(self) -> None:
        self.broker.start()  # the same port, configuration and data

    def crash_postgres(self) -> None:
        """Immediate shutdown: every session cut, no checkpoint; crash recovery on start."""
        if self.postgres.process is not None:
            _kill(self.postgres.process.pid, signal.SIGQUIT)
        self.postgres.process = None

    def start_postgres(self) -> None:
        self.postgres.start()

    # --- looking at it ----------------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.services.get(name).url

    def alive(self, name: str) -> bool:
        return self.services.get(name).process.alive()

    def logs(self) -> Path:
        return self.home

    async def ready(self, names: tuple[str, ...] = SERVICE_NAMES, within: float = 120.0) -> bool:
        """Whether every named service answers /readyz within ``within`` seconds."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            for name in names:
                while not await _answers(client, f"{self.url(name)}/readyz"):
                    if time.monotonic() > deadline:
                        return False
                    await asyncio.sleep(0.25)
        return True

    async def health(self, name: str) -> int | None:
        """What /healthz answers (503 once a consumer loop ended), None without an answer."""
        async with httpx.AsyncClient(timeout=5) as client:
            try:
                return (await client.get(f"{self.url(name)}/healthz")).status_code
            except httpx.TransportError:
                return None


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.TransportError:
        return False


def _kill(pid: int, sig: signal.Signals, timeout: float = 30.0) -> None:
    """Send ``sig`` to this pid, and wait until it is gone."""
    if not pid_alive(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still runs {timeout:.0f}s after {sig.name}")
        time.sleep(0.05)
