"""docs/operations.md against the project: a section for every alert and none for an alert that
does not exist, `tandem` commands and options that the CLI has, make targets the Makefile has,
files that exist and links that land on a heading."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import typer
from tandem_cli.main import app

from tests.ops.files import ROOT, RUNBOOK, alerts

_FENCED = re.compile(r"^```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
_COMMAND_END = re.compile(r"[|>;)]|&&")
_LINK = re.compile(r"\]\(([\w./-]*\.md)?(#[\w-]+)?\)")


def text() -> str:
    return RUNBOOK.read_text()


def snippets() -> Iterator[str]:
    """Code blocks (continued lines joined) and inline code."""
    body = text()
    for block in _FENCED.findall(body):
        yield from block.replace("\\\n", " ").splitlines()
    yield from (span.replace("\n", " ") for span in _INLINE.findall(_FENCED.sub("", body)))


def tandem_commands() -> list[list[str]]:
    commands = []
    for snippet in snippets():
        for found in re.finditer(r"uv run tandem\b(.*)", snippet):
            rest = _COMMAND_END.split(found[1])[0]
            commands.append(shlex.split(rest))
    return commands


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    return frozenset(slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE))


def test_every_alert_has_a_section_and_every_section_an_alert() -> None:
    sections = set(re.findall(r"^### (Tandem\w+)$", text(), re.MULTILINE))
    assert sections == {rule["alert"] for rule in alerts()}


def test_the_tandem_commands_and_options_exist() -> None:
    commands = tandem_commands()
    assert len(commands) > 20
    problems = [problem for argv in commands if (problem := _unknown(argv))]
    assert problems == []


def _unknown(argv: list[str]) -> str | None:
    # Typer brings its own copy of click: groups are told by their commands, not their class.
    command: Any = typer.main.get_command(app)
    path = ["tandem"]
    for word in argv:
        group = getattr(command, "commands", None)
        if group is not None and word in group:
            command = group[word]
            path.append(word)
        elif word.startswith("--"):
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if word.split("=")[0] not in options:
                return f"{' '.join(path)} has no option {word}"
        elif group is not None:
            return f"{' '.join(path)} has no command {word}"
    return None


def test_the_make_targets_exist() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = {m for s in snippets() for m in re.findall(r"\bmake ([a-z]+)", s)}
    assert used
    assert used <= targets


def test_the_files_it_names_exist() -> None:
    named = {
        s
        for s in snippets()
        if re.fullmatch(r"(deploy|docs|tests|models|cli|services|shared)/[\w./-]*", s)
        and not re.search(r"/[A-Z]+(/|$)", s)  # placeholders such as models/NAME/VERSION
    }
    assert named
    assert [path for path in sorted(named) if not (ROOT / path).exists()] == []


def test_its_links_land_on_headings() -> None:
    links = _LINK.findall(text())
    assert links
    for target, anchor in links:
        path = RUNBOOK.parent / target if target else RUNBOOK
        assert path.exists(), target
        if anchor:
            assert anchor[1:] in anchors(path), f"{target}{anchor}"
