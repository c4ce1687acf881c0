"""Least privilege on the real broker: ACLs enforced (KRaft's StandardAuthorizer), each service
a SCRAM user over SASL_SSL with exactly the ACLs of its Strimzi KafkaUser in
deploy/k8s/components/kafka-scram/kafka-users.yaml. The four services run as processes, each as
its own user: tasks go through, people decide, the ledger records; and each user may write only
the topics its manifest names, which for the control and decisions topics are the few the
threat model allows."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from tandem_cli.dataset import sample_tasks
from tandem_cli.stack.kafka import BrokerSecurity, KafkaBroker
from tandem_cli.stack.process import free_port, project_root
from tandem_cli.stack.services import ServiceSet
from tandem_shared import clients
from tandem_shared.auth import mint_token
from tandem_shared.events import DecisionMade
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics, ensure_topics

from tests.kafka_utils import TopicReader, ce_headers
from tests.shared.test_kafka_security import Authority, secured_broker

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.timeout(300)]
MANIFEST = project_root() / "deploy" / "k8s" / "components" / "kafka-scram" / "kafka-users.yaml"
TOPICS = Topics()  # the manifests name the default topics
SERVICE_USERS = {
    "scoring": "tandem-scoring",
    "router": "tandem-router",
    "review-api": "tandem-review-api",
    "audit-sink": "tandem-audit-sink",
}
TASKS = 40
PROBE = b"probe"  # the key of the records that try what a user may write


@dataclass(frozen=True)
class Grant:
    user: str
    kind: str  # topic, group, transactionalId
    name: str
    prefix: bool
    operation: str


def grants() -> list[Grant]:
    """Every ACL of every KafkaUser in the manifest."""
    out = []
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        user = doc["metadata"]["name"]
        for acl in doc["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            for operation in acl["operations"]:
                out.append(
                    Grant(
                        user,
                        resource["type"],
                        resource["name"],
                        resource.get("patternType", "literal") == "prefix",
                        operation,
                    )
                )
    return out


def binding(grant: Grant) -> AclBinding:
    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactionalId": ResourceType.TRANSACTIONAL_ID,
    }
    return AclBinding(
        kinds[grant.kind],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefix else ResourcePatternType.LITERAL,
        f"User:{grant.user}",
        "*",
        getattr(AclOperation, grant.operation.upper()),
        AclPermissionType.ALLOW,
    )


def writers(topic: str) -> set[str]:
    return {g.user for g in grants() if (g.kind, g.name, g.operation) == ("topic", topic, "Write")}


@dataclass
class Cluster:
    broker: KafkaBroker
    security: BrokerSecurity
    ca: Path

    def settings(self, user: str) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{self.security.sasl_ssl_port}",
            security_protocol="SASL_SSL",
            sasl_username=user,
            sasl_password=self.security.users[user],  # type: ignore[arg-type]
            ssl_cafile=self.ca,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("acl-kafka")
    users = {name: secrets.token_urlsafe(16) for name in {g.user for g in grants()}}
    broker = secured_broker(home, Authority.make("tandem test CA"), users, authorize=True)
    security = broker.security
    assert security is not None
    try:
        # The operator's side, on the plaintext listener: the topics, then the ACLs.
        asyncio.run(ensure_topics(broker.bootstrap_servers, TOPICS))
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        for future in admin.create_acls([binding(g) for g in grants()]).values():
            future.result(timeout=30)
        yield Cluster(broker, security, home / "ca.pem")
    finally:
        broker.stop()


def may_write(cluster: Cluster, user: str, topic: str) -> bool:
    """Whether the broker takes a record on ``topic`` from ``user``."""
    kafka = cluster.settings(user)
    config = clients.librdkafka_security(kafka) | {
        "bootstrap.servers": kafka.bootstrap_servers,
        "message.timeout.ms": 15000,
        "log_level": 0,
    }
    producer = Producer(config)
    errors: list[KafkaError | None] = []
    producer.produce(topic, b"{}", key=PROBE, on_delivery=lambda err, _: errors.append(err))
    producer.flush(20)
    assert len(errors) == 1, f"no delivery report for {user} on {topic}"
    return errors[0] is None


def test_each_user_writes_only_what_its_kafka_user_allows(cluster: Cluster) -> None:
    # What the threat model says, independent of how the manifest spells it.
    assert writers(TOPICS.control) == {"tandem-scoring", "tandem-review-api", "tandem-retrain"}
    assert writers(TOPICS.decisions) == {"tandem-router", "tandem-review-api"}
    assert writers(TOPICS.checkpoints) == {"tandem-audit-sink"}
    wrong = []
    for user in sorted(cluster.security.users):
        for topic in TOPICS.all():
            allowed = user in writers(topic)
            if may_write(cluster, user, topic) != allowed:
                wrong.append(f"{user} {'could not' if allowed else 'could'} write {topic}")
    assert wrong == []


@pytest.fixture(scope="module")
def services(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSet]:
    bootstrap = cluster.settings("tandem-router").bootstrap_servers
    env_of = {
        name: {
            "TANDEM_KAFKA_SASL_USERNAME": user,
            "TANDEM_KAFKA_SASL_PASSWORD": cluster.security.users[user],
        }
        for name, user in SERVICE_USERS.items()
    }
    services = ServiceSet(
        tmp_path_factory.mktemp("acl-stack"),
        bootstrap,
        TOPICS.prefix,
        ports={name: free_port() for name in SERVICE_USERS},
        env={
            "TANDEM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TANDEM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TANDEM_KAFKA_SSL_CAFILE": str(cluster.ca),
            "TANDEM_SCORING_BATCH_TIMEOUT_MS": "50",
            "TANDEM_ROUTER_BATCH_TIMEOUT_MS": "50",
            "TANDEM_AUDIT_CHECKPOINT_SECONDS": "1",
        },
        env_of=env_of,
    )
    services.start()
    try:
        services.wait_ready()
        yield services
    finally:
        services.stop()


async def submit(kafka: KafkaSettings, bodies: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(**clients.aiokafka_producer(kafka, "acl-producer"))
    await producer.start()
    try:
        sent = [
            await producer.send(
                TOPICS.submitted,
                json.dumps(b).encode(),
                key=b["task_id"].encode(),
                headers=ce_headers("tandem.task.submitted.v1", b["task_id"]),
            )
            for b in bodies
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_the_pipeline_runs_with_each_service_as_its_own_user(
    cluster: Cluster, services: ServiceSet
) -> None:
    run = uuid.uuid4().hex[:6]
    # Not critical: one person decides each here (the two-person rule is tested apart).
    drawn = sample_tasks(TASKS, seed=7)
    bodies = [
        {**b, "task_id": f"acl-{run}-{n}", "critical": False} for n, (b, _) in enumerate(drawn)
    ]
    await submit(cluster.settings("tandem-producer"), bodies)
    ids = {b["task_id"] for b in bodies}
    api = services.get("review-api").url
    reviewer = {"Authorization": f"Bearer {mint_token(RuntimeSettings(), 'ana', ['senior'])}"}
    decided: dict[str, DecisionMade] = {}
    async with (
        TopicReader(cluster.broker.bootstrap_servers, TOPICS.decisions) as reader,
        httpx.AsyncClient(base_url=api, timeout=30) as client,
    ):
        for _ in range(300):
            # People decide what was routed to them: the review API's user reads the routed
            # tasks and writes their decisions.
            page = (await client.get("/v1/reviews", params={"limit": 100}, headers=reviewer)).json()
            for item in page["items"]:
                rid = item["review_id"]
                if (await client.post(f"/v1/reviews/{rid}/claim", headers=reviewer)).is_success:
                    await client.post(
                        f"/v1/reviews/{rid}/decision",
                        json={"outcome": item["prediction"], "rationale": "checked"},
                        headers=reviewer,
                    )
            for record in await reader.poll(0.3):
                if record.key == PROBE:
                    continue
                decision = DecisionMade.model_validate_json(record.value)
                decided[decision.task_id] = decision
            if ids <= set(decided):
                break
    assert ids <= set(decided), f"{len(ids - set(decided))} tasks without a decision"
    assert {d.decided_by for d in decided.values() if d.task_id in ids} == {"model", "human"}
    # The audit sink's user read every audited topic and wrote its checkpoints.
    async with TopicReader(cluster.broker.bootstrap_servers, TOPICS.checkpoints) as checkpoints:
        assert await checkpoints.until(1, timeout=60)
    ledger = sqlite3.connect(services.home / "audit-sink.db")
    try:
        query = "SELECT DISTINCT subject FROM ledger WHERE subject LIKE ?"
        recorded = {row[0] for row in ledger.execute(query, (f"acl-{run}-%",))}
    finally:
        ledger.close()
    assert recorded == ids
