"""On-the-fly training data: the generator as a ``torch.utils.data.Dataset``."""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from ..io import ImageLoadError
from .config import GenConfig, as_config
from .core import KINDS, Sample, make_sample
from .pool import ImagePool

log = logging.getLogger(__name__)

try:  # torch is a dependency, but keep the numpy API usable without it
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover
    _Base = object  # type: ignore[assignment,misc]


def derive_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The 63-bit seed of sample ``index`` of a run seeded ``seed`` (independent of worker and order)."""
    state = np.random.SeedSequence([int(seed), int(index), int(attempt)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class SyntheticDataset(_Base):
    """``length`` samples drawn from ``sources``; sample ``i`` is ``make_sample(kind_i, derive_seed(seed, i))``.

    sources: an :class:`ImagePool` or folder(s) of authentic images.
    kinds:   manipulation kinds to mix (see ``KINDS``); ``kind_weights`` optional relative weights.
    Items are dicts of tensors: ``image`` uint8 [3,H,W], ``mask`` / ``boundary`` float32 [1,H,W],
    ``target`` / ``source`` uint8 [3,H,W] (zeros when absent) with ``has_target`` / ``has_source`` bool,
    ``kind`` int index into ``kinds``, ``index`` int.
    """

    def __init__(self, sources: ImagePool | str | os.PathLike | Sequence[str | os.PathLike], kinds: Sequence[str] = KINDS,
                 size: int = 256, length: int = 10000, seed: int = 0, config: GenConfig | dict | None = None,
                 kind_weights: Sequence[float] | None = None) -> None:
        self.pool = sources if isinstance(sources, ImagePool) else ImagePool(sources, size=size)
        self.kinds = list(kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown or missing kinds {bad or self.kinds}; choose from {', '.join(KINDS)}")
        if kind_weights is not None and (len(kind_weights) != len(self.kinds) or min(kind_weights) < 0 or sum(kind_weights) <= 0):
            raise ValueError("kind_weights must give one non-negative weight per kind, not all zero")
        w = np.ones(len(self.kinds)) if kind_weights is None else np.asarray(kind_weights, dtype=np.float64)
        self.kind_p = w / w.sum()
        self.size = int(size)
        self.length = int(length)
        self.seed = int(seed)
        self.config = as_config(config)

    def __len__(self) -> int:
        return self.length

    def kind_of(self, index: int) -> str:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 0x6B696E64]))
        return self.kinds[int(rng.choice(len(self.kinds), p=self.kind_p))]

    def sample(self, index: int) -> Sample:
        """The numpy :class:`Sample` for ``index`` (an unreadable source image makes it redraw, up to 3 times)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        kind = self.kind_of(index)
        err: Exception | None = None
        for attempt in range(3):
            try:
                return make_sample(kind, derive_seed(self.seed, index, attempt), self.pool, self.size, self.config)
            except ImageLoadError as exc:
                log.warning("sample %d: %s; redrawing", index, exc)
                err = exc
        raise RuntimeError(f"sample {index}: source images kept failing to load") from err

    def __getitem__(self, index: int) -> dict:
        import torch

        s = self.sample(int(index))
        size = self.size

        def img(a: np.ndarray | None) -> torch.Tensor:
            if a is None:
                return torch.zeros(3, size, size, dtype=torch.uint8)
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

        return {
            "image": img(s.image),
            "mask": torch.from_numpy(s.mask.astype(np.float32)[None]),
            "boundary": torch.from_numpy(s.boundary.astype(np.float32)[None]),
            "target": img(s.target),
            "has_target": torch.tensor(s.target is not None),
            "source": img(s.source),
            "has_source": torch.tensor(s.source is not None),
            "kind": torch.tensor(self.kinds.index(s.meta["kind"]), dtype=torch.long),
            "index": torch.tensor(int(index), dtype=torch.long),
        }
