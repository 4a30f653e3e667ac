"""What several commands do the same way: report a bad output folder or an unloadable detector in one line."""
from __future__ import annotations

import sys
from pathlib import Path


def out_dir_or_none(path: str) -> Path | None:
    """:func:`manipseg.io.prepare_out_dir`, or None after printing the one-line error (the caller exits 2)."""
    from ..io import OutputDirError, prepare_out_dir

    try:
        return prepare_out_dir(path)
    except OutputDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def detector_or_none(name: str, device: str):
    """:func:`manipseg.registry.load_detector`, or None after printing the one-line error (exit 2)."""
    from .. import registry

    try:
        return registry.load_detector(name, device=device)
    except (registry.UnknownDetectorError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
