"""The images, checked without a Docker engine: each service's (services/NAME/Dockerfile) and the
command line's for batch jobs (cli/Dockerfile); the Dockerfile's shape, hadolint, and its
dependency steps replayed by uv on the build context."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.images import (
    IMAGES,
    JOB_IMAGE,
    Stage,
    context_files,
    env,
    ignored,
    stages,
    workspace_packages,
)
from tests.deploy.services import SETTINGS, env_prefix, port
from tests.deploy.tools import ROOT

HADOLINT = Path(shutil.which("hadolint") or ROOT / ".venv" / "bin" / "hadolint")
# `uv run` names its own binary in UV; uv may not be on PATH (python3 -m uv).
UV = os.environ.get("UV") or shutil.which("uv") or "uv"

# What the training recipes (models/train_NAME.py) import beyond the command line's own needs.
TRAINING_GROUP = "models"


def dockerfile_of(image: str) -> Path:
    return IMAGES[image]


def uv_syncs(stage: Stage) -> list[list[str]]:
    return [shlex.split(r.value[0]) for r in stage.all("RUN") if r.value[0].startswith("uv sync ")]


def _values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == option]


def build_problems(text: str, package: str, groups: list[str]) -> tuple[list[str], Stage | None]:
    """What every image must do, server or job: a locked, dependencies-first build of
    ``package`` with the dependency ``groups``, whose environment alone reaches a final stage
    that runs as a numeric non-root user. Also the final stage, where there is one to judge."""
    found: list[str] = []
    all_stages = stages(text)
    if len(all_stages) < 2:
        return ["not a multi-stage build"], None
    build = next((s for s in all_stages if uv_syncs(s)), None)
    final = all_stages[-1]
    for stage in all_stages:
        if ":" not in stage.base.split("/")[-1] or stage.base.endswith(":latest"):
            found.append(f"{stage.base} has no pinned tag")
    if build is None or build is final:
        return [*found, "no build stage running uv sync before the final stage"], None
    if build.base != final.base:
        found.append("the build and final stages differ in base: the environment would break")
    syncs = uv_syncs(build)
    for sync in syncs:
        if "--frozen" not in sync or "--no-dev" not in sync:
            found.append(f"`{shlex.join(sync)}` is not --frozen --no-dev")
        if _values(sync, "--package") != [package]:
            found.append(f"`{shlex.join(sync)}` does not sync --package {package}")
        if _values(sync, "--group") != groups:
            found.append(f"`{shlex.join(sync)}` does not sync exactly the groups {groups}")
    if package not in workspace_packages():
        found.append(f"{package} is not a workspace package")
    # The dependencies' layer comes first, from the lock alone, so code changes keep it cached.
    first_sync = next(i for i, r in enumerate(build.instructions) if r.cmd.upper() == "RUN")
    early = [r for r in build.instructions[:first_sync] if r.cmd.upper() == "COPY"]
    if "--no-install-workspace" not in syncs[0] or any(
        not set(r.value[:-1]) <= {"pyproject.toml", "uv.lock"} for r in early if not r.flags
    ):
        found.append("the first uv sync is not a dependencies-only layer built from the lock")
    if not any(f"--from={build.name}" in r.flags for r in final.all("COPY")):
        found.append("the final stage does not take the environment from the build stage")
    if any(f.startswith("--from=") and "uv" in f for r in final.all("COPY") for f in r.flags):
        found.append("uv is copied into the final image")
    users = final.all("USER")
    user = users[-1].value[0].split(":")[0] if users else "root"
    if not user.isdigit() or int(user) == 0:
        found.append(f"the final stage runs as {user!r}, not a numeric non-root user")
    return found, final


def problems(text: str, service: str) -> list[str]:
    """What keeps a Dockerfile from building the service's image as the project wants it."""
    package = f"tandem-{service}"
    module = package.replace("-", "_")
    prefix, listen = env_prefix(service), port(service)
    found, final = build_problems(text, package, [])
    if final is None:
        return found
    [*_, check] = final.all("HEALTHCHECK") or [None]
    if check is None or check.value[0] != "CMD" or "/healthz" not in " ".join(check.value):
        found.append("no HEALTHCHECK on /healthz")
    cmd = final.all("CMD")
    if not cmd or list(cmd[-1].value) != ["python", "-m", module]:
        found.append(f"CMD is not python -m {module}")
    elif importlib.util.find_spec(module) is None:
        found.append(f"{module} is not an importable module")
    if [str(listen)] not in [list(e.value) for e in final.all("EXPOSE")]:
        found.append(f"port {listen} is not exposed")
    variables = env(final)
    if variables.get(f"{prefix}HOST") != "0.0.0.0" or variables.get(f"{prefix}PORT") != str(listen):
        found.append(f"{prefix}HOST and {prefix}PORT do not serve on 0.0.0.0:{listen}")
    return found


