"""Tiny seeded runs of the three training recipes, recording every step's losses at full precision.

They go through the public entry points only (``Trainer.run``, ``GanRun.run``, ``faces.train.train``) and
record the losses with spies on functions every version of the loops calls (the GAN pair's ``step``, the
faces module's ``losses``), so the same code measures the loops before and after a refactoring.

``tests/data/engine_losses.json`` was written by ``PYTHONPATH=src python tests/engine_support.py`` with the
training loops of commit be70c4a (before the shared Engine, ``manipseg.train.engine``); ``tests/test_engine.py``
checks that the Engine gives the same numbers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "engine_losses.json"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def photos_folder(folder: Path) -> Path:
    """Four public-domain scikit-image photos as PNG (as the ``photos`` fixture of conftest.py)."""
    from skimage import data

    from manipseg.io import save_png

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        save_png(folder / f"{name}.png", getattr(data, name)())
    return folder


# -- segmentation --------------------------------------------------------------------------------------------
def segment_cfg(**sections):
    from test_train_loop import _cfg

    return _cfg(**sections)


def segment_trainer(cfg, run_dir, **kw):
    from test_train_loop import _trainer

    return _trainer(cfg, run_dir, **kw)


def segment_losses(run_dir: Path, steps: int = 6, resume: bool = False) -> list[float]:
    """Total loss of every step of the seeded toy run of tests/test_train_loop.py (``Squares``, ``_cfg``)."""
    return segment_trainer(segment_cfg(train={"steps": steps}), run_dir).run(resume=resume).losses


# -- GAN pre-training ----------------------------------------------------------------------------------------
def gan_cfg(photos: Path, role: str = "blender", steps: int = 4):
    from manipseg.train.gan_pretrain import _validate

    return _validate({"role": role,
                      "data": {"root": str(photos), "sources": [str(photos)], "size": 32,
                               "val_sources": [str(photos)], "val_count": 2},
                      "model": {"generator": {"width": 4, "depth": 3, "max_width": 16}, "discriminator": {"width": 4}},
                      "train": {"steps": steps, "batch_size": 2, "bf16": False, "num_workers": 0, "threads": 1,
                                "log_every": 1, "val_every": 2, "snapshot_every": 2, "checkpoint_every": 2}},
                     "engine-fixture")


def gan_losses(photos: Path, run_dir: Path, role: str = "blender", resume: bool = False,
               steps: int = 4) -> list[dict[str, float]]:
    """The generator's and discriminator's losses of every step of a tiny GanRun."""
    from manipseg.gan.model import BlenderGAN, InpainterGAN
    from manipseg.train.gan_pretrain import GanRun

    cls = BlenderGAN if role == "blender" else InpainterGAN
    seen: list[dict[str, float]] = []
    real = cls.step

    def spy(self, *args, **kwargs):
        stats, out = real(self, *args, **kwargs)
        seen.append(dict(stats))
        return stats, out

    cls.step = spy
    try:
        GanRun(gan_cfg(photos, role, steps), run_dir).run(resume=resume)
    finally:
        cls.step = real
    return seen


# -- faces ---------------------------------------------------------------------------------------------------
def face_sets():
    """Eight 64-pixel crops of two photos with template landmarks: 6 for training, 2 for validation
    (as tests/test_faces.py's end-to-end training test)."""
    import cv2
    from skimage import data

    from manipseg.faces.data import FaceSet
    from test_faces import template_landmarks

    lm = template_landmarks(64)
    crops = []
    for img in (data.astronaut(), data.coffee()):
        for k in range(4):
            y, x = 20 * k, 30 * k
            crops.append(cv2.resize(np.ascontiguousarray(img[y:y + 300, x:x + 300]), (64, 64), interpolation=cv2.INTER_AREA))
    fs = FaceSet(np.stack(crops), np.repeat(lm[None], 8, 0).astype(np.float32), np.array([0, 0, 1, 1, 2, 2, 3, 3]),
                 np.array([f"f{i}.png" for i in range(8)]))
    return fs.subset(np.arange(6)), fs.subset(np.arange(6, 8))


def faces_cfg(steps: int = 6):
    from manipseg.faces.train import TrainConfig

    return TrainConfig(pairs_per_batch=2, steps=steps, eval_every=2, bf16=False, threads=1, warmup=1, p_paste=0.5,
                       model={"size": 64, "widths": [8, 8, 8, 8], "blocks": [1, 1, 1, 1]})


class FacesSpy:
    """Replaces the data collection of faces.train by :func:`face_sets` and records every step's losses."""

    def __init__(self) -> None:
        from manipseg.faces import train as T

        self.T, self.seen = T, []
        self._real_losses, self._real_split = T.losses, T.split_train_val
        train_set, val_set = face_sets()

        def losses(*args, **kwargs):
            parts = self._real_losses(*args, **kwargs)
            self.seen.append({k: float(v.detach()) for k, v in parts.items()})
            return parts

        self._losses = losses
        self._split = lambda cfg, size, cache: (train_set, val_set, {"train_faces": 6})

    def __enter__(self) -> "FacesSpy":
        self.T.losses, self.T.split_train_val = self._losses, self._split
        return self

    def __exit__(self, *exc) -> None:
        self.T.losses, self.T.split_train_val = self._real_losses, self._real_split


def faces_losses(run_dir: Path, steps: int = 6) -> list[dict[str, float]]:
    from manipseg.faces.train import train

    with FacesSpy() as spy:
        train(faces_cfg(steps), run_dir)
    return spy.seen


def record(work: Path) -> dict:
    torch.set_num_threads(1)
    photos = photos_folder(work / "photos")
    return {
        "_produced_by": "PYTHONPATH=src python tests/engine_support.py with the training loops of commit be70c4a "
                        "(train/loop.py Trainer, train/gan_pretrain.py GanRun, faces/train.py train) before the "
                        "shared Engine; one torch thread; see tests/engine_support.py",
        "segment": segment_losses(work / "segment"),
        "gan_blender": gan_losses(photos, work / "gan_blender", "blender"),
        "gan_inpainter": gan_losses(photos, work / "gan_inpainter", "inpainter"),
        "faces": faces_losses(work / "faces"),
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = record(Path(tmp))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")
