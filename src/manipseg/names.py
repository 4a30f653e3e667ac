"""The "did you mean" of every name a user types (detectors, dataset formats, attacks, config keys, kinds)."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.5) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` to ``word`` (difflib ratio >= ``cutoff``), or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""
