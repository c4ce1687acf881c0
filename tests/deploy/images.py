"""The images' Dockerfiles read with BuildKit's own parser, and the build context as the Docker
CLI sends it (.dockerignore), so that the images can be checked where no Docker engine runs."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile

from tests.deploy.services import SETTINGS
from tests.deploy.tools import ROOT

# The command line's image, for batch jobs (the retraining CronJob, deploy/k8s/base/retrain.yaml).
JOB_IMAGE = "cli"
# Image name (tandem/NAME) -> its Dockerfile.
IMAGES = {
    **{s: ROOT / "services" / s / "Dockerfile" for s in SETTINGS},
    JOB_IMAGE: ROOT / "cli" / "Dockerfile",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Any] = field(default_factory=list)

    def all(self, cmd: str) -> list[Any]:
        return [i for i in self.instructions if i.cmd.upper() == cmd]


def stages(text: str) -> list[Stage]:
    """The build stages, with ARG defaults declared before the first FROM substituted."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in dockerfile.parse_string(text):
        cmd = instruction.cmd.upper()
        if cmd == "ARG" and not found:
            name, _, default = instruction.value[0].partition("=")
            args[name] = default
        elif cmd == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), instruction.value[0])
            alias = instruction.value[2] if len(instruction.value) > 2 else None
            found.append(Stage(base, alias))
        elif found:
            found[-1].instructions.append(instruction)
    return found


def env(stage: Stage) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        values = instruction.value
        pairs.update(zip(values[::2], values[1::2], strict=True))
    return pairs


@cache
def workspace_packages() -> dict[str, Path]:
    """Package name -> its folder, for every member of the uv workspace."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    folders = [p for pattern in members for p in sorted(ROOT.glob(pattern))]
    return {
        tomllib.loads((p / "pyproject.toml").read_text())["project"]["name"]: p
        for p in folders
        if (p / "pyproject.toml").is_file()
    }


def _pattern(rule: str) -> re.Pattern[str]:
    # Go's filepath.Match plus `**`, as the Docker CLI reads .dockerignore.
    out, i = "", 0
    while i < len(rule):
        if rule.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif rule.startswith("**", i):
            out, i = out + ".*", i + 2
        elif rule[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif rule[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(rule[i]), i + 1
    return re.compile(out)


@cache
def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern(line.lstrip("!").strip("/"))))
    return rules


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the root) out of the build context:
    the last rule matching the path or a folder above it decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for keep, rule in _ignore_rules():
        if any(rule.fullmatch(p) for p in prefixes):
            verdict = not keep
    return verdict


def context_files(source: str) -> list[Path]:
    """The files under ``source`` (relative to the root) that the build context holds."""
    path = ROOT / source
    files = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.is_file()]
    return [f for f in files if not ignored(f.relative_to(ROOT).as_posix())]
