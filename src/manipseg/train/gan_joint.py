"""The blender trained jointly with the segmenter inside ``manipseg train`` (paper §4.1: "optimizer of the
generator, discriminator and segmentation network are updated in an alternating fashion").

Each training step, :meth:`JointGan.train_step` makes one D and one G update (Eq. 6-7) on the batch's
copy-paste samples (those with a target T and a source S); the segmentation step then receives G(K, M)
for the configured fraction of copy-pastes through :meth:`JointGan.__call__` (the G(M) hook), computed
with the just-updated G. Configured by the ``gan`` section of the training config.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..gan.model import Blender, BlenderGAN, GanSettings, load_generator_file, save_generator, to_signed
from .config import DEFAULTS

STAT_KEYS = {"g_total": "gan_total", "g_bg": "gan_bg", "g_grad": "gan_grad", "g_edge": "gan_edge",
             "g_adv": "gan_adv", "d_loss": "gan_d"}


class JointGan:
    """G, D and their optimisers for a segmentation run; callable as the G(M) hook."""

    def __init__(self, cfg: dict[str, Any], device: str | torch.device = "cpu") -> None:
        # partial architecture mappings are completed from the defaults (e.g. {width: 8} keeps identity_init)
        settings = GanSettings.from_dict({
            "generator": {**DEFAULTS["gan"]["generator"], **cfg["generator"]},
            "discriminator": {**DEFAULTS["gan"]["discriminator"], **cfg["discriminator"]}, "lr": float(cfg["lr"]),
            "betas": cfg["betas"], "weights": cfg["weights"], "edge_width": int(cfg["edge_width"]),
            "pixel_scale": float(cfg["pixel_scale"]), "bf16": bool(cfg.get("bf16", False))})
        self.pair = BlenderGAN(settings, device)
        if cfg.get("init"):
            G, _ = load_generator_file(cfg["init"], "blender")
            shape = lambda c: {k: v for k, v in c.items() if k != "identity_init"}  # noqa: E731
            if shape(G.config) != shape(self.pair.G.config):
                raise ValueError(f"gan.init {cfg['init']}: its generator {G.config} differs from gan.generator "
                                 f"{self.pair.G.config}; set gan.generator to match")
            self.pair.G.load_state_dict(G.state_dict())
        self.blender = Blender(self.pair.G, self.pair.device, composite_width=int(cfg["composite_width"]))

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One alternating D/G update on the batch's copy-pastes; {} when it has none."""
        select = batch["is_splice"].bool() & batch["has_target"].bool() & batch["has_source"].bool()
        if not bool(select.any()):
            return {}
        idx = select.nonzero().flatten()
        dev = self.pair.device
        f = lambda k: to_signed(batch[k][idx].to(dev).float() / 255.0)  # noqa: E731
        mask = (batch["mask"][idx].to(dev) > 0.5).float()
        stats, _ = self.pair.step(f("image"), mask, f("target"), f("source"))
        return {STAT_KEYS[k]: v for k, v in stats.items()}

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        out = self.blender(images, masks)
        self.pair.G.train()
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.pair.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pair.load_state_dict(state)

    def save(self, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
        return save_generator(path, self.pair.G, "blender", meta)