def job_problems(text: str) -> list[str]:
    """What keeps cli/Dockerfile from building the batch jobs' image: the command line with the
    training group, the registry with its recipes, and no server's parts."""
    found, final = build_problems(text, "tandem-cli", [TRAINING_GROUP])
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if TRAINING_GROUP not in root["dependency-groups"]:
        found.append(f"the root pyproject declares no {TRAINING_GROUP!r} group")
    if final is None:
        return found
    if ["models", "/app/models"] not in [list(c.value) for c in final.all("COPY") if not c.flags]:
        found.append("the model registry and its recipes are not in /app/models")
    scripts = tomllib.loads((ROOT / "cli" / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = final.all("CMD")
    if not cmd or cmd[-1].value[0] not in scripts:
        found.append(f"CMD does not start one of the package's commands {sorted(scripts)}")
    if final.all("EXPOSE"):
        found.append("a job listens on nothing, yet the image exposes a port")
    # checkov asks every image for a HEALTHCHECK: a job has none to give, and says why.
    waived = re.search(r"^# checkov:skip=CKV_DOCKER_2:\s*\S", text, re.MULTILINE)
    if not final.all("HEALTHCHECK") and not waived:
        found.append("no HEALTHCHECK and no reason given for the job having none")
    return found


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_each_service_has_its_own_image(service: str) -> None:
    assert problems(dockerfile_of(service).read_text(), service) == []


def test_the_single_root_dockerfile_is_gone() -> None:
    assert not (ROOT / "Dockerfile").exists()


BROKEN = {
    "one stage": ("FROM python:3.11-slim-trixie\nRUN useradd", "RUN useradd"),
    "another base": ("FROM python:3.11-slim-trixie\nRUN", "FROM python:3.12-slim-trixie\nRUN"),
    "root user": ("USER 10001:10001", "USER root"),
    "no health check": ("HEALTHCHECK --interval", "# HEALTHCHECK --interval"),
    "unknown package": ("--package tandem-scoring\n", "--package tandem-scorer\n"),
    "unlocked": ("uv sync --frozen --no-dev --no-editable", "uv sync --no-dev --no-editable"),
    "sources in the dependency layer": ("COPY pyproject.toml uv.lock ./", "COPY . ./"),
    "wrong module": ('"-m", "tandem_scoring"', '"-m", "tandem_scorer"'),
    "wrong port": ("EXPOSE 8001", "EXPOSE 8000"),
    "floating base": ("python:3.11-slim-trixie", "python"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_dockerfile_is_refused(case: str) -> None:
    before, after = BROKEN[case]
    text = dockerfile_of("scoring").read_text()
    assert before in text
    assert problems(text.replace(before, after, 1), "scoring") != []


def test_the_job_image_runs_the_command_line_with_the_training_group() -> None:
    assert job_problems(dockerfile_of(JOB_IMAGE).read_text()) == []


JOB_BROKEN = {
    "no training group": (
        "--group models --no-editable --package tandem-cli",
        "--no-editable --package tandem-cli",
    ),
    "unlocked": (
        "uv sync --frozen --no-dev --group models --no-editable",
        "uv sync --no-dev --group models --no-editable",
    ),
    "another package": ("--no-editable --package tandem-cli", "--no-editable --package tandem"),
    "no recipes": ("COPY models /app/models", "COPY models/tumor_screening /app/models"),
    "root user": ("USER 10001:10001", "USER 0"),
    "not the command line": ('CMD ["tandem", "--help"]', 'CMD ["python"]'),
    "a port": ("USER 10001:10001", "USER 10001:10001\nEXPOSE 8000"),
    "no reason for no health check": ("# checkov:skip=CKV_DOCKER_2:", "# checkov:"),
}


@pytest.mark.parametrize("case", sorted(JOB_BROKEN))
def test_a_broken_job_image_is_refused(case: str) -> None:
    before, after = JOB_BROKEN[case]
    text = dockerfile_of(JOB_IMAGE).read_text()
    assert before in text
    assert job_problems(text.replace(before, after, 1)) != []


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_build_steps_work_on_the_build_context(image: str, tmp_path: Path) -> None:
    """Replays the build stage: its COPYs from the context as .dockerignore leaves it, then its
    uv syncs (--dry-run: resolved from the lock and checked against the copied sources,
    nothing installed). A source the context lacks or a member not copied fails here; the
    job image's environment must hold what the training recipes import."""
    all_stages = stages(dockerfile_of(image).read_text())
    build = next(s for s in all_stages if uv_syncs(s))
    workdir = tmp_path
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    environment.pop("VIRTUAL_ENV", None)
    installs: set[str] = set()  # what the last uv sync would install
    for instruction in build.instructions:
        cmd = instruction.cmd.upper()
        if cmd == "WORKDIR":
            workdir = tmp_path / instruction.value[0].lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif cmd == "COPY" and not instruction.flags:
            *sources, dest = instruction.value
            for source in sources:
                files = context_files(source)
                assert files, f"{source} is not in the build context"
                for file in files:
                    relative = file.relative_to(ROOT / source) if file != ROOT / source else None
                    target = workdir / dest
                    target = (
                        (target / relative)
                        if relative
                        else (target / file.name if dest.endswith("/") else target)
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
        elif cmd == "RUN":
            command = shlex.split(instruction.value[0])
            assert command[:2] == ["uv", "sync"], f"cannot replay RUN {instruction.value[0]}"
            run = subprocess.run(
                [UV, *command[1:], "--dry-run"],
                cwd=workdir,
                env=environment,
                capture_output=True,
                text=True,
            )
            assert run.returncode == 0, run.stderr
            installs = set(re.findall(r"^ \+ ([\w.-]+)==", run.stderr, re.MULTILINE))
    if image == JOB_IMAGE:
        group = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
        wanted = {_requirement_name(r) for r in group[TRAINING_GROUP]}
        assert wanted <= installs, run.stderr
    for stage in all_stages:
        for copy in stage.all("COPY"):
            if not copy.flags:
                for source in copy.value[:-1]:
                    assert context_files(source), f"{source} is not in the build context"


def test_the_build_context_leaves_out_what_images_do_not_need() -> None:
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        ".tandem/review-api.db",
        "tests/conftest.py",
        "shared/src/tandem_shared/__pycache__/events.cpython-311.pyc",
        "models/README.md",
        "cli/src/tandem_cli/__pycache__/main.cpython-311.pyc",
    ]:
        assert ignored(path), path
    for path in [
        "uv.lock",
        "shared/src/tandem_shared/events.py",
        "cli/src/tandem_cli/main.py",
        "deploy/local/policy.yaml",
        "models/tumor_screening/1/model.onnx",
        # The recipes: the job image retrains with them.
        "models/modelkit.py",
        "models/train_tumor_screening.py",
    ]:
        assert not ignored(path), path


def test_hadolint_passes_the_dockerfiles_and_fails_a_bad_one() -> None:
    files = [str(dockerfile_of(image)) for image in sorted(IMAGES)]
    run = subprocess.run([str(HADOLINT), *files], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    bad = "FROM python\nRUN cd /app && pip install requests\nCMD python app.py\n"
    run = subprocess.run([str(HADOLINT), "-"], input=bad, capture_output=True, text=True)
    assert run.returncode != 0
    assert "DL3013" in run.stdout  # pip install without a pinned version
