"""``manipseg models``: list the registered detectors."""
from __future__ import annotations

import argparse

HELP = "list the available detectors, one line each"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from .. import registry

    rows = [{"name": e.name, "summary": e.summary} for e in registry.entries()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['summary']}")
    return 0
