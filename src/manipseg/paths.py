"""Where things live: the weights shipped in the package, and the shared development data (never bundled:
read from a configurable path)."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MANIPSEG_DATA"


def data_root(override: str | os.PathLike | None = None) -> Path:
    """The shared data folder: ``override``, else ``$MANIPSEG_DATA``, else ``../shared/data`` relative to
    the current directory (the layout of a checkout beside ``shared/``)."""
    if override:
        return Path(override)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("..") / "shared" / "data"


#: the trained weights (and their calibrations, ONNX graphs) shipped inside the package
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: suffixes of the files a model can be given as (trained weights, or a detector config); a calibration of
#: one of them lives beside it
MODEL_FILE_SUFFIXES = frozenset({".safetensors", ".yaml", ".yml", ".json"})


def shipped(filename: str) -> Path:
    """The path of a file in the package's weights folder (it may not exist)."""
    return WEIGHTS_DIR / filename


def bundled(filename: str) -> Path | None:
    """The file of the package's weights folder if this install has it (weights, calibrations, ONNX graphs)."""
    path = shipped(filename)
    return path if path.is_file() else None
