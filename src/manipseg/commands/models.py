"""``manipseg models``: list the registered detectors."""
from __future__ import annotations

import argparse

HELP = "list the available detectors, one line each"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from .. import registry
    from ..header import read_info

    default = registry.default_model()
    rows = []
    for e in registry.entries():
        row = {"name": e.name, "summary": e.summary, "default": e.name == default, "weights": None, "card": None}
        path = registry.bundled_weights(e.name)
        if path is not None:
            row["weights"] = path.name
            row["card"] = read_info(path).get("training", {}).get("card")
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        print(f"{name:<{width}}  {r['summary']}")
        if r["weights"]:
            print(f"{'':<{width}}  bundled weights {r['weights']}" + (f": {r['card']}" if r["card"] else ""))
    print("\n* = the default (used when --model is not given); model card: MODEL_CARD.md")
    return 0
