"""Standalone training of the blender G(K, M) + D, or of the inpainter G_inp + D (no segmenter).

``manipseg train configs/gan/gan_blender.yaml --out RUN_DIR [--resume]`` (the config says ``recipe: gan``)

Data come from the generation engine: copy-pastes (``splice``: M, K, T and the aligned S) for the
blender, authentic images with removal-shaped holes (``removal``: K and T) for the inpainter. Sample
``i`` is a pure function of ``(seed, i)``, so ``--resume`` continues the same stream. Outputs in
``RUN_DIR``: ``config.yaml``, ``train.csv`` (losses, held-out L_bg / hole L1), ``checkpoints/`` (G, D,
both optimisers, step, RNG; ``torch.load(weights_only=True)``), ``snapshots/G_XXXXXXXX.safetensors``
(the generator every ``snapshot_every`` steps, for the Fig. 4 grid) and ``generator.safetensors``.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..gan.model import BlenderGAN, GanSettings, InpainterGAN, save_generator, to_signed
from . import checkpoint as ckpt
from .config import ConfigError, _closest, apply_overrides, load_raw, resolve_path, without_recipe
from .engine import Clock, Engine, Plan, Recipe, StepCheckpoints

log = logging.getLogger("manipseg.gan")

DEFAULTS: dict[str, Any] = {
    "role": "blender",                # "blender" (G(K, M), paper §3.1) or "inpainter" (SEIGAN-style G_inp)
    "data": {
        "root": None,                 # base of relative paths (default $MANIPSEG_DATA or ../shared/data)
        "sources": ["natural/coco/images", "natural/bsds500/images"],
        "size": 128,                  # training crop side (the paper uses 256; G is fully convolutional)
        "generate": {},               # generation-engine options (manipseg.generate.GenConfig)
        "val_sources": ["natural/sun-hays"],  # held-out photos for validation and the Fig. 4 grid
        "val_count": 16,
    },
    "model": {
        "generator": {"width": 16, "depth": 5, "max_width": 128, "identity_init": True},
        "discriminator": {"width": 32},      # 64 in pix2pix/the paper; the 70x70 field does not depend on it
    },
    # Eq. 7's λ (paper: 1, 2, 5); pixel_scale multiplies the L1 terms (1: pixels in [-1, 1])
    "loss": {"grad": 1.0, "edge": 2.0, "adv": 5.0, "edge_width": 5, "pixel_scale": 1.0},
    "optim": {"lr": 1.0e-4, "betas": [0.5, 0.999]},
    "train": {
        "steps": 3000, "batch_size": 4, "seed": 0, "bf16": True, "num_workers": 1, "threads": None,
        "log_every": 20, "val_every": 100, "snapshot_every": 250, "checkpoint_every": 100, "keep": 2,
    },
}
CSV_FIELDS = ["step", "g_total", "g_bg", "g_grad", "g_edge", "g_adv", "g_hole", "g_valid", "d_loss",
              "val_bg", "val_bg_255", "val_hole", "imgs_per_s"]
_FREE = {("model", "generator"), ("model", "discriminator"), ("data", "generate")}


def _validate(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in without_recipe(raw, "gan", origin).items():
        if key not in DEFAULTS:
            raise ConfigError(f"{origin}: unknown key {key!r}.{_closest(key, list(DEFAULTS))}")
        if isinstance(DEFAULTS[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {key} must be a mapping")
            for k, v in value.items():
                if k not in DEFAULTS[key]:
                    raise ConfigError(f"{origin}: unknown key {key}.{k}.{_closest(k, list(DEFAULTS[key]))}")
                cfg[key][k] = dict(DEFAULTS[key][k], **v) if (key, k) in _FREE and key == "model" else v
        else:
            cfg[key] = value
    if cfg["role"] not in ("blender", "inpainter"):
        raise ConfigError(f"{origin}: role must be 'blender' or 'inpainter', got {cfg['role']!r}")
    t = cfg["train"]
    for k in ("steps", "batch_size", "log_every", "val_every", "snapshot_every", "checkpoint_every", "keep"):
        if not isinstance(t[k], int) or t[k] <= 0:
            raise ConfigError(f"{origin}: train.{k} must be a positive integer, got {t[k]!r}")
    mult = 2 ** int(cfg["model"]["generator"].get("depth", 5))
    if int(cfg["data"]["size"]) % mult or int(cfg["data"]["size"]) < 2 * mult:
        raise ConfigError(f"{origin}: data.size must be a multiple of {mult} (2**generator depth) and >= {2 * mult}")
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a GAN training config (``extends:`` and ``--set key=value`` overrides as in ``manipseg train``)."""
    return _validate(apply_overrides(load_raw(path), overrides or []), str(path))


