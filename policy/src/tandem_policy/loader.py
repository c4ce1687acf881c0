"""Reading a policy document from YAML; every error names the field path and the line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tandem_policy.policy import Policy


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path or '(document)'}: {self.message}"


class PolicyError(ValueError):
    """A policy that cannot be used; ``problems`` says what is wrong and where."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        detail = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid policy {source}:\n{detail}")

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.problems]


def load_policy(path: str | Path) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [Problem("", None, f"cannot read: {exc}")]) from exc
    return parse_policy(text, source=str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        # The reader checks every character as it is built: a control character fails here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [Problem("", None, f"YAML: {exc}")]) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise PolicyError(source, [Problem("", None, "the document is empty")])
        _check_nodes(root, (), source, set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(filter(None, [exc.context, exc.problem]))
        raise PolicyError(source, [Problem("", line, f"YAML: {message}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [Problem("", None, f"YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [p for p in error["loc"] if p != "[key]"]
            path, line = _locate(root, loc)
            problems.append(Problem(path, line, error["msg"]))
        raise PolicyError(source, problems) from exc


def dump_policy(policy: Policy) -> str:
    """A policy as a YAML document that parses back to an equal policy."""
    data = policy.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _check_nodes(node: Node, path: tuple[str, ...], source: str, seen: set[int]) -> None:
    """Refuse what YAML allows but a reviewed policy should not have: repeated keys, aliases."""
    line = node.start_mark.line + 1
    if id(node) in seen:
        # Aliases let a short file expand enormously; a policy is read by auditors, spell it out.
        raise PolicyError(source, [Problem(".".join(path), line, "YAML aliases are not allowed")])
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            name = str(key.value) if isinstance(key, ScalarNode) else "?"
            if name in keys:
                where = ".".join((*path, name))
                problem = Problem(where, key.start_mark.line + 1, "duplicate key")
                raise PolicyError(source, [problem])
            keys.add(name)
            _check_nodes(value, (*path, name), source, seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _check_nodes(item, (*path, str(index)), source, seen)


def _locate(root: Node, loc: Sequence[int | str]) -> tuple[str, int | None]:
    """The dotted path of a validation error and the line of the deepest node it reaches."""
    node: Node | None = root
    line: int | None = root.start_mark.line + 1
    walked: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(node, MappingNode):
            match = next((kv for kv in node.value if str(kv[0].value) == str(part)), None)
            if match is None:
                if index == len(loc) - 1:
                    walked.append(str(part))  # a required field that is missing
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break  # pydantic adds union member names below the last real field
        walked.append(str(part))
    return ".".join(walked), line
