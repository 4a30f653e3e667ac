"""Training checkpoints: model, optimizer, scheduler, step, every RNG state and the sampler position.

A checkpoint is one ``torch.save`` file that loads with ``torch.load(path, weights_only=True)`` (only
tensors, numbers, strings, lists, tuples and dicts inside; numpy's RNG key is stored as a tensor). It is
written to a temporary file in the same folder and renamed into place, so a crash never leaves a
half-written checkpoint. ``RUN_DIR/checkpoints/latest.json`` names the newest one.
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Python, numpy (global) and torch (CPU, and CUDA when present) random states."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": int(n["pos"])},
        "has_gauss": int(n["has_gauss"]),
        "gauss": float(n["gauss"]),
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``RUN_DIR/checkpoints/step_XXXXXXXX.pt`` atomically, update ``latest.json``, prune old ones."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    pointer = json.dumps({"step": step, "file": path.name})
    atomic_write(folder / "latest.json", lambda tmp: tmp.write_text(pointer, encoding="utf-8"))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CKPT_RE.match(p.name))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``latest.json`` (or the newest file if the pointer is missing)."""
    folder = Path(run_dir) / "checkpoints"
    pointer = folder / "latest.json"
    if pointer.is_file():
        name = json.loads(pointer.read_text(encoding="utf-8"))["file"]
        if (folder / name).is_file():
            return folder / name
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no arbitrary code runs)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable manipseg training checkpoint ({exc})") from exc
