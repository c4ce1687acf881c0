"""Each service on its own: no service imports another's package, what two share is a library
(tandem-shared, tandem-policy), each package declares what it imports, and each service's
image is built from its own code and those libraries alone."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("scoring", "router", "review-api", "audit-sink")
LIBRARIES = {"tandem-shared": "shared", "tandem-policy": "policy"}
# The Tandem packages each may import: the libraries only, and a service never another service.
ALLOWED = {
    "tandem-shared": set(),
    "tandem-policy": {"tandem-shared"},
    "tandem-scoring": {"tandem-shared"},
    "tandem-router": {"tandem-shared", "tandem-policy"},
    "tandem-review-api": {"tandem-shared", "tandem-policy"},
    "tandem-audit-sink": {"tandem-shared"},
}


def project(folder: str) -> dict[str, object]:
    with (ROOT / folder / "pyproject.toml").open("rb") as f:
        data: dict[str, object] = tomllib.load(f)["project"]
    return data


def folder_of(name: str) -> str:
    return LIBRARIES.get(name) or f"services/{name.removeprefix('tandem-')}"


def imported(src: Path, own: str) -> set[str]:
    """The Tandem packages the code under ``src`` imports (as distribution names), ``own``
    left out."""
    found: set[str] = set()
    for source in src.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0].replace("_", "-") for n in names if n.startswith("tandem_")}
    return found - {own}


def declared(folder: str) -> set[str]:
    requirements = project(folder).get("dependencies", [])
    assert isinstance(requirements, list)
    names = {re.split(r"[<>=!~ \[;]", str(r), maxsplit=1)[0] for r in requirements}
    return {n for n in names if n.startswith("tandem-")}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_each_package_imports_only_the_libraries_and_declares_them(name: str) -> None:
    folder = folder_of(name)
    assert str(project(folder)["name"]) == name
    uses = imported(ROOT / folder / "src", name)
    assert uses <= ALLOWED[name], f"{name} imports {sorted(uses - ALLOWED[name])}"
    assert declared(folder) == uses, f"{name}: declared and imported Tandem packages differ"


def test_the_workspace_holds_each_package_this_test_knows() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        members = tomllib.load(f)["tool"]["uv"]["workspace"]["members"]
    assert set(members) == {"shared", "policy", "services/*", "cli"}
    services = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert services == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_is_built_from_its_own_code_and_its_libraries(service: str) -> None:
    """What the build stage copies of the packages' sources: the service's folder and the
    libraries it declares, nothing of another service."""
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (shared|policy|services/[\w-]+|cli) ", dockerfile, re.M))
    name = f"tandem-{service}"
    wanted = {f"services/{service}"} | {LIBRARIES[n] for n in declared(f"services/{service}")}
    wanted |= {LIBRARIES[n] for lib in list(declared(f"services/{service}")) for n in ALLOWED[lib]}
    assert copied == wanted, f"{name}'s image copies {sorted(copied)}, needs {sorted(wanted)}"


def test_a_service_that_imported_another_would_be_caught(tmp_path: Path) -> None:
    (tmp_path / "tandem_review_api").mkdir()
    (tmp_path / "tandem_review_api" / "leak.py").write_text(
        "import json\nfrom tandem_router.app import create_app\n"
        "import tandem_shared.events\nfrom tandem_review_api import api\n"
    )
    uses = imported(tmp_path, "tandem-review-api")
    assert uses == {"tandem-router", "tandem-shared"}
    assert not uses <= ALLOWED["tandem-review-api"]
