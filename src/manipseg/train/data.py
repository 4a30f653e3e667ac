"""Training inputs: generated forgeries, real forgeries, flips, the G(M) hook and the step sampler.

Every training sample is a pure function of ``(seed, global index)``: the index picks real vs generated
data and the flips with its own random generator, and the generation engine is itself deterministic per
index. The sampler hands rank ``r`` of ``W`` at step ``s`` the indices ``(s * W + r) * B + b``, so resuming
at step ``s`` (the "sampler position" stored in checkpoints) continues the same stream, and DDP ranks see
disjoint shards without a DistributedSampler.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

class StepSampler(Sampler[list[int]]):
    """Batches of global indices for steps ``start_step, start_step + 1, ...`` (``stop_step`` excluded)."""

    def __init__(self, batch_size: int, start_step: int, stop_step: int, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start, self.stop, self.rank, self.world = batch_size, start_step, stop_step, rank, world

    def indices(self, step: int) -> list[int]:
        base = (step * self.world + self.rank) * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _flip(x: torch.Tensor, h: bool, v: bool) -> torch.Tensor:
    dims = [d for d, on in ((-1, h), (-2, v)) if on]
    return torch.flip(x, dims) if dims else x


class TrainingSet(Dataset):
    """Mixes generated samples and real forgeries, applies random flips; deterministic per index.

    synthetic: a dataset of generation-engine samples (dicts, see :mod:`manipseg.generate`), or None.
    real:      a dataset of real forgeries yielding ``{"image", "mask", "boundary"}`` tensors, or None.
    real_weight: probability that an index draws a real forgery.
    splice_code: the ``kind`` integer of copy-paste samples in ``synthetic`` (for the G(M) hook).

    Items: image uint8 [3,H,W], mask/boundary float [1,H,W], target / source uint8 [3,H,W] (zeros when absent),
    has_target / has_source bool, is_splice bool, is_real bool.
    """

    def __init__(self, synthetic: Dataset | None, real: Dataset | None, real_weight: float, seed: int,
                 flip: bool = True, splice_code: int | None = None) -> None:
        if synthetic is None and real is None:
            raise ValueError("TrainingSet needs generated samples, real forgeries or both")
        if real is None:
            real_weight = 0.0
        if synthetic is None:
            real_weight = 1.0
        self.synthetic, self.real, self.real_weight = synthetic, real, float(real_weight)
        self.seed, self.flip, self.splice_code = int(seed), bool(flip), splice_code

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index), 0x5EED])
        use_real = rng.random() < self.real_weight
        flip_h, flip_v = (rng.random(2) < 0.5) if self.flip else (False, False)
        if use_real:
            assert self.real is not None
            s = self.real[int(rng.integers(2**40))]  # RealCrops: image j % n, crop position from j
            image, mask, boundary = s["image"], s["mask"], s["boundary"]
            target = source = torch.zeros_like(image)
            has_target = has_source = is_splice = False
        else:
            assert self.synthetic is not None
            s = self.synthetic[int(index) % len(self.synthetic)]
            image, mask, boundary = s["image"], s["mask"], s["boundary"]
            has_target = bool(s.get("has_target", False))
            target = s["target"] if has_target else torch.zeros_like(image)
            has_source = bool(s.get("has_source", False))
            source = s["source"] if has_source else torch.zeros_like(image)
            is_splice = self.splice_code is not None and int(s["kind"]) == self.splice_code
        out = {
            "image": _flip(image, flip_h, flip_v).contiguous(),
            "mask": _flip(mask.float(), flip_h, flip_v).contiguous(),
            "boundary": _flip(boundary.float(), flip_h, flip_v).contiguous(),
            "target": _flip(target, flip_h, flip_v).contiguous(),
            "source": _flip(source, flip_h, flip_v).contiguous(),  # aligned S (zeros when absent), for G's losses
            "has_target": torch.tensor(has_target),
            "has_source": torch.tensor(has_source),
            "is_splice": torch.tensor(is_splice),
            "is_real": torch.tensor(use_real),
        }
        return out


# -- the G(M) hook (paper §3.1; the learned GAN blender is manipseg.gan) -----------------------------------
Generator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_generator(spec: str | Callable | None, args: dict[str, Any] | None = None) -> Generator | None:
    """Resolve ``data.generator``.

    ``spec`` is a callable or a ``"package.module:attr"`` string. If ``attr`` is a class or factory and
    ``args`` is given, it is called with ``**args`` to build the generator. The generator is called as
    ``G(images, masks)`` with float ``[B, 3, H, W]`` images in [0, 1] and float ``[B, 1, H, W]`` masks K,
    and returns blended images of the same shape in [0, 1] (paper's G(K, M)).
    """
    if spec is None:
        return None
    if callable(spec):
        obj: Any = spec
    else:
        module_name, sep, attr = str(spec).partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"data.generator must look like 'package.module:callable', got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"data.generator {spec!r}: cannot import {module_name!r}: {exc}") from exc
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"data.generator {spec!r}: {module_name} has no attribute {attr!r}")
            obj = getattr(obj, part)
    if args:
        obj = obj(**args)
    if not callable(obj):
        raise ValueError(f"data.generator {spec!r} is not callable")
    return obj


def apply_generator(generator: Generator, images: torch.Tensor, masks: torch.Tensor,
                    select: torch.Tensor) -> torch.Tensor:
    """Replace the selected uint8 images M by G(M) (computed without gradients), checking G's output."""
    if not bool(select.any()):
        return images
    idx = select.nonzero().flatten()
    with torch.no_grad():
        x = images[idx].float() / 255.0
        y = generator(x, masks[idx].float())
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ValueError(f"the generator returned {getattr(y, 'shape', type(y))}, expected a tensor of shape "
                         f"{tuple(x.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("the generator returned NaN or infinite values")
    out = images.clone()
    out[idx] = (y.clamp(0.0, 1.0) * 255.0).round().to(images.dtype)
    return out


def generated_selection(indices: Sequence[int], is_splice: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Which copy-paste samples of a batch go through G: a deterministic coin per global index."""
    if fraction <= 0:
        return torch.zeros_like(is_splice, dtype=torch.bool)
    coins = torch.tensor([np.random.default_rng([seed, int(i), 0x6A4]).random() < fraction for i in indices])
    return coins & is_splice.bool()

