"""The retraining CronJob (deploy/k8s/base/retrain.yaml) against the code it runs: its command
read by the command line's own parser, the claim it shares with scoring, and the commands that
fill that claim replayed on folders, where the job's own command then retrains."""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
from tandem_cli.dataset import sample_tasks
from tandem_cli.improvement import versions
from tandem_cli.window import when
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.settings import ScoringSettings
from tandem_shared.topics import Topics
from typer.core import TyperGroup
from typer.exceptions import TyperException

from tests.deploy.images import context_files
from tests.deploy.kube_schemas import schedule_errors
from tests.deploy.tools import (
    OVERLAYS,
    ROOT,
    Doc,
    container_of,
    kustomize_build,
    of_kind,
    one,
    pod_of,
    rendered,
)

# Where the images hold the registry (`COPY models /app/models`).
IMAGE_REGISTRY = "/app/models"
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "cli" / "pyproject.toml").read_text())["project"][
    "scripts"
]


def retrain_of(docs: list[Doc]) -> Doc:
    return one(docs, "CronJob", "retrain")


def argv_of(container: Doc) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def registry_of(workload: Doc, container: Doc) -> tuple[str, Doc]:
    """The claim ``container`` mounts, and its mount."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_of(workload).get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    [found] = [(claims[m["name"]], m) for m in container["volumeMounts"] if m["name"] in claims]
    return found


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


# -- the command ---------------------------------------------------------------------------


def parse(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``argv`` read by the command line's own parser, as the image runs it: the command's path
    (``["model", "retrain"]``) and its parameters. Nothing runs; a use the command line refuses
    raises its usage error (a TyperException: typer carries its own click)."""
    program, *rest = argv
    if program not in SCRIPTS:
        raise TyperException(f"{program!r} is none of the image's commands {sorted(SCRIPTS)}")
    module, _, attribute = SCRIPTS[program].partition(":")
    command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
    path: list[str] = []
    while isinstance(command, TyperGroup):
        if not rest:
            raise TyperException(f"{' '.join([program, *path])} needs a command")
        name, *rest = rest
        found = command.get_command(typer.Context(command), name)
        if found is None:
            raise TyperException(f"{' '.join([program, *path])} has no command {name!r}")
        command, path = found, [*path, name]
    context = command.make_context(" ".join([program, *path]), rest)
    return path, dict(context.params)


def retrain_problems(argv: list[str], registry: str) -> list[str]:
    """What keeps ``argv`` from retraining a model of the registry mounted at ``registry`` from
    the feedback topic, and recording the version on the control topic."""
    try:
        path, params = parse(argv)
    except TyperException as exc:
        return [exc.format_message()]
    if path != ["model", "retrain"]:
        return [f"runs `{' '.join(path)}`, not `model retrain`"]
    found = []
    model = params["model"]
    if not (ROOT / "models" / f"train_{model}.py").is_file() or not versions(
        ROOT / "models", model
    ):
        found.append(f"models/ has no recipe or no version of {model!r}")
    if params["models_dir"] != Path(registry):
        found.append(f"--models-dir {params['models_dir']} is not the mounted registry {registry}")
    if params["feedback"] is not None:
        found.append("labels from a file, not from the feedback topic")
    if not params["publish"]:
        found.append("the new version is not recorded on the control topic")
    if params["since"] is not None:
        try:
            when(params["since"])
        except typer.BadParameter as exc:
            found.append(exc.format_message())
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_job_runs_a_real_retrain_invocation(overlay: str) -> None:
    job = retrain_of(rendered(overlay))
    container = container_of(job)
    _, mount = registry_of(job, container)
    assert retrain_problems(argv_of(container), mount["mountPath"]) == []


