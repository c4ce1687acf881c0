"""Who connects to Kafka (deploy/k8s/components/kafka-scram): in production every workload that
talks to Kafka connects to Strimzi's TLS listener with SCRAM as the KafkaUser named for it,
checks the brokers against the cluster CA, and KEDA reads its lag as the same user; the users'
ACLs name only the topics the KafkaTopics declare. Dev stays on the plaintext listener. Each
check is also shown to refuse a broken copy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from tandem_shared.settings import KafkaSettings

from tests.deploy.services import SETTINGS, group_id
from tests.deploy.tools import (
    Doc,
    container_of,
    keda_kafka_keys,
    of_kind,
    one,
    pod_of,
    rendered,
    workloads,
)

USERNAME, PASSWORD = "TANDEM_KAFKA_SASL_USERNAME", "TANDEM_KAFKA_SASL_PASSWORD"
TLS_LISTENER = 9093
# The workloads that talk to Kafka: the services and the retraining job, not the migrations.
KAFKA_CLIENTS = sorted([*SETTINGS, "retrain"])
# The stand-in for a value a Secret gives.
FROM_A_SECRET = "from-a-secret"


class _DeclaredKafkaSettings(KafkaSettings):
    """KafkaSettings from the values given, never from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def kafka_clients(docs: list[Doc]) -> list[Doc]:
    """The workloads whose container reads the Kafka settings: the ConfigMap `tandem`."""
    reads = {"configMapRef": {"name": "tandem"}}
    return [w for w in workloads(docs) if reads in container_of(w).get("envFrom", [])]


def env_of(workload: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container_of(workload).get("env", [])}


def connection(docs: list[Doc], workload: Doc) -> KafkaSettings:
    """The Kafka settings the workload's container starts with, read by the code's own
    settings: its ConfigMaps, then its env."""
    env: dict[str, str] = {}
    for source in container_of(workload).get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({k: v.get("value", FROM_A_SECRET) for k, v in env_of(workload).items()})
    prefix = "TANDEM_KAFKA_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return _DeclaredKafkaSettings.model_validate(fields)


def cluster_of(docs: list[Doc]) -> str:
    """The Strimzi cluster the KafkaTopics belong to."""
    [cluster] = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind(docs, "KafkaTopic")}
    return str(cluster)


def mounted_secret(workload: Doc, path: PurePosixPath) -> tuple[str, str] | None:
    """The Secret and key the container reads at ``path`` through a read-only mount."""
    volumes = {v["name"]: v for v in pod_of(workload).get("volumes", [])}
    for mount in container_of(workload).get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None or not mount.get("readOnly") or "subPath" in mount:
            continue
        if path.parent != PurePosixPath(mount["mountPath"]):
            continue
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        key = items.get(path.name) if "items" in secret else path.name
        if key is not None:
            return secret["secretName"], key
    return None


def identity_problems(docs: list[Doc], workload: Doc) -> list[str]:
    """Why ``workload`` would not connect to the TLS listener as the KafkaUser named for it,
    with that user's password, checking the brokers against the cluster CA."""
    name = workload["metadata"]["name"]
    try:
        settings = connection(docs, workload)
    except ValidationError as exc:
        return [f"its Kafka settings are refused: {exc.errors()[0]['msg']}"]
    cluster, user = cluster_of(docs), f"tandem-{name}"
    found = []
    if (settings.security_protocol, settings.sasl_mechanism) != ("SASL_SSL", "SCRAM-SHA-512"):
        found.append(f"connects with {settings.security_protocol}, not SCRAM over SASL_SSL")
    if settings.bootstrap_servers != f"{cluster}-kafka-bootstrap:{TLS_LISTENER}":
        found.append(f"connects to {settings.bootstrap_servers}, not the TLS listener")
    if settings.sasl_username != user:
        found.append(f"connects as {settings.sasl_username!r}, not {user!r}")
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    kafka_user = users.get(settings.sasl_username or "")
    if kafka_user is None:
        found.append(f"no KafkaUser {settings.sasl_username!r} is deployed")
    elif kafka_user["metadata"]["labels"].get("strimzi.io/cluster") != cluster:
        found.append(f"the KafkaUser {settings.sasl_username!r} is not of the cluster {cluster}")
    elif name in SETTINGS and not any(
        acl["resource"] == {"type": "group", "name": group_id(name), "patternType": "prefix"}
        for acl in kafka_user["spec"]["authorization"]["acls"]
    ):
        found.append(f"{settings.sasl_username!r} is not granted the group {group_id(name)!r}")
    # The Secret the User Operator makes for the user: its name, the key `password`.
    password = env_of(workload).get(PASSWORD, {}).get("valueFrom", {}).get("secretKeyRef")
    if password != {"name": settings.sasl_username, "key": "password"}:
        found.append(f"its password is {password}, not its user's Secret's")
    ca, cluster_ca = settings.ssl_cafile, (f"{cluster}-cluster-ca-cert", "ca.crt")
    if ca is None or mounted_secret(workload, PurePosixPath(ca)) != cluster_ca:
        found.append(f"{ca} is not the cluster CA, mounted read-only")
    return found


