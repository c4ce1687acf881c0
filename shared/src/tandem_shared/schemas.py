"""Export the event contract's JSON Schemas: `python -m tandem_shared.schemas DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tandem_shared.events import json_schemas


def write_schema(schema: dict[str, Any], path: Path) -> Path:
    """One JSON Schema as published: sorted keys, so a regeneration diffs cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return path


def write(directory: Path) -> list[Path]:
    return [write_schema(s, directory / f"{name}.json") for name, s in json_schemas().items()]


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(path)
