"""manipseg's per-user cache (``$XDG_CACHE_HOME/manipseg``, else ``~/.cache/manipseg``): measured decisions
(bf16, network runtime) as small JSON files, and exported ONNX graphs. Nothing in it is needed: a missing or
unreadable cache means "measure again", a read-only one "do not remember"."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "manipseg"


def read_json(name: str) -> dict[str, Any]:
    """The JSON object in ``cache_dir()/name``, or ``{}`` when it is missing or unreadable."""
    path = cache_dir() / name
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(name: str, key: str, value: Any) -> None:
    """Set ``key`` in the JSON file ``cache_dir()/name`` (written atomically); a read-only home is logged
    (debug) and otherwise ignored: the decision was made, it is just not remembered."""
    cache = read_json(name)
    cache[key] = value
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write the cache file %s: %s", path, exc)
