"""deploy/k8s: each overlay rendered by kustomize, every object validated offline against the
Kubernetes schemas and the upstream CRDs (kube_schemas.py), then checked against the code."""

from __future__ import annotations

import copy
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tandem_audit_sink.migrate import MigrationSettings
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.deploy import kube_schemas
from tests.deploy.images import IMAGES, stages
from tests.deploy.services import SETTINGS, env_prefix, group_id, port
from tests.deploy.tools import (
    OVERLAYS,
    ROOT,
    Doc,
    compose,
    container_of,
    crd_file,
    every_container,
    keda_kafka_keys,
    of_kind,
    one,
    pod_of,
    rendered,
    template_of,
    workloads,
)

SECRET = "tandem-secrets"
# Strimzi's listeners: plaintext, and TLS (with SCRAM in production).
KAFKA_LISTENERS = (9092, 9093)
# What each consumer's ScaledObject scales on: the topic it reads, or None for the lag of its
# group over every topic it reads.
CONSUMES: dict[str, Callable[[Topics], str | None]] = {
    "scoring": lambda t: t.submitted,
    "router": lambda t: t.scored,
    "audit-sink": lambda t: None,
}


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) applied to ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, operator = labels.get(expression["key"]), expression["operator"]
        values = expression.get("values", [])
        if not {
            "In": value in values,
            "NotIn": value not in values,
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[operator]:
            return False
    return True


def config_of(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = one(docs, "ConfigMap", "tandem")["data"]
    return data


def topics_of(docs: list[Doc]) -> Topics:
    return Topics(config_of(docs)["TANDEM_KAFKA_TOPIC_PREFIX"])


def image_user(image: str) -> int:
    """The numeric user an image (tandem/NAME[:TAG]) runs as: its Dockerfile's last USER."""
    name = image.partition(":")[0].removeprefix("tandem/")
    final = stages(IMAGES[name].read_text())[-1]
    return int(final.all("USER")[-1].value[0].split(":")[0])


# -- schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", kube_schemas.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid(overlay: str, version: str) -> None:
    failures = {
        f"{d['kind']}/{d['metadata']['name']}": kube_schemas.errors(d, version)
        for d in rendered(overlay)
    }
    assert {k: v for k, v in failures.items() if v} == {}


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return edit


# Each a real mistake; the validator must refuse every one, built-in kind or custom resource.
BREAKS: dict[str, tuple[str, str, Callable[[Doc], None]]] = {
    "misspelt probe": (
        "Deployment",
        "scoring",
        _set("spec.template.spec.containers.0.livenesProbe", {}),
    ),
    "port as text": ("Service", "router", _set("spec.ports.0.port", "8002")),
    "removed API": (
        "HorizontalPodAutoscaler",
        "review-api",
        _set("apiVersion", "autoscaling/v2beta2"),
    ),
    "bad name": ("Job", "review-api-migrations", _set("metadata.name", "Review_API")),
    "unknown policy field": ("NetworkPolicy", "allow-kafka", _set("spec.egres", [])),
    "no partitions": ("KafkaTopic", "tandem-control", _set("spec.partitions", 0)),
    "numeric trigger metadata": (
        "ScaledObject",
        "scoring",
        _set("spec.triggers.0.metadata.lagThreshold", 500),
    ),
    "unknown ScaledObject field": ("ScaledObject", "router", _set("spec.maxReplicas", 3)),
    "unknown PodMonitor field": (
        "PodMonitor",
        "tandem",
        _set("spec.podMetricsEndpoints.0.targetPortName", "http"),
    ),
    "custom resource metadata": ("PodMonitor", "tandem", _set("metadata.label", {})),
    "misspelt ACL operation": (
        "KafkaUser",
        "tandem-router",
        _set("spec.authorization.acls.0.operations", ["Raed"]),
    ),
    "ACL on an unknown resource type": (
        "KafkaUser",
        "tandem-scoring",
        _set("spec.authorization.acls.0.resource.type", "topics"),
    ),
    "secret named as in a pod's volume": (
        "TriggerAuthentication",
        "tandem-router",
        _set("spec.secretTargetRef.0.secretName", "tandem-router"),
    ),
    "misspelt TriggerAuthentication field": (
        "TriggerAuthentication",
        "tandem-scoring",
        _set("spec.secretTargetRefs", []),
    ),
    # The retraining CronJob: by the schema, then by the API server's own rules.
    "misspelt CronJob field": ("CronJob", "retrain", _set("spec.concurencyPolicy", "Forbid")),
    "pod outside the job template": (
        "CronJob",
        "retrain",
        _set("spec.jobTemplate.template", {"spec": {}}),
    ),
    "deadline as text": ("CronJob", "retrain", _set("spec.startingDeadlineSeconds", "1d")),
    "schedule in words": ("CronJob", "retrain", _set("spec.schedule", "every Monday")),
    "hour out of range": ("CronJob", "retrain", _set("spec.schedule", "0 24 * * 1")),
    "unknown time zone": ("CronJob", "retrain", _set("spec.timeZone", "Europe/Paris-Nord")),
    "unknown concurrency policy": ("CronJob", "retrain", _set("spec.concurrencyPolicy", "Never")),
    "job pod restarting always": (
        "CronJob",
        "retrain",
        _set("spec.jobTemplate.spec.template.spec.restartPolicy", "Always"),
    ),
    "registry mount read-only as text": (
        "CronJob",
        "retrain",
        _set("spec.jobTemplate.spec.template.spec.containers.0.volumeMounts.0.readOnly", "no"),
    ),
    "access modes as text": (
        "PersistentVolumeClaim",
        "model-registry",
        _set("spec.accessModes", "ReadWriteMany"),
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_the_validator_refuses_a_broken_object(case: str) -> None:
    kind, name, edit = BREAKS[case]
    doc = copy.deepcopy(one(rendered("production"), kind, name))
    assert kube_schemas.errors(doc, kube_schemas.KUBERNETES_VERSIONS[0]) == []
    edit(doc)
    assert kube_schemas.errors(doc, kube_schemas.KUBERNETES_VERSIONS[0]) != []


def test_custom_resources_are_checked_against_the_upstream_crds() -> None:
    for name in kube_schemas.CUSTOM_RESOURCE_DEFINITIONS:
        [crd] = [d for d in yaml.safe_load_all(crd_file(name).read_text()) if d]
        assert crd["kind"] == "CustomResourceDefinition"
    kinds = {d["kind"] for overlay in OVERLAYS for d in rendered(overlay)}
    custom = {"KafkaTopic", "KafkaUser", "ScaledObject", "TriggerAuthentication", "PodMonitor"}
    assert custom <= kinds


# -- layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_patch_the_base_rather_than_copy_it(overlay: str) -> None:
    folder = ROOT / "deploy" / "k8s" / "overlays" / overlay
    assert [p.name for p in folder.iterdir()] == ["kustomization.yaml"]
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../base"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_overlays_namespace(overlay: str) -> None:
    docs = rendered(overlay)
    [namespace] = of_kind(docs, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["kind"]


# -- the services ------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SETTINGS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_runs_the_service_as_its_code_expects(overlay: str, service: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", service)
    pod, container = pod_of(deployment), container_of(deployment)
    prefix, listen = env_prefix(service), port(service)
    env = {e["name"]: e for e in container["env"]}
    assert env[f"{prefix}HOST"]["value"] == "0.0.0.0"
    assert env[f"{prefix}PORT"]["value"] == str(listen)
    for name in env:
        if name.startswith(prefix):
            assert name.removeprefix(prefix).lower() in SETTINGS[service].model_fields, name
    assert container["ports"] == [{"name": "http", "containerPort": listen}]
    assert container["envFrom"] == [{"configMapRef": {"name": "tandem"}}]
    probes = {p: container[f"{p}Probe"]["httpGet"] for p in ("startup", "readiness", "liveness")}
    assert probes == {
        "startup": {"path": "/healthz", "port": "http"},
        "readiness": {"path": "/readyz", "port": "http"},
        "liveness": {"path": "/healthz", "port": "http"},
    }
    image, _, tag = container["image"].partition(":")
    assert image == f"tandem/{service}"
    assert tag and tag != "latest"
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert container["resources"]["limits"]["memory"]
    # The autoscaler owns the count: a replicas field would fight it on every apply.
    assert "replicas" not in deployment["spec"]
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(term["podAffinityTerm"]["labelSelector"], labels)
    assert term["podAffinityTerm"]["matchLabelKeys"] == ["app.kubernetes.io/name"]
    [svc] = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == service]
    assert selects({"matchLabels": svc["spec"]["selector"]}, labels)
    assert svc["spec"]["ports"] == [{"name": "http", "port": listen, "targetPort": "http"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(overlay: str) -> None:
    """Every pod, the CronJob's included, and every container in it, init containers too."""
    found = workloads(rendered(overlay))
    assert len(found) == 9
    for workload in found:
        pod, name = pod_of(workload), workload["metadata"]["name"]
        [user] = {image_user(c["image"]) for c in every_container(workload)}
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": user,
            "runAsGroup": user,
            "fsGroup": user,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        for container in every_container(workload):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, (name, container["name"])
            assert container["imagePullPolicy"] == "Always", (name, container["name"])
            assert container["resources"]["requests"].keys() == {"cpu", "memory"}
            assert container["resources"]["limits"]["memory"], (name, container["name"])
        # The root filesystem is read-only: Python's scratch space is an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container_of(workload)["volumeMounts"]}
        [tmp] = [v for v in pod["volumes"] if v["name"] == mounts["/tmp"]]
        assert "emptyDir" in tmp, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    docs = rendered(overlay)
    assert of_kind(docs, "Secret") == []
    secret_like = re.compile(r"SECRET|_KEY$|PASSWORD|TOKEN|DATABASE_URL")
    assert [k for k in config_of(docs) if secret_like.search(k)] == []
    for container in [c for w in workloads(docs) for c in every_container(w)]:
        values = {v["name"]: v.get("value") for v in container.get("env", [])}
        for variable in container.get("env", []):
            if secret_like.search(variable["name"]):
                reference = variable["valueFrom"]["secretKeyRef"]
                expected = {"name": SECRET, "key": variable["name"]}
                # Kafka's password is in the Secret Strimzi's User Operator makes for the
                # KafkaUser the container connects as (test_kafka_users.py).
                if variable["name"] == "TANDEM_KAFKA_SASL_PASSWORD":
                    expected = {"name": values["TANDEM_KAFKA_SASL_USERNAME"], "key": "password"}
                assert reference == {**reference, **expected}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_names_only_real_settings(overlay: str) -> None:
    known = {f"TANDEM_KAFKA_{f.upper()}" for f in KafkaSettings.model_fields}
    known |= {f"TANDEM_{f.upper()}" for f in RuntimeSettings.model_fields}
    # The standard OpenTelemetry SDK variables the services' exporter reads.
    known |= {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}
    assert set(config_of(rendered(overlay))) <= known


# -- Kafka: topics and autoscaling -------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_are_the_ones_the_code_uses(overlay: str) -> None:
    docs = rendered(overlay)
    topics = topics_of(docs)
    declared = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    assert sorted(declared) == sorted(topics.all())
    bootstrap = config_of(docs)["TANDEM_KAFKA_BOOTSTRAP_SERVERS"]
    for name, topic in declared.items():
        # Strimzi names the bootstrap Service after the cluster.
        cluster = topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert bootstrap.startswith(f"{cluster}-kafka-bootstrap:"), name
        spec = topic["spec"]
        # The settings the code gives a topic it creates itself (tandem_shared.topics).
        for key, value in topics.configs().get(name, {}).items():
            assert str(spec["config"].get(key)) == value, (name, key)
        compacted = "compact" in spec["config"].get("cleanup.policy", "")
        assert compacted == (name in topics.configs()), name
        # With acks=all a write needs min.insync.replicas copies: with more than one replica,
        # fewer than all, so that losing a broker does not stop writes.
        in_sync = spec["config"]["min.insync.replicas"]
        assert in_sync == 1 if spec["replicas"] == 1 else 2 <= in_sync < spec["replicas"], name


def keda_kafka_metadata_keys() -> set[str]:
    """The trigger metadata the KEDA Kafka scaler reads, from its struct tags."""
    from_env = {f"{name}FromEnv" for name in keda_kafka_keys("resolvedEnv")}
    return {*keda_kafka_keys("triggerMetadata"), *from_env}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumers_scale_on_their_own_lag_up_to_the_partitions(overlay: str) -> None:
    docs = rendered(overlay)
    topics = topics_of(docs)
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")
    }
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(docs, "ScaledObject")}
    assert sorted(scaled) == sorted(CONSUMES)
    known_keys = keda_kafka_metadata_keys()
    assert {"bootstrapServersFromEnv", "consumerGroup", "topic", "lagThreshold"} <= known_keys
    for service, consumed in CONSUMES.items():
        spec = scaled[service]["spec"]
        assert one(docs, "Deployment", service)
        [trigger] = spec["triggers"]
        metadata = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert set(metadata) <= known_keys, service
        assert metadata["consumerGroup"] == group_id(service)
        assert metadata.get("topic") == consumed(topics)
        assert metadata["bootstrapServersFromEnv"] in config_of(docs)
        read = [consumed(topics)] if consumed(topics) else list(partitions)
        # A consumer beyond the partitions would get none and idle.
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= min(partitions[t] for t in read), service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_review_api_scales_on_cpu(overlay: str) -> None:
    docs = rendered(overlay)
    [hpa] = of_kind(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "review-api")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container_of(one(docs, "Deployment", "review-api"))["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(overlay: str) -> None:
    docs = rendered(overlay)
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [budget] = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        # One pod may go at a time, whatever the replica count: a drain never blocks.
        assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}


# -- network policies ----------------------------------------------------------------------


def _port_matches(rule_port: Doc, port: int | str, container: Doc) -> bool:
    wanted = rule_port.get("port")
    if isinstance(wanted, str):  # a named port: the container's
        wanted = next(
            (p["containerPort"] for p in container.get("ports", []) if p["name"] == wanted), None
        )
    return wanted in (None, port)


def allowed(
    docs: list[Doc], workload: Doc, direction: str, port: int, peer: Doc | None = None
) -> bool:
    """Whether the NetworkPolicies let ``workload``'s pods send (egress) or take (ingress)
    traffic on ``port``; ``peer`` names the other side's namespace and pod labels, where the
    rule restricts them."""
    labels = template_of(workload)["metadata"]["labels"]
    container = container_of(workload)
    section, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(section, []):
            if not any(_port_matches(p, port, container) for p in rule.get("ports") or [{}]):
                continue
            if not rule.get(peers) or peer is None:
                return True
            for other in rule[peers]:
                namespace = other.get("namespaceSelector")
                pods = other.get("podSelector")
                if (namespace is None or selects(namespace, peer["namespace"])) and (
                    pods is None or selects(pods, peer["pod"])
                ):
                    return True
    return False


def _peer(namespace: str, **labels: str) -> Doc:
    return {"namespace": {"kubernetes.io/metadata.name": namespace}, "pod": labels}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_each_pod_do_its_work_and_no_more(overlay: str) -> None:
    docs = rendered(overlay)
    deny = one(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = _peer("kube-system", **{"k8s-app": "kube-dns"})
    kafka = _peer("kafka", **{"strimzi.io/cluster": "tandem", "strimzi.io/kind": "Kafka"})
    prometheus = _peer("monitoring", **{"app.kubernetes.io/name": "prometheus"})
    stranger = _peer("default", app="other")
    # The pods reach the listener they connect to, and no other.
    listener = int(config_of(docs)["TANDEM_KAFKA_BOOTSTRAP_SERVERS"].rpartition(":")[2])
    assert listener in KAFKA_LISTENERS
    databases = {"review-api", "audit-sink"}
    for service in SETTINGS:
        deployment = one(docs, "Deployment", service)
        listen = port(service)
        assert allowed(docs, deployment, "Egress", 53, dns), service
        assert not allowed(docs, deployment, "Egress", 53, stranger), service
        for kafka_port in KAFKA_LISTENERS:
            assert allowed(docs, deployment, "Egress", kafka_port, kafka) == (
                kafka_port == listener
            ), (service, kafka_port)
        assert not allowed(docs, deployment, "Egress", listener, stranger), service
        assert allowed(docs, deployment, "Egress", 4318), service
        assert allowed(docs, deployment, "Egress", 5432) == (service in databases), service
        assert not allowed(docs, deployment, "Egress", 80), service
        assert allowed(docs, deployment, "Ingress", listen, prometheus), service
        assert allowed(docs, deployment, "Ingress", listen, stranger) == (service in databases)
        assert not allowed(docs, deployment, "Ingress", listen + 1, prometheus), service
    # The review API reads task history from the audit API: that pod and port alone.
    audit_api = {"namespace": {}, "pod": {"app.kubernetes.io/name": "audit-sink"}}
    for service in SETTINGS:
        deployment = one(docs, "Deployment", service)
        reaches = allowed(docs, deployment, "Egress", port("audit-sink"), audit_api)
        assert reaches == (service == "review-api"), service
    review_api = one(docs, "Deployment", "review-api")
    assert not allowed(docs, review_api, "Egress", port("audit-sink"), stranger)
    assert allowed(docs, one(docs, "Deployment", "audit-sink"), "Ingress", port("audit-sink"))
    for job in of_kind(docs, "Job"):
        assert allowed(docs, job, "Egress", 5432), job["metadata"]["name"]
        for kafka_port in KAFKA_LISTENERS:
            assert not allowed(docs, job, "Egress", kafka_port, kafka), job["metadata"]["name"]
        assert not allowed(docs, job, "Ingress", 8000, stranger), job["metadata"]["name"]
    # Retraining reads labels from Kafka and records its version there: Kafka only.
    retrain = one(docs, "CronJob", "retrain")
    assert allowed(docs, retrain, "Egress", 53, dns)
    for kafka_port in KAFKA_LISTENERS:
        assert allowed(docs, retrain, "Egress", kafka_port, kafka) == (kafka_port == listener)
    assert not allowed(docs, retrain, "Egress", listener, stranger)
    for other in (80, 443, 4317, 4318, 5432):
        assert not allowed(docs, retrain, "Egress", other), other
    assert not allowed(docs, retrain, "Ingress", 8000, stranger)
    assert not allowed(docs, retrain, "Ingress", 8000, prometheus)


# -- migrations and monitoring -----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_jobs_run_what_compose_runs(overlay: str) -> None:
    docs = rendered(overlay)
    services = compose()["services"]
    for service in ("review-api", "audit-sink"):
        job = one(docs, "Job", f"{service}-migrations")
        container = container_of(job)
        assert container["image"].split(":")[0] == f"tandem/{service}"
        assert container["image"] == container_of(one(docs, "Deployment", service))["image"]
        assert container["command"] == services[f"{service}-migrations"]["command"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


@pytest.mark.parametrize("service", ["review-api", "audit-sink"])
def test_the_migration_command_migrates_a_database(service: str, tmp_path: Path) -> None:
    container = container_of(one(rendered("production"), "Job", f"{service}-migrations"))
    command = [sys.executable if c == "python" else c for c in container["command"]]
    database = tmp_path / "db.sqlite"
    # Every URL it takes (the audit sink's: the owner's and the service's) at one SQLite file.
    urls = {variable["name"]: f"sqlite+aiosqlite:///{database}" for variable in container["env"]}
    env = {**os.environ, **urls}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert any("version" in t for t in tables), tables
    assert len(tables) > 1, tables


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_sink_runs_as_its_writer_login_and_only_its_job_as_the_owner(
    overlay: str,
) -> None:
    """The Job migrates with the owner's URL and makes the user of the service's URL a login
    that may only read and append; the Deployment never sees the owner's URL."""
    docs = rendered(overlay)
    job = {e["name"]: e for e in container_of(one(docs, "Job", "audit-sink-migrations"))["env"]}
    sink = {e["name"]: e for e in container_of(one(docs, "Deployment", "audit-sink"))["env"]}
    owner, service = "TANDEM_AUDIT_OWNER_DATABASE_URL", "TANDEM_AUDIT_DATABASE_URL"
    assert set(job) == {owner, service}
    for variable in job:
        assert variable.removeprefix("TANDEM_AUDIT_").lower() in MigrationSettings.model_fields
    keys = {name: job[name]["valueFrom"]["secretKeyRef"]["key"] for name in job}
    assert keys[owner] != keys[service]
    assert sink[service]["valueFrom"]["secretKeyRef"]["key"] == keys[service]
    references = [e.get("valueFrom", {}).get("secretKeyRef") for e in sink.values()]
    referenced = {reference["key"] for reference in references if reference}
    assert keys[owner] not in referenced and owner not in sink
    assert sink["TANDEM_AUDIT_MIGRATE_ON_START"]["value"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_every_service_and_nothing_else(overlay: str) -> None:
    docs = rendered(overlay)
    [monitor] = of_kind(docs, "PodMonitor")
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [compose_job] = [
        j["job_name"] for j in prometheus["scrape_configs"] if j["job_name"] != "prometheus"
    ]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for workload in workloads(docs):
        labels = template_of(workload)["metadata"]["labels"]
        is_service = workload["kind"] == "Deployment"
        assert selects(monitor["spec"]["selector"], labels) == is_service
        if is_service:
            names = [p["name"] for p in container_of(workload)["ports"]]
            assert endpoint["port"] in names
            # The same job label as the Compose stack's Prometheus: one set of alert rules.
            assert labels[monitor["spec"]["jobLabel"]] == compose_job
