"""Each service's image (services/NAME/Dockerfile), checked without a Docker engine: the
Dockerfile's shape, hadolint, and its dependency steps replayed by uv on the build context."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.images import Stage, context_files, env, ignored, stages, workspace_packages
from tests.deploy.services import SETTINGS, env_prefix, port
from tests.deploy.tools import ROOT

HADOLINT = Path(shutil.which("hadolint") or ROOT / ".venv" / "bin" / "hadolint")
# `uv run` names its own binary in UV; uv may not be on PATH (python3 -m uv).
UV = os.environ.get("UV") or shutil.which("uv") or "uv"


def dockerfile_of(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


def uv_syncs(stage: Stage) -> list[list[str]]:
    return [shlex.split(r.value[0]) for r in stage.all("RUN") if r.value[0].startswith("uv sync ")]


def problems(text: str, service: str) -> list[str]:
    """What keeps a Dockerfile from building the service's image as the project wants it."""
    found: list[str] = []
    package = f"tandem-{service}"
    module = package.replace("-", "_")
    prefix, listen = env_prefix(service), port(service)
    all_stages = stages(text)
    if len(all_stages) < 2:
        return ["not a multi-stage build"]
    build = next((s for s in all_stages if uv_syncs(s)), None)
    final = all_stages[-1]
    for stage in all_stages:
        if ":" not in stage.base.split("/")[-1] or stage.base.endswith(":latest"):
            found.append(f"{stage.base} has no pinned tag")
    if build is None or build is final:
        return [*found, "no build stage running uv sync before the final stage"]
    if build.base != final.base:
        found.append("the build and final stages differ in base: the environment would break")
    syncs = uv_syncs(build)
    for sync in syncs:
        if "--frozen" not in sync or "--no-dev" not in sync:
            found.append(f"`{shlex.join(sync)}` is not --frozen --no-dev")
        if [sync[i + 1] for i, arg in enumerate(sync[:-1]) if arg == "--package"] != [package]:
            found.append(f"`{shlex.join(sync)}` does not sync --package {package}")
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


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_the_build_steps_work_on_the_build_context(service: str, tmp_path: Path) -> None:
    """Replays the build stage: its COPYs from the context as .dockerignore leaves it, then its
    uv syncs (--dry-run: resolved from the lock and checked against the copied sources,
    nothing installed). A source the context lacks or a member not copied fails here."""
    all_stages = stages(dockerfile_of(service).read_text())
    build = next(s for s in all_stages if uv_syncs(s))
    workdir = tmp_path
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    environment.pop("VIRTUAL_ENV", None)
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
        "models/modelkit.py",
    ]:
        assert ignored(path), path
    for path in [
        "uv.lock",
        "shared/src/tandem_shared/events.py",
        "deploy/local/policy.yaml",
        "models/tumor_screening/1/model.onnx",
    ]:
        assert not ignored(path), path


def test_hadolint_passes_the_dockerfiles_and_fails_a_bad_one() -> None:
    files = [str(dockerfile_of(s)) for s in sorted(SETTINGS)]
    run = subprocess.run([str(HADOLINT), *files], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    bad = "FROM python\nRUN cd /app && pip install requests\nCMD python app.py\n"
    run = subprocess.run([str(HADOLINT), "-"], input=bad, capture_output=True, text=True)
    assert run.returncode != 0
    assert "DL3013" in run.stdout  # pip install without a pinned version