def _swap(old: str, new: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [new if a == old else a for a in argv]


def _add(*args: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [*argv, *args]


def _drop(*args: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: [a for a in argv if a not in args]


BROKEN_COMMANDS = {
    "another program": _swap("tandem", "python"),
    "misspelt command": _swap("retrain", "retrian"),
    "another command": _swap("retrain", "validate"),
    "misspelt option": _swap("--model", "--modle"),
    "no model": _drop("--model", "tumor_screening"),
    "a model without a recipe": _swap("tumor_screening", "tumour_screening"),
    "another folder": _swap("/registry", "/app/models"),
    "labels from a file": _add("--feedback", "labels.csv"),
    "not recorded": _swap("--publish", "--no-publish"),
    "since in words": _swap("30d", "a month"),
    "weight below its minimum": _add("--weight", "0"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMMANDS))
def test_a_broken_retrain_command_is_refused(case: str) -> None:
    job = retrain_of(rendered("production"))
    argv = argv_of(container_of(job))
    _, mount = registry_of(job, container_of(job))
    broken = BROKEN_COMMANDS[case](argv)
    assert broken != argv
    assert retrain_problems(broken, mount["mountPath"]) != []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_feedback_topic_keeps_the_labels_the_job_learns_from(overlay: str) -> None:
    docs = rendered(overlay)
    _, params = parse(argv_of(container_of(retrain_of(docs))))
    window = datetime.now(UTC) - when(params["since"])
    prefix = one(docs, "ConfigMap", "tandem")["data"]["TANDEM_KAFKA_TOPIC_PREFIX"]
    [topic] = [
        t for t in of_kind(docs, "KafkaTopic") if t["spec"]["topicName"] == Topics(prefix).feedback
    ]
    assert timedelta(milliseconds=topic["spec"]["config"]["retention.ms"]) > window


# -- the schedule --------------------------------------------------------------------------


def test_retraining_is_weekly_one_run_at_a_time() -> None:
    base = retrain_of(kustomize_build(ROOT / "deploy" / "k8s" / "base"))["spec"]
    _, _, day_of_month, month, day_of_week = base["schedule"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit()
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        job = retrain_of(docs)
        spec = job["spec"]
        # Two runs at once would both write the same next version.
        assert spec["concurrencyPolicy"] == "Forbid", overlay
        assert spec["timeZone"] and schedule_errors(spec["schedule"]) == [], overlay
        assert pod_of(job)["restartPolicy"] in ("Never", "OnFailure"), overlay
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0, overlay
        # Released with the services: the same tag.
        tags = {c["image"].partition(":")[2] for c in pod_of(job)["initContainers"]}
        tags |= {container_of(job)["image"].partition(":")[2]}
        assert tags == {container_of(one(docs, "Deployment", "scoring"))["image"].partition(":")[2]}
    assert retrain_of(rendered("production"))["spec"]["schedule"] == base["schedule"]


# -- the registry --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scoring_reads_the_claim_the_job_writes(overlay: str) -> None:
    docs = rendered(overlay)
    job, scoring = retrain_of(docs), one(docs, "Deployment", "scoring")
    claim = one(docs, "PersistentVolumeClaim", "model-registry")
    written, job_mount = registry_of(job, container_of(job))
    read, scoring_mount = registry_of(scoring, container_of(scoring))
    assert written == read == claim["metadata"]["name"]
    assert not job_mount.get("readOnly")
    assert scoring_mount["readOnly"] is True
    assert env_of(container_of(scoring))["TANDEM_SCORING_MODELS_DIR"] == scoring_mount["mountPath"]
    # What fills the claim runs from the pod's own image and may write to it.
    for workload in (job, scoring):
        for init in pod_of(workload)["initContainers"]:
            filled, mount = registry_of(workload, init)
            assert filled == written and not mount.get("readOnly")
            assert init["image"] == container_of(workload)["image"]
    # Scoring's replicas spread over nodes while a run writes: every node mounts it.
    if overlay == "production":
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@cache
def shipped_versions() -> dict[str, str]:
    """What a scoring replica serves from the images' registry: each model's newest version."""
    return {t: m.key for t, m in ModelRegistry.load(ROOT / "models").task_types.items()}


def pinned_versions(scoring: Doc, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The versions scoring starts with, read by its own settings from its environment."""
    monkeypatch.setenv(
        "TANDEM_SCORING_SERVE", env_of(container_of(scoring))["TANDEM_SCORING_SERVE"]
    )
    return ScoringSettings().serve


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scoring_starts_with_the_shipped_versions_whatever_the_job_adds(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version the job adds to the volume is newer than the shipped ones, and a replica would
    serve the newest: the pin keeps it to those until one is promoted on the control topic."""
    scoring = one(rendered(overlay), "Deployment", "scoring")
    assert pinned_versions(scoring, monkeypatch) == shipped_versions()


def image_registry(folder: Path) -> Path:
    """The images' /app/models: models/ as the build context holds it."""
    for file in context_files("models"):
        target = folder / file.relative_to(ROOT / "models")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return folder


def replay(container: Doc, mount: Doc, image: Path, volume: Path, *extra: str) -> str:
    """Runs ``container``'s command here, its image's registry and its mount replaced by
    folders; the output."""
    argv = [
        a.replace(IMAGE_REGISTRY, str(image)).replace(mount["mountPath"], str(volume))
        for a in [*argv_of(container), *extra]
    ]
    program, *rest = argv
    found = sys.executable if program == "python" else shutil.which(program, path=_path())
    run = subprocess.run(
        [str(found), *rest],
        env={**os.environ, **env_of(container)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _path() -> str:
    # The environment's commands (tandem) first, as in the image.
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def files_in(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_seeding_fills_what_the_volume_lacks_and_overwrites_nothing(tmp_path: Path) -> None:
    scoring = one(rendered("production"), "Deployment", "scoring")
    [seed] = pod_of(scoring)["initContainers"]
    _, mount = registry_of(scoring, seed)
    image, volume = image_registry(tmp_path / "image"), tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)  # what a fresh ext4 volume holds
    kept = volume / "tumor_screening" / "1" / "manifest.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    for _ in range(2):  # every replica's start
        replay(seed, mount, image, volume)
    assert kept.read_text() == "{}"
    assert files_in(volume) == {**files_in(image), kept.relative_to(volume): b"{}"}


def labels(path: Path, count: int) -> Path:
    """People's labels of the last hours, as `tandem feedback export` writes them."""
    now = datetime.now(UTC)
    rows = [
        {
            "task_id": body["task_id"],
            "task_type": body["task_type"],
            **body["features"],
            "label": label,
            "labelled_at": (now - timedelta(minutes=count - n)).isoformat(),
        }
        for n, (body, label) in enumerate(sample_tasks(count, seed=5))
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_seeded_volume_is_retrained_by_the_jobs_own_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring's seeding, then a run: its recipes step and its own command, with the labels
    from a file instead of the topic and nothing published. The new version is on the volume,
    and scoring still starts with the shipped one."""
    docs = rendered("production")
    job, scoring = retrain_of(docs), one(docs, "Deployment", "scoring")
    [seed], [recipes] = pod_of(scoring)["initContainers"], pod_of(job)["initContainers"]
    image, volume = image_registry(tmp_path / "image"), tmp_path / "volume"
    volume.mkdir()
    replay(seed, registry_of(scoring, seed)[1], image, volume)
    stale = volume / "train_tumor_screening.py"
    stale.write_text("# an older release's recipe\n")
    replay(recipes, registry_of(job, recipes)[1], image, volume)
    assert stale.read_bytes() == (image / stale.name).read_bytes()  # the release's recipe

    container = container_of(job)
    _, params = parse(argv_of(container))
    model = params["model"]
    feedback = labels(tmp_path / "labels.csv", 60)
    out = replay(
        container,
        registry_of(job, container)[1],
        image,
        volume,
        *("--feedback", str(feedback), "--no-publish"),
    )
    assert "not promoted" in out
    assert versions(volume, model) == ["1", "2"]
    assert ModelRegistry.load(volume).task_types[model].key == f"{model}/2"
    pinned = ModelRegistry.load(volume, pinned_versions(scoring, monkeypatch))
    assert pinned.task_types[model].key == f"{model}/1"
    assert json.loads((volume / model / "2" / "manifest.json").read_text())["version"] == "2"
