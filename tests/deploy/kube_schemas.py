"""Kubernetes objects checked offline as the API server would check their shape.

Built-in kinds: the OpenAPI schemas of each Kubernetes release that the `kubernetes-validate`
package ships (strict: unknown fields are errors). Custom resources: the openAPIV3Schema of the
upstream CustomResourceDefinition (Strimzi, KEDA, Prometheus Operator; see install-tools.sh),
made strict the same way, with `metadata` checked against the release's ObjectMeta. Names,
label values, a CronJob's schedule, time zone and policies, and a Job's restart policy are
checked against the API server's own rules, which no schema carries.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.deploy.tools import crd_file

# The oldest release the manifests support (podAffinityTerm.matchLabelKeys is beta from 1.31)
# and the newest the package knows: a field removed or not yet there fails one of them.
KUBERNETES_VERSIONS = ("1.31", "1.37")
CUSTOM_RESOURCE_DEFINITIONS = (
    "kafka.strimzi.io_kafkatopics.yaml",
    "kafka.strimzi.io_kafkausers.yaml",
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
)
_OBJECT_META = (
    "https://kubernetes.io/api/_definitions.json"
    "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# A CronJob's schedule as the API server parses it (robfig/cron's standard parser): five
# fields of values, ranges, lists and steps, or a descriptor.
_CRON_FIELDS = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    (0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_DESCRIPTORS = {
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}
_CRON_PART = re.compile(r"(\*|\?|(\w+)(?:-(\w+))?)(?:/(\d+))?")


def _schema_dir(version: str) -> Any:
    return (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / (f"v{version}.0-local-strict")
    )


@cache
def _registry(version: str) -> Registry[Any]:
    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()  # type: ignore[return-value]


@cache
def _builtin_validator(version: str, api_version: str, kind: str) -> Draft202012Validator | None:
    # kubernetes-validate's file names: the group's first label and the version, e.g.
    # networking.k8s.io/v1 -> networking-v1, v1 -> v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    return Draft202012Validator(json.loads(path.read_text()), registry=_registry(version))


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An openAPIV3Schema as JSON Schema, refusing fields it does not name (as the API server
    prunes or, with strict field validation, refuses them)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"]
    open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or (
        "additionalProperties" in schema
    )
    if "properties" in schema and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def _custom_validators() -> dict[tuple[str, str], Draft202012Validator]:
    validators = {}
    for name in CUSTOM_RESOURCE_DEFINITIONS:
        [crd] = [d for d in yaml.safe_load_all(crd_file(name).read_text()) if d]
        spec = crd["spec"]
        for version in spec["versions"]:
            if version["served"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = Draft202012Validator(schema)
    return validators


def _name_errors(doc: dict[str, Any]) -> Iterator[str]:
    metadata = doc.get("metadata", {})
    name = metadata.get("name", "")
    # Services, and what takes their names, are DNS labels; everything else DNS subdomains.
    rule = _DNS_LABEL if doc.get("kind") in ("Service", "Namespace") else _SUBDOMAIN
    if not (rule.fullmatch(name) and len(name) <= (63 if rule is _DNS_LABEL else 253)):
        yield f"metadata.name {name!r} is not a valid name for a {doc.get('kind')}"
    for key, value in (metadata.get("labels") or {}).items():
        if not (isinstance(value, str) and _LABEL_VALUE.fullmatch(value) and len(value) <= 63):
            yield f"label {key}={value!r} is not a valid label value"


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.upper() in names:
        return names.index(text.upper()) + low
    return int(text) if text.isdigit() else None


def schedule_errors(schedule: str) -> list[str]:
    """Why the API server would refuse ``schedule``, if it would."""
    if schedule in _CRON_DESCRIPTORS:
        return []
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        return [f"schedule {schedule!r} does not have five fields"]
    found = []
    for field, (low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in field.split(","):
            match = _CRON_PART.fullmatch(part)
            bounds = [_cron_value(v, low, names) for v in (match.group(2, 3) if match else ()) if v]
            if (
                not match
                or match[4] == "0"
                or any(b is None or not low <= b <= high for b in bounds)
            ):
                found.append(f"schedule {schedule!r}: {part!r} is not within {low}-{high}")
    return found


def _rule_errors(doc: dict[str, Any]) -> Iterator[str]:
    """What the API server's validation refuses in a Job or CronJob beyond the schema."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        yield from schedule_errors(str(spec.get("schedule", "")))
        zone = spec.get("timeZone")
        if zone is not None and zone not in zoneinfo.available_timezones():
            yield f"spec.timeZone {zone!r} is not a known time zone"
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy not in ("Allow", "Forbid", "Replace"):
            yield f"spec.concurrencyPolicy {policy!r} is none of Allow, Forbid, Replace"
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    if doc.get("kind") in ("Job", "CronJob"):
        restart = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if restart not in ("OnFailure", "Never"):
            yield f"a Job's pods restart OnFailure or Never, not {restart!r}"


def errors(doc: dict[str, Any], version: str) -> list[str]:
    """Every reason the API server of ``version`` would refuse ``doc`` for its shape."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    found = [*_name_errors(doc), *_rule_errors(doc)]
    validator = _builtin_validator(version, api_version, kind)
    if validator is None:
        validator = _custom_validators().get((api_version, kind))
        if validator is None:
            return [*found, f"no schema for {api_version} {kind}: unknown to Kubernetes {version}"]
        metadata = Draft202012Validator({"$ref": _OBJECT_META}, registry=_registry(version))
        found += [f"metadata: {e.message}" for e in metadata.iter_errors(doc.get("metadata"))]
    path = ".".join
    found += [
        f"{path(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    return found