def topic_acl_problems(docs: list[Doc]) -> list[str]:
    """Where the KafkaUsers' topic ACLs and the KafkaTopics disagree."""
    declared = {t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic")}
    granted: set[str] = set()
    found = []
    for user in of_kind(docs, "KafkaUser"):
        for acl in user["spec"]["authorization"]["acls"]:
            resource, name = acl["resource"], user["metadata"]["name"]
            if resource["type"] != "topic":
                continue
            # A prefix would grant topics that no KafkaTopic declares, now or later.
            if resource.get("patternType", "literal") != "literal":
                found.append(f"{name} is granted every topic beginning {resource['name']!r}")
            elif resource["name"] not in declared:
                found.append(
                    f"{name} is granted {resource['name']!r}, which no KafkaTopic declares"
                )
            granted.add(resource["name"])
    found += [f"no KafkaUser may use {topic!r}" for topic in sorted(declared - granted)]
    return found


def trigger_auth_params(docs: list[Doc], scaled: Doc) -> dict[str, Any]:
    """The parameters KEDA gives the Kafka scaler of ``scaled``'s trigger: its metadata's, then
    its TriggerAuthentication's (a value from the scale target's env, or a Secret's key as
    (name, key))."""
    [trigger] = scaled["spec"]["triggers"]
    params: dict[str, Any] = dict(trigger["metadata"])
    reference = trigger.get("authenticationRef")
    if reference is None:
        return params
    assert reference.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth = one(docs, "TriggerAuthentication", reference["name"])["spec"]
    assert set(auth) <= {"env", "secretTargetRef"}, "a source this test does not read"
    target = one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    containers = {c["name"]: c for c in pod_of(target)["containers"]}
    for ref in auth.get("env", []):
        container = containers[ref.get("containerName", pod_of(target)["containers"][0]["name"])]
        params[ref["parameter"]] = {e["name"]: e for e in container["env"]}[ref["name"]]["value"]
    for ref in auth.get("secretTargetRef", []):
        params[ref["parameter"]] = (ref["name"], ref["key"])
    return params


def scaler_problems(docs: list[Doc], scaled: Doc) -> list[str]:
    """Why KEDA's Kafka scaler of ``scaled`` would not read the lag as its target's user."""
    target = one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    user = connection(docs, target).sasl_username
    params = trigger_auth_params(docs, scaled)
    [trigger] = scaled["spec"]["triggers"]
    from_auth = set(params) - set(trigger["metadata"])
    found = [
        f"the scaler reads no {p!r}" for p in sorted(from_auth - keda_kafka_keys("authParams"))
    ]
    wanted = {
        "sasl": "scram_sha512",
        "tls": "enable",
        "username": user,
        "password": (user, "password"),
        "ca": (f"{cluster_of(docs)}-cluster-ca-cert", "ca.crt"),
    }
    found += [
        f"{k} is {params.get(k)!r}, not {v!r}" for k, v in wanted.items() if params.get(k) != v
    ]
    return found


# -- production ----------------------------------------------------------------------------


def test_every_kafka_client_connects_as_its_own_kafka_user() -> None:
    docs = rendered("production")
    clients = kafka_clients(docs)
    assert sorted(w["metadata"]["name"] for w in clients) == KAFKA_CLIENTS
    problems = {w["metadata"]["name"]: identity_problems(docs, w) for w in clients}
    assert {name: found for name, found in problems.items() if found} == {}
    users = [connection(docs, w).sasl_username for w in clients]
    assert len(set(users)) == len(users)


def _edit_env(workload: str, name: str, value: Doc | None) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        found = next(w for w in workloads(docs) if w["metadata"]["name"] == workload)
        container = container_of(found)
        container["env"] = [e for e in container["env"] if e["name"] != name]
        if value is not None:
            container["env"].append({"name": name, **value})

    return edit


def _edit_config(key: str, value: str) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        one(docs, "ConfigMap", "tandem")["data"][key] = value

    return edit


def _drop(kind: str, name: str) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        docs.remove(one(docs, kind, name))

    return edit


def _edit_ca_mount(workload: str, **changes: Any) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        found = next(w for w in workloads(docs) if w["metadata"]["name"] == workload)
        for mount in container_of(found)["volumeMounts"]:
            if mount["name"] == "kafka-ca":
                mount.update(changes)

    return edit


# Each a real mistake, on the workload named: the check must refuse every one.
BROKEN_IDENTITIES: dict[str, tuple[str, Callable[[list[Doc]], None]]] = {
    "plaintext": ("router", _edit_config("TANDEM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")),
    "the plaintext listener": (
        "scoring",
        _edit_config("TANDEM_KAFKA_BOOTSTRAP_SERVERS", "tandem-kafka-bootstrap:9092"),
    ),
    "another service's user": (
        "scoring",
        _edit_env("scoring", USERNAME, {"value": "tandem-review-api"}),
    ),
    "another user's password": (
        "router",
        _edit_env(
            "router",
            PASSWORD,
            {"valueFrom": {"secretKeyRef": {"name": "tandem-review-api", "key": "password"}}},
        ),
    ),
    "the password from the shared Secret": (
        "retrain",
        _edit_env(
            "retrain",
            PASSWORD,
            {"valueFrom": {"secretKeyRef": {"name": "tandem-secrets", "key": PASSWORD}}},
        ),
    ),
    "no password": ("audit-sink", _edit_env("audit-sink", PASSWORD, None)),
    "a user not deployed": ("review-api", _drop("KafkaUser", "tandem-review-api")),
    "the CA not mounted": ("retrain", _edit_ca_mount("retrain", mountPath="/etc/ssl/kafka")),
    "the CA writable": ("scoring", _edit_ca_mount("scoring", readOnly=False)),
}


@pytest.mark.parametrize("case", sorted(BROKEN_IDENTITIES))
def test_a_broken_identity_is_refused(case: str) -> None:
    name, edit = BROKEN_IDENTITIES[case]
    docs = copy.deepcopy(rendered("production"))
    edit(docs)
    [workload] = [w for w in workloads(docs) if w["metadata"]["name"] == name]
    assert identity_problems(docs, workload) != []


def test_the_users_acls_name_the_declared_topics() -> None:
    assert topic_acl_problems(rendered("production")) == []


def _grant(topic: str, **resource: str) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        acls = one(docs, "KafkaUser", "tandem-router")["spec"]["authorization"]["acls"]
        acls.append(
            {"resource": {"type": "topic", "name": topic, **resource}, "operations": ["Read"]}
        )

    return edit


def _declare(topic: str) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        declared = copy.deepcopy(one(docs, "KafkaTopic", "tandem-decisions"))
        declared["metadata"]["name"] = topic.replace(".", "-")
        declared["spec"]["topicName"] = topic
        docs.append(declared)

    return edit


BROKEN_ACLS: dict[str, Callable[[list[Doc]], None]] = {
    "a topic no KafkaTopic declares": _grant("tandem.tasks.rooted"),
    "every topic of a prefix": _grant("tandem.", patternType="prefix"),
    "a declared topic nobody may use": _declare("tandem.verdicts"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ACLS))
def test_acls_and_topics_that_disagree_are_refused(case: str) -> None:
    docs = copy.deepcopy(rendered("production"))
    BROKEN_ACLS[case](docs)
    assert topic_acl_problems(docs) != []


def test_keda_reads_each_lag_as_the_consumers_own_user() -> None:
    docs = rendered("production")
    scaled = of_kind(docs, "ScaledObject")
    problems = {s["metadata"]["name"]: scaler_problems(docs, s) for s in scaled}
    assert {name: found for name, found in problems.items() if found} == {}
    # Every TriggerAuthentication is one a trigger uses.
    used = {t["authenticationRef"]["name"] for s in scaled for t in s["spec"]["triggers"]}
    assert used == {a["metadata"]["name"] for a in of_kind(docs, "TriggerAuthentication")}


def test_a_scaler_reading_as_another_user_is_refused() -> None:
    docs = copy.deepcopy(rendered("production"))
    auth = one(docs, "TriggerAuthentication", "tandem-router")["spec"]
    auth["secretTargetRef"][0]["name"] = "tandem-scoring"
    assert scaler_problems(docs, one(docs, "ScaledObject", "router")) != []
    one(docs, "ScaledObject", "scoring")["spec"]["triggers"][0].pop("authenticationRef")
    assert scaler_problems(docs, one(docs, "ScaledObject", "scoring")) != []


# -- dev -----------------------------------------------------------------------------------


def test_dev_stays_on_the_plaintext_listener_without_users() -> None:
    docs = rendered("dev")
    assert of_kind(docs, "KafkaUser") == []
    assert of_kind(docs, "TriggerAuthentication") == []
    clients = kafka_clients(docs)
    assert sorted(w["metadata"]["name"] for w in clients) == KAFKA_CLIENTS
    for workload in clients:
        settings = connection(docs, workload)
        assert settings.security_protocol == "PLAINTEXT"
        assert settings.bootstrap_servers == f"{cluster_of(docs)}-kafka-bootstrap:9092"
        assert not {USERNAME, PASSWORD} & set(env_of(workload))
    for scaled in of_kind(docs, "ScaledObject"):
        [trigger] = scaled["spec"]["triggers"]
        assert "authenticationRef" not in trigger
        assert not {"sasl", "tls"} & set(trigger["metadata"])
