"""``python -m tandem_policy.check FILE...`` validates policies (for CI and before a rollout);
``python -m tandem_policy.check --schema`` prints the JSON Schema of a policy document."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tandem_policy.loader import PolicyError, load_policy
from tandem_policy.policy import policy_json_schema


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem_policy.check")
    parser.add_argument("files", nargs="*", help="policy documents to validate")
    parser.add_argument("--schema", action="store_true", help="print the policy JSON Schema")
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(policy_json_schema(), indent=2))
    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        types = ", ".join(sorted(policy.task_types)) or "none"
        print(f"{path}: ok ({policy.name} v{policy.version}; task types: {types})")
    if not args.files and not args.schema:
        parser.print_usage(sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
