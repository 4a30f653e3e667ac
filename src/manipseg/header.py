"""A weights file's description from its safetensors header alone, without torch (listings, the ONNX
runtime's start-up, checksums for calibrations)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


class WeightsError(ValueError):
    """A weights file that cannot be used (missing, corrupted, or not a manipseg weights file)."""


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The ``__metadata__`` of a weights file (``manipseg`` description as JSON text, ``sha256``) from its
    header alone. Raises :class:`WeightsError` if unreadable."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 0 < header_len < 100_000_000:
                raise ValueError(f"implausible header length {header_len}")
            header = json.loads(fh.read(header_len))
        return dict(header["__metadata__"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{p}: cannot read the weights header ({exc})") from None


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``manipseg`` description of a weights file from its header alone (no tensors read, no checksum
    check): for listings such as ``manipseg models``. Raises :class:`WeightsError` if unreadable."""
    try:
        return json.loads(read_header(path)["manipseg"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: cannot read the weights description ({exc})") from None
