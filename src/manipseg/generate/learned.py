"""The learned generators as generation kinds: ``gan`` (GSR-Net blender) and ``inpaint-gan`` (SEIGAN-style
object removal), mixed with the engine's classical kinds by :class:`LearnedDataset`.

- ``gan``: a ``splice`` copy-paste M (drawn without post-processing), blended by G(K, M) inside K
  dilated by ``composite_width`` pixels (bit-exact M elsewhere), then the engine's post-processing
  chain. K is the pasted region, as in the paper (G also retouches the ``composite_width`` band
  around it).
- ``inpaint-gan``: a ``removal`` hole K in an authentic photo T, filled by G_inp (pixels outside K are T's),
  then post-processing. The classical inpainting (``removal``) stays the fast default.

Sample ``i`` is still a pure function of (seed, i, sources, config) *and the generator weights*.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from .config import as_config
from .core import Sample, make_sample, rng_for
from .dataset import SyntheticDataset, derive_seed
from .post import apply_post
from ..postprocess import boundary_of

#: learned kind -> the engine kind whose geometry it starts from
LEARNED_KINDS = {"gan": "splice", "inpaint-gan": "removal"}


class LearnedDataset(SyntheticDataset):
    """:class:`~manipseg.generate.SyntheticDataset` that also knows ``gan`` and ``inpaint-gan``.

    generator / inpainter: ``.safetensors`` files of a trained blender / inpainter (loaded lazily, so the
    dataset pickles cheaply into worker processes); required when the matching kind is asked for.
    """

    def __init__(self, sources, kinds: Sequence[str], size: int = 256, length: int = 10000, seed: int = 0,
                 config=None, kind_weights: Sequence[float] | None = None, generator: str | os.PathLike | None = None,
                 inpainter: str | os.PathLike | None = None, composite_width: int = 5, device: str = "cpu") -> None:
        kinds = list(kinds)
        base = sorted({LEARNED_KINDS.get(k, k) for k in kinds})
        super().__init__(sources, base, size, length, seed, config)
        if "gan" in kinds and not generator:
            raise ValueError("kind 'gan' needs a trained blender: --generator gan-blender.safetensors "
                             "(train one with: manipseg train configs/gan/gan_blender.yaml)")
        if "inpaint-gan" in kinds and not inpainter:
            raise ValueError("kind 'inpaint-gan' needs a trained inpainter: --inpainter FILE.safetensors "
                             "(train one with: manipseg train configs/gan/gan_inpainter.yaml)")
        if kind_weights is not None and (len(kind_weights) != len(kinds) or min(kind_weights) < 0 or sum(kind_weights) <= 0):
            raise ValueError("kind_weights must give one non-negative weight per kind, not all zero")
        w = np.ones(len(kinds)) if kind_weights is None else np.asarray(kind_weights, dtype=np.float64)
        self.kinds, self.kind_p = kinds, w / w.sum()
        self.generator_path = str(generator) if generator else None
        self.inpainter_path = str(inpainter) if inpainter else None
        self.composite_width, self.device = int(composite_width), device
        self._nets: dict[str, object] = {}

    def _net(self, role: str):
        if role not in self._nets:
            from ..gan.model import Blender, Inpainter

            self._nets[role] = (Blender(self.generator_path, self.device, self.composite_width) if role == "blender"
                                else Inpainter(self.inpainter_path, self.device))
        return self._nets[role]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_nets"] = {}
        return state

    def sample(self, index: int) -> Sample:
        kind = self.kind_of(index)
        if kind not in LEARNED_KINDS:
            return super().sample(index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        seed = derive_seed(self.seed, index)
        cfg = as_config(self.config)
        raw = make_sample(LEARNED_KINDS[kind], seed, self.pool, self.size, replace(cfg, post=replace(cfg.post, enabled=False)))
        k = torch.from_numpy(raw.mask.astype(np.float32))[None, None]
        if kind == "gan":
            x = torch.from_numpy(np.array(raw.image)).permute(2, 0, 1)[None].float() / 255.0
            y = self._net("blender")(x, k)
        else:
            x = torch.from_numpy(np.array(raw.target)).permute(2, 0, 1)[None].float() / 255.0
            y = self._net("inpainter")(x, k)
        out = (y[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        meta = dict(raw.meta, kind=kind, base_kind=raw.meta["kind"])
        net = self._net("blender" if kind == "gan" else "inpainter")
        meta["generator"] = {"file": os.path.basename(self.generator_path if kind == "gan" else self.inpainter_path),
                             "step": net.meta.get("step")}
        if kind == "gan":
            meta["composite_width"] = self.composite_width
        else:
            meta["method"] = "inpaint-gan"
        (out, target, source), meta["post"] = apply_post(rng_for(kind, seed), [out, raw.target, raw.source], cfg.post)
        return Sample(image=np.ascontiguousarray(out), mask=raw.mask, boundary=boundary_of(raw.mask, cfg.boundary_width),
                      target=None if target is None else np.ascontiguousarray(target),
                      source=None if source is None else np.ascontiguousarray(source), meta=meta)
