"""Paper Fig. 4: the same held-out copy-pastes through the blender at several training checkpoints.

Works on standalone runs (``manipseg train`` of a ``recipe: gan`` config) and on ``manipseg train`` runs that trained G
jointly (their ``snapshots/`` hold G at every checkpoint; held-out photos from ``validation.sources``).

Columns: authentic background T, mask K, copy-paste M, then G(K, M) (G's whole output, no compositing)
at evenly spaced snapshots of the run, labelled with their step; a last column shows |G(K, M) − M|
of the final snapshot, amplified x4, to make the changes visible.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from ..io import save_png


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img).copy()
    scale = max(0.35, img.shape[1] / 400)
    for colour, width in (((0, 0, 0), 3), ((255, 255, 0), 1)):
        cv2.putText(img, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)
    return img


def _rgb(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> uint8 H x W x 3."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The run's generator snapshots as (step, path), by step."""
    folder = Path(run_dir) / "snapshots"
    found = sorted((int(p.stem.split("_")[1]), p) for p in folder.glob("G_*.safetensors")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{run_dir}: no snapshots/G_*.safetensors; train with manipseg train configs/gan/gan_blender.yaml")
    return found


def fig4(run_dir: str | os.PathLike, out: str | os.PathLike, rows: int = 4, columns: int = 5, cell: int = 160) -> Path:
    """Write the grid PNG to ``out`` and return its path."""

    from ..gan.model import load_generator_file, to_signed
    from ..visualize import grid
    from .gan_pretrain import _validate, validation_batch

    run_dir = Path(run_dir)
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    if "gan" in raw and "role" not in raw:  # a manipseg train run that trained G jointly
        d, v = raw["data"], raw["validation"]
        size = int(d["size"]) - int(d["size"]) % 32 or 32
        raw = {"role": "blender", "train": {"seed": int(raw["train"]["seed"])},
               "data": {"root": d["root"], "sources": d["sources"], "size": size, "val_sources": v["sources"]}}
    cfg = _validate(raw, str(run_dir / "config.yaml"))
    if cfg["role"] != "blender":
        raise ValueError(f"{run_dir}: Fig. 4 shows the blender; this run trained a {cfg['role']}")
    cfg["data"]["val_count"] = max(int(rows), 1)
    val = validation_batch(cfg)
    m = to_signed(val["image"].float() / 255.0)
    t = to_signed(val["target"].float() / 255.0)
    k = (val["mask"] > 0.5).float()
    snaps = snapshots(run_dir)
    pick = sorted(set(np.linspace(0, len(snaps) - 1, min(columns, len(snaps))).round().astype(int).tolist()))
    outputs = []
    for i in pick:
        step, path = snaps[i]
        G, _ = load_generator_file(path, "blender")
        with torch.no_grad():
            outputs.append((step, G(m, k)))
    table = []
    for r in range(m.shape[0]):
        row = [_label(_rgb(t[r]), "T"), (k[r, 0].numpy() * 255).astype(np.uint8), _label(_rgb(m[r]), "M")]
        row += [_label(_rgb(o[r]), f"step {step}") for step, o in outputs]
        diff = ((outputs[-1][1][r] - m[r]).abs().mean(0) * 4 * 127.5).clamp(0, 255).byte().numpy()
        row.append(_label(np.repeat(diff[:, :, None], 3, axis=2), "|G-M| x4"))
        table.append(row)
    return save_png(out, grid(table, cell=cell))