def settings_of(cfg: dict[str, Any]) -> GanSettings:
    lo = cfg["loss"]
    return GanSettings.from_dict({"generator": cfg["model"]["generator"], "discriminator": cfg["model"]["discriminator"],
                                  "lr": float(cfg["optim"]["lr"]), "betas": cfg["optim"]["betas"],
                                  "weights": {"grad": float(lo["grad"]), "edge": float(lo["edge"]), "adv": float(lo["adv"])},
                                  "edge_width": int(lo["edge_width"]), "pixel_scale": float(lo["pixel_scale"]),
                                  "bf16": bool(cfg["train"]["bf16"])})


def _dataset(cfg: dict[str, Any], sources: list[str], length: int, seed: int):
    from ..generate import SyntheticDataset

    d = cfg["data"]
    dirs = [str(resolve_path(s, d["root"])) for s in sources]
    missing = [p for p in dirs if not Path(p).is_dir()]
    if missing:
        raise ConfigError(f"photo folder(s) not found: {', '.join(missing)} (set data.root or $MANIPSEG_DATA)")
    kind = "splice" if cfg["role"] == "blender" else "removal"
    return SyntheticDataset(dirs, [kind], int(d["size"]), int(length), int(seed), d["generate"] or None)


def validation_batch(cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The fixed held-out samples (stacked) used for validation losses and the Fig. 4 grid."""
    n = int(cfg["data"]["val_count"])
    ds = _dataset(cfg, cfg["data"]["val_sources"], n, int(cfg["train"]["seed"]) + 1_000_003)
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "target", "source")}


def _prepare(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    f = lambda k: to_signed(batch[k].to(device).float() / 255.0)  # noqa: E731
    return f("image"), (batch["mask"].to(device) > 0.5).float(), f("target"), f("source")


def _val_stats(pair, val: dict[str, torch.Tensor], role: str) -> dict[str, float]:
    from ..gan.losses import loss_bg, masked_l1

    image, mask, target, _ = _prepare(val, pair.device)
    pair.G.eval()
    with torch.no_grad():
        if role == "blender":
            out = pair.generate(image, mask)
            bg = float(loss_bg(out, target, mask))
            # the same in 8-bit levels per channel (mean |G - T| on background pixels)
            return {"val_bg": bg, "val_bg_255": bg / 3.0 * 127.5}
        _, raw = pair.composite(target, mask)
        return {"val_hole": float(masked_l1(raw, target, mask > 0.5))}


class GanRun(Recipe):
    """One standalone GAN training run in ``run_dir`` (see the module docstring): the GAN recipe of the
    training :class:`~manipseg.train.engine.Engine`. ``max_minutes``: a time budget."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | os.PathLike, device: str = "cpu",
                 max_minutes: float | None = None) -> None:
        from ..device import resolve_device

        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), resolve_device(device)
        self.max_minutes = max_minutes

    def run(self, resume: bool = False, force: bool = False) -> int:
        """Train (or continue with ``resume``); returns the last step. A folder that already holds a run is
        refused unless ``resume`` continues it or ``force`` starts over."""
        return Engine(self, self.max_minutes).run(resume=resume, force=force).step

    def plan(self) -> Plan:
        t = self.cfg["train"]
        return Plan(run_dir=self.run_dir, steps=int(t["steps"]), images_per_step=int(t["batch_size"]),
                    csv_fields=CSV_FIELDS, checkpoints=StepCheckpoints(self.run_dir, int(t["keep"])),
                    log_every=int(t["log_every"]), validate_every=int(t["val_every"]),
                    checkpoint_every=int(t["checkpoint_every"]), loss_key="g_total", outputs=("generator.safetensors",))

    def setup(self, checkpoint: dict[str, Any] | None, clock: Clock) -> int:
        from torch.utils.data import DataLoader

        from .data import StepSampler

        cfg, t = self.cfg, self.cfg["train"]
        if t["threads"]:
            torch.set_num_threads(int(t["threads"]))
        torch.manual_seed(int(t["seed"]))
        role = cfg["role"]
        self.pair = (BlenderGAN if role == "blender" else InpainterGAN)(settings_of(cfg), self.device)
        start = 0
        if checkpoint is not None:
            path = ckpt.latest_checkpoint(self.run_dir)
            for section in ("role", "data", "model", "loss", "optim"):
                if checkpoint["config"].get(section) != cfg[section]:
                    raise ConfigError(f"{path}: trained with a different {section!r}; resume with the same config")
            self.load_state_dict(checkpoint)
            start = int(checkpoint["step"])
            log.info("resumed %s at step %d", path, start)
        steps, bs = int(t["steps"]), int(t["batch_size"])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        self._val = validation_batch(cfg)
        ds = _dataset(cfg, cfg["data"]["sources"], steps * bs, int(t["seed"]))
        workers = int(t["num_workers"])
        loader = DataLoader(ds, batch_sampler=StepSampler(bs, start, steps), num_workers=workers,
                            prefetch_factor=4 if workers else None, persistent_workers=False)
        if start == 0:
            self._snapshot(0)
        self._batches = iter(loader)
        return start

    def step(self, step: int) -> dict[str, float]:
        batch = next(self._batches, None)
        if batch is None:
            raise RuntimeError(f"the data loader stopped at step {step} before train.steps={self.cfg['train']['steps']}")
        if self.cfg["role"] == "blender":
            image, mask, target, source = _prepare(batch, self.device)
            stats, _ = self.pair.step(image, mask, target, source)
        else:
            _, mask, target, _ = _prepare(batch, self.device)
            stats, _ = self.pair.step(target, mask)
        if not all(np.isfinite(v) for v in stats.values()):
            raise RuntimeError(f"step {step + 1}: non-finite loss {stats}; lower optim.lr")
        return stats

    def row(self, step: int, history: list[dict[str, float]]) -> dict[str, Any]:
        row = super().row(step, history)
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        return row

    def validate(self) -> dict[str, float]:
        return _val_stats(self.pair, self._val, self.cfg["role"])

    def after_step(self, step: int, validation: dict[str, float] | None) -> None:
        t = self.cfg["train"]
        if validation:
            log.info("validation at step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in validation.items()))
        if step % int(t["snapshot_every"]) == 0 or step == int(t["steps"]):
            self._snapshot(step)

    def state_dict(self) -> dict[str, Any]:
        return {"pair": self.pair.state_dict(), "config": self.cfg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pair.load_state_dict(state["pair"])
        ckpt.set_rng_state(state["rng"])

    def export(self, step: int, validation: dict[str, float]) -> Path:
        path = self.run_dir / "generator.safetensors"
        save_generator(path, self.pair.G, self.cfg["role"], {"step": step, "config": self.cfg})
        return path

    def _snapshot(self, step: int) -> None:
        save_generator(self.run_dir / "snapshots" / f"G_{step:08d}.safetensors", self.pair.G, self.cfg["role"],
                       {"step": step, "config": self.cfg})
