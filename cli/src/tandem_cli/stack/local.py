"""`make up`, `make down`, `make status`: the local stack under .tandem/, tracked by pid files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem_audit_sink.checkpoint import Signer
from tandem_shared.topics import Topics, ensure_topics

from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.process import pid_alive, port_open, project_root, stop_pid
from tandem_cli.stack.prometheus import PROMETHEUS_PORT, PrometheusServer, answers
from tandem_cli.stack.services import SERVICES, ServiceSet, ready

KAFKA_PORT = 9092
CONTROLLER_PORT = 9093


def state_dir() -> Path:
    return Path(os.environ.get("TANDEM_STATE_DIR") or project_root() / ".tandem")


@dataclass(frozen=True)
class Entry:
    name: str
    pid: int
    url: str
    log: str


def _shown(path: Path) -> str:
    """Paths under the checkout are shown relative to it: shorter, and what a user types."""
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        return str(path)


def _state_file() -> Path:
    return state_dir() / "stack.json"


def _read_state() -> list[Entry]:
    try:
        return [Entry(**e) for e in json.loads(_state_file().read_text())]
    except FileNotFoundError:
        return []


def _write_state(entries: list[Entry]) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps([e.__dict__ for e in entries], indent=2))


def audit_signing_key(home: Path) -> str:
    """The local stack's ledger key, made once and kept, so checkpoints stay verifiable across
    restarts (a real deployment takes its key from a secret)."""
    path = home / "audit-signing.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(Signer.generate("tandem-audit").private_text())
    return path.read_text().strip()


def models_dir(home: Path | None = None) -> Path:
    """The local stack's model registry: the checkout's models, plus the versions retraining
    adds, which stay out of the checkout."""
    return (home or state_dir()) / "models"


def seed_models(home: Path) -> Path:
    """Copy the checkout's model versions into the local registry (new or changed ones)."""
    target = models_dir(home)
    source = project_root() / "models"
    for manifest in source.glob("*/*/manifest.json"):
        version = manifest.parent
        copy = target / version.relative_to(source)
        if not (copy / "manifest.json").exists() or (
            (copy / "manifest.json").read_bytes() != manifest.read_bytes()
        ):
            shutil.copytree(version, copy, dirs_exist_ok=True)
    for recipe in [*source.glob("train_*.py"), source / "modelkit.py"]:
        shutil.copy2(recipe, target / recipe.name)
    return target


def up(say: Callable[[str], None] = print) -> list[Entry]:
    """Start what is not running yet; return every component with its address."""
    home = state_dir()
    entries = [e for e in _read_state() if pid_alive(e.pid)]
    names = {e.name for e in entries}
    if "kafka" not in names:
        if port_open(KAFKA_PORT):
            raise RuntimeError(f"port {KAFKA_PORT} is taken by a process this stack did not start")
        say("starting Kafka (first start fetches the broker's jars with Maven)…")
        broker = KafkaBroker(home / "kafka", KAFKA_PORT, CONTROLLER_PORT)
        broker.start()
        assert broker.process is not None
        entries.append(
            Entry("kafka", broker.process.pid, broker.bootstrap_servers, _shown(broker.process.log))
        )
        _write_state(entries)
    created = asyncio.run(ensure_topics(f"127.0.0.1:{KAFKA_PORT}", Topics()))
    if created:
        say(f"created topics: {', '.join(created)}")
    missing = tuple(s.name for s in SERVICES if s.name not in names)
    if missing:
        services = ServiceSet(
            home,
            f"127.0.0.1:{KAFKA_PORT}",
            env={
                "TANDEM_ROUTER_POLICY_FILE": str(
                    project_root() / "deploy" / "local" / "policy.yaml"
                ),
                "TANDEM_AUDIT_SIGNING_KEY": audit_signing_key(home),
                "TANDEM_SCORING_MODELS_DIR": str(seed_models(home)),
            },
        )
        say(f"starting {', '.join(missing)}…")
        started = services.start(only=missing)
        entries += [
            Entry(s.spec.name, s.process.pid, s.url, _shown(s.process.log)) for s in started
        ]
        _write_state(entries)
        services.wait_ready()
    if "prometheus" not in names:
        entries += _start_prometheus(home, say)
        _write_state(entries)
    return entries


def stack_prometheus(home: Path) -> PrometheusServer:
    """The stack's Prometheus, scraping every service where the stack runs it."""
    targets = [f"127.0.0.1:{spec.default_port}" for spec in SERVICES]
    return PrometheusServer(home / "prometheus", targets)


def _start_prometheus(home: Path, say: Callable[[str], None]) -> list[Entry]:
    """Prometheus watches the stack and is no part of it: the stack runs on without it."""
    if port_open(PROMETHEUS_PORT):
        say(
            f"port {PROMETHEUS_PORT} is taken by a process this stack did not start "
            "(Debian's prometheus service?): running without Prometheus"
        )
        return []
    server = stack_prometheus(home)
    say("starting Prometheus…")
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        say(f"{exc}: running without Prometheus")
        return []
    assert server.process is not None
    return [Entry("prometheus", server.process.pid, server.url, _shown(server.process.log))]


def prometheus_url() -> str | None:
    """The address of the stack's Prometheus while it runs."""
    for entry in _read_state():
        if entry.name == "prometheus" and pid_alive(entry.pid):
            return entry.url
    return None


def down(say: Callable[[str], None] = print) -> None:
    entries = _read_state()
    # Services first, so they commit and leave their groups while the broker is still there.
    for entry in sorted(entries, key=lambda e: e.name == "kafka"):
        if pid_alive(entry.pid):
            say(f"stopping {entry.name} (pid {entry.pid})")
            stop_pid(entry.pid, timeout=30)
    _state_file().unlink(missing_ok=True)


def status() -> list[tuple[Entry, str]]:
    return [(entry, _state(entry)) for entry in _read_state()]


def _state(entry: Entry) -> str:
    if not pid_alive(entry.pid):
        return "stopped"
    if entry.name == "kafka":
        return "running"
    if entry.name == "prometheus":
        return "ready" if answers(f"{entry.url}/-/ready") else "starting"
    return "ready" if ready(entry.url) else "starting"
