"""Real forgeries (e.g. CASIA 2.0) for training and validation, read with :mod:`manipseg.eval.datasets`."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..eval.datasets import open_dataset
from ..io import ImageLoadError
from ..postprocess import boundary_of

log = logging.getLogger("manipseg.train")


def _tampered(path: str | os.PathLike, fmt: str):
    ds = open_dataset(path, fmt)
    keep = [i for i, s in enumerate(ds.samples) if not s.authentic and s.mask_path is not None]
    if not keep:
        raise ValueError(f"{path}: the dataset has no tampered image with a mask")
    return ds, keep


class RealCrops(Dataset):
    """Random ``size`` x ``size`` crops of a forgery dataset's tampered images with their masks.

    Item ``j`` is image ``j % n`` cropped at a position drawn from ``j`` (deterministic); images smaller
    than ``size`` are first enlarged (bilinear; masks nearest). Items: image uint8 [3,S,S], mask and
    boundary (5-pixel, as GSR-Net) float [1,S,S]. Unreadable images are skipped with a warning.
    """

    def __init__(self, path: str | os.PathLike, fmt: str = "auto", size: int = 256, boundary_width: int = 5) -> None:
        self.ds, self.keep = _tampered(path, fmt)
        self.size, self.boundary_width = int(size), int(boundary_width)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([int(j), 0xC0FFEE])
        for attempt in range(len(self.keep)):
            i = self.keep[(int(j) + attempt) % len(self.keep)]
            try:
                image, mask = self.ds.load(i)
            except (ImageLoadError, ValueError, OSError) as exc:
                log.warning("skipping unreadable training forgery %s: %s", self.ds.samples[i].image_path, exc)
                continue
            return self._crop(image, mask, rng)
        raise RuntimeError(f"no readable image in the training forgeries at {self.ds.root}")

    def _crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        s = self.size
        h, w = image.shape[:2]
        if min(h, w) < s:
            f = s / min(h, w)
            nw, nh = max(s, round(w * f)), max(s, round(h * f))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
            h, w = nh, nw
        y, x = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        image, mask = image[y:y + s, x:x + s], mask[y:y + s, x:x + s]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask.astype(np.float32)[None]),
            "boundary": torch.from_numpy(boundary_of(mask, self.boundary_width).astype(np.float32)[None]),
        }


def load_forgeries(path: str | os.PathLike, fmt: str = "auto", max_images: int = 50,
                   max_side: int = 1024) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``max_images`` (image, mask) pairs of a forgery dataset for validation, each downscaled so its
    longest side is at most ``max_side`` (area interpolation; masks nearest). Unreadable files are skipped."""
    ds, keep = _tampered(path, fmt)
    out = []
    for i in keep[:max_images] if max_images else keep:
        try:
            image, mask = ds.load(i)
        except (ImageLoadError, ValueError, OSError) as exc:
            log.warning("skipping unreadable validation image %s: %s", ds.samples[i].image_path, exc)
            continue
        h, w = image.shape[:2]
        if max_side and max(h, w) > max_side:
            f = max_side / max(h, w)
            size = (max(8, round(w * f)), max(8, round(h * f)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        out.append((image, mask))
    if not out:
        raise ValueError(f"{path}: no readable tampered image for validation")
    return out
