"""The real Apache Kafka broker (KRaft, one node) from Maven Central's jars, without Docker."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tandem_cli.stack.process import Process, port_open, project_root, wait_until

KAFKA_VERSION = "4.1.1"


def cache_dir() -> Path:
    base = os.environ.get("TANDEM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tandem"
    )
    return Path(base)


def kafka_libs() -> Path:
    """The broker's jars, fetched once with Maven into the cache and reused after that."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError(
            "Java 17+ and Maven are needed to fetch Kafka (make setup installs them)"
        )
    pom = project_root() / "deploy" / "local" / "kafka" / "pom.xml"
    libs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        check=True,
    )
    marker.touch()
    return libs


def _java(libs: Path, *args: str) -> list[str]:
    return ["java", "-Xms256m", "-Xmx768m", "-cp", f"{libs}/*", *args]


@dataclass
class BrokerSecurity:
    """Listeners beside the plaintext one, as a secured cluster has them: SASL_SSL (SCRAM-SHA-512
    and PLAIN) and SSL with client certificates required (mutual TLS). PEM files: ``keystore``
    holds the broker's key and certificate chain, ``truststore`` the CA of client certificates."""

    sasl_ssl_port: int
    ssl_port: int
    keystore: Path
    truststore: Path
    users: dict[str, str]  # SCRAM and PLAIN users: name → password
    # ACLs decide what each user may do (KRaft's StandardAuthorizer); the plaintext listener
    # stays all-powerful, as the cluster operator's own access is.
    authorize: bool = False

    def listeners(self) -> list[str]:
        return [f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}", f"SSL://127.0.0.1:{self.ssl_port}"]

    def config(self) -> list[str]:
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.users.items())
        lines = [
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            "listener.name.ssl.ssl.client.auth=required",
        ]
        if self.authorize:
            lines += [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:ANONYMOUS",
            ]
        for listener in ("sasl_ssl", "ssl"):
            lines += [
                f"listener.name.{listener}.ssl.keystore.type=PEM",
                f"listener.name.{listener}.ssl.keystore.location={self.keystore}",
                f"listener.name.{listener}.ssl.truststore.type=PEM",
                f"listener.name.{listener}.ssl.truststore.location={self.truststore}",
            ]
        return lines

    def format_args(self) -> list[str]:
        """SCRAM credentials are stored with the cluster's metadata when it is formatted."""
        return [
            arg
            for name, password in self.users.items()
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]


@dataclass
class KafkaBroker:
    """One KRaft node acting as broker and controller, data and logs under ``home``."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    # How long a new consumer group waits for more members before its first rebalance: no
    # wait by default, so tests and the local stack start consuming at once. Production
    # brokers wait 3 s, which lets processes started together share a backlog from its start.
    initial_rebalance_delay_ms: int = 0
    security: BrokerSecurity | None = None
    process: Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    def _write_config(self) -> Path:
        config = self.home / "server.properties"
        secured = self.security.listeners() if self.security else []
        served = [f"PLAINTEXT://127.0.0.1:{self.port}", *secured]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners={','.join(served)},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={','.join(served)}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={protocols}",
                    *(self.security.config() if self.security else []),
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.home / 'data'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    f"group.initial.rebalance.delay.ms={self.initial_rebalance_delay_ms}",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 90.0) -> None:
        libs = kafka_libs()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            subprocess.run(
                _java(
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    str(uuid.uuid4()),
                    "-c",
                    str(config),
                    *(self.security.format_args() if self.security else []),
                ),
                check=True,
                capture_output=True,
            )
        log4j = project_root() / "deploy" / "local" / "kafka" / "log4j2.yaml"
        self.process = Process.start(
            "kafka",
            _java(libs, f"-Dlog4j2.configurationFile={log4j}", "kafka.Kafka", str(config)),
            log=self.home / "kafka.log",
        )
        self.pid_file.write_text(str(self.process.pid))
        try:
            wait_until(self._ready, timeout, f"Kafka on {self.bootstrap_servers}")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise RuntimeError(f"Kafka exited; see {self.process.log}")
        return port_open(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.pid_file.unlink(missing_ok=True)
