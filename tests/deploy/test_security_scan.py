"""A static security scan (checkov) of what is deployed: both overlays as rendered, and the
images' Dockerfiles. An exception is a skip written where it applies, with its reason (the
checkov.io/skipN annotations in deploy/k8s/base/pod-defaults.yaml, a checkov:skip comment in a
Dockerfile). An insecure Deployment and Dockerfile ride in the same run, to show that the scan
fails what it should."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.images import IMAGES, JOB_IMAGE
from tests.deploy.tools import OVERLAYS, rendered, tool

# Each justified in deploy/k8s/base/pod-defaults.yaml.
ACCEPTED = {"CKV_K8S_11", "CKV_K8S_35", "CKV_K8S_43"}
# Justified in cli/Dockerfile: a job's image has no health check to give. Only there.
ACCEPTED_FOR_JOBS = {"CKV_DOCKER_2"}
INSECURE_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: insecure, namespace: default}
spec:
  selector: {matchLabels: {app: insecure}}
  template:
    metadata: {labels: {app: insecure}}
    spec:
      hostNetwork: true
      containers:
        - name: app
          image: example/app:latest
          securityContext: {privileged: true, runAsUser: 0}
"""
INSECURE_DOCKERFILE = "FROM python:latest\nCOPY . /app\nCMD python /app/main.py\n"


def scan(folder: Path) -> list[dict[str, Any]]:
    run = subprocess.run(
        [
            str(tool("checkov")),
            "--directory", str(folder),
            "--framework", "kubernetes", "dockerfile",
            "--output", "json",
            # Offline: no guidelines or policies fetched from the vendor's service.
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    reports = json.loads(run.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_the_deployed_objects_and_images_pass_the_security_scan(tmp_path: Path) -> None:
    for overlay in OVERLAYS:
        path = tmp_path / "k8s" / f"{overlay}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(rendered(overlay)))
    for image, dockerfile in IMAGES.items():
        target = tmp_path / "images" / image / "Dockerfile"
        target.parent.mkdir(parents=True)
        shutil.copyfile(dockerfile, target)
    (tmp_path / "insecure").mkdir()
    (tmp_path / "insecure" / "deployment.yaml").write_text(INSECURE_DEPLOYMENT)
    (tmp_path / "insecure" / "Dockerfile").write_text(INSECURE_DOCKERFILE)

    reports = {r["check_type"]: r for r in scan(tmp_path)}
    assert set(reports) == {"kubernetes", "dockerfile"}
    failed = [c for r in reports.values() for c in r["results"]["failed_checks"]]
    ours = [f"{c['file_path']} {c['resource']}: {c['check_id']}" for c in failed]
    ours = [line for line in ours if not line.startswith("/insecure/")]
    assert ours == []
    caught = {c["check_id"] for c in failed}
    # Privileged, root, host network, latest tag; no USER, no HEALTHCHECK, latest base.
    assert {"CKV_K8S_16", "CKV_K8S_23", "CKV_K8S_19", "CKV_K8S_14"} <= caught
    assert {"CKV_DOCKER_3", "CKV_DOCKER_2", "CKV_DOCKER_7"} <= caught
    skipped = [c for r in reports.values() for c in r["results"]["skipped_checks"]]
    assert {c["check_id"] for c in skipped} == ACCEPTED | ACCEPTED_FOR_JOBS
    for_jobs = {c["file_path"] for c in skipped if c["check_id"] in ACCEPTED_FOR_JOBS}
    assert for_jobs == {f"/images/{JOB_IMAGE}/Dockerfile"}
    assert all(c["check_result"].get("suppress_comment") for c in skipped)
    passed = sum(r["summary"]["passed"] for r in reports.values())
    assert passed > 1000  # every object and Dockerfile was scanned, not a handful
