"""SHA-256 digests of every Self-Blended-Image path, over many seeds, to pin the random draws bit for bit.

The cases go through public entry points only, so the same code measures the SBI implementations before and
after a refactoring:

- ``engine``: the generation engine's ``sbi`` kind (``make_sample``, default config with its post-processing,
  and without post-processing) on four scikit-image photos at 96 px, and ``SyntheticDataset`` items of it;
- ``public``: ``manipseg.generate.self_blend`` on a non-square photo over a face hull and a random ellipse;
- ``faces``: ``manipseg.faces.sbi.self_blend`` on a 128-px face crop with 68 landmarks, without landmarks
  (the ellipse stand-in), with a non-default ``SBIConfig``, and on a larger photo (landmarks off the centre);
- ``photo``: ``manipseg.faces.train.photo_pair`` (the photo-level SBI of training) and ``make_batch``.

Every output array (image, mask / alpha, target, source, ...) is digested with its dtype and shape, and the
JSON-able meta with ``json.dumps(sort_keys=True)``. ``tests/data/sbi_digests.json`` was written by
``PYTHONPATH=src python tests/sbi_support.py`` with the two separate implementations of commit 2d33a9b
(``generate/core.py``'s ``_self_blend_core`` and ``faces/sbi.py``'s ``self_blend``), before the shared core;
``tests/test_sbi_core.py`` checks that the code gives the same digests. On 2026-12-04 the integer arrays got
summary statistics beside their hashes (an AVX-512 machine's OpenCV rounds some 8-bit resizes the other way,
so 162 of the 950 integer arrays differ there in a few pixels while the AVX2 machines that recorded the file
reproduce it bit for bit): the recorded hashes were kept, the statistics are those of the AVX-512 machine
(SBI code unchanged since commit f15e42a), and another CPU's arrays are compared by them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "sbi_digests.json"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SEEDS = 40
SIZE = 96


def digest(a) -> str:
    """SHA-256 of an array's dtype, shape and bytes (or of a JSON-able value, keys sorted). An array also gets
    its summary statistics (``sha|mean|std|min|max|weighted sum``): another CPU's OpenCV / NumPy kernels may
    change a floating-point array's last bits, or round an 8-bit resize or blur the other way on a few pixels
    (AVX-512 against AVX2 builds of the same OpenCV), and then :func:`same` compares those instead of the bytes."""
    h = hashlib.sha256()
    if isinstance(a, np.ndarray):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        if a.dtype.kind in "iub" and a.size:  # sha|int|mean|std|min|max|weighted mean
            x = a.astype(np.float64).ravel()
            weights = np.random.default_rng(0).random(x.size)
            stats = [x.mean(), x.std(), x.min(), x.max(), float(np.sum(weights * x)) / x.size]
            return "|".join([h.hexdigest(), "int"] + [repr(float(v)) for v in stats])
        if a.dtype.kind == "f":
            x = a.astype(np.float64).ravel()
            weights = np.random.default_rng(0).random(x.size)   # a fixed projection: moves with any real change
            # np.sum's pairwise sum, not a BLAS dot product: its rounding does not depend on the thread count
            stats = [x.mean(), x.std(), x.min(), x.max(), float(np.sum(weights * x))] if x.size else [0.0] * 5
            return "|".join([h.hexdigest()] + [repr(float(v)) for v in stats])
    else:
        h.update(json.dumps(a, sort_keys=True).encode())
    return h.hexdigest()


#: how far an 8-bit array of another CPU may move: grey levels on the mean and weighted sum per pixel (a
#: real change of a draw or of the blend moves them far more), and on the extremes
INTEGER_TOLERANCE = {"mean": 0.05, "extreme": 2.0}


def same(now: str, recorded: str, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    """Equal digests; for arrays of another machine, summary statistics equal within ``rel`` (floating point)
    or within :data:`INTEGER_TOLERANCE` (integer arrays: rounding of 8-bit kernels)."""
    if now == recorded:
        return True
    a, b = now.split("|"), recorded.split("|")
    if len(a) == 7 and len(b) == 7 and a[1] == b[1] == "int":
        if a[0] == b[0]:
            return True
        x, y = [float(v) for v in a[2:]], [float(v) for v in b[2:]]
        t = INTEGER_TOLERANCE
        return (abs(x[0] - y[0]) <= t["mean"] and abs(x[1] - y[1]) <= t["mean"] and abs(x[4] - y[4]) <= t["mean"]
                and abs(x[2] - y[2]) <= t["extreme"] and abs(x[3] - y[3]) <= t["extreme"])
    if len(a) == 6 and len(b) == 6 and a[0] == b[0]:
        return True   # the same bytes: statistics that differ in a last bit come from the summation, not the array
    if len(a) != 6 or len(b) != 6:
        return False
    return all(abs(float(p) - float(q)) <= abs_ + rel * abs(float(q)) for p, q in zip(a[1:], b[1:]))


def _sample(s) -> dict[str, str]:
    out = {name: digest(getattr(s, name)) for name in ("image", "mask", "boundary", "target", "source", "alpha")}
    out["meta"] = digest(s.meta)
    return out


def _item(item: dict) -> dict[str, str]:
    return {k: digest(v.numpy() if hasattr(v, "numpy") else v) for k, v in sorted(item.items())}


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}


def face_crop() -> np.ndarray:
    """The ``face_crop`` fixture of tests/test_faces.py."""
    return cv2.resize(photos()["astronaut"][20:220, 140:340], (128, 128), interpolation=cv2.INTER_AREA)


def engine_cases(folder: Path) -> dict[str, dict[str, str]]:
    from manipseg.generate import ImagePool, SyntheticDataset, make_sample

    folder = folder / "photos"  # the pool's ids name the folder: a fixed name, not the temporary one
    folder.mkdir()
    for name, img in photos().items():
        cv2.imwrite(str(folder / f"{name}.png"), img[:, :, ::-1])
    pool = ImagePool(folder, size=SIZE)
    out = {}
    for seed in range(SEEDS):
        out[f"engine/default/{seed}"] = _sample(make_sample("sbi", seed, pool, size=SIZE))
        out[f"engine/no-post/{seed}"] = _sample(make_sample("sbi", seed, pool, size=SIZE,
                                                            config={"post": {"enabled": False}}))
    ds = SyntheticDataset(pool, kinds=["sbi"], size=SIZE, length=10, seed=7)
    for i in range(len(ds)):
        out[f"engine/dataset/{i}"] = _item(ds[i])
    return out


def public_cases() -> dict[str, dict[str, str]]:
    from manipseg.generate import face_hull_mask, random_ellipse, self_blend
    from test_faces import template_landmarks

    img = np.ascontiguousarray(photos()["astronaut"][:240, 100:420])  # 240 x 320
    hull = face_hull_mask(template_landmarks(200) + (60, 10), img.shape[:2])
    out = {}
    for seed in range(SEEDS):
        region = hull if seed % 2 == 0 else random_ellipse(np.random.default_rng(seed), img.shape[:2], 0.1)
        config = {"post": {"enabled": False}} if seed % 4 < 2 else None
        out[f"public/{seed}"] = _sample(self_blend(img, region, seed=seed, config=config))
    return out


def faces_cases() -> dict[str, dict[str, str]]:
    from manipseg.faces import sbi
    from test_faces import template_landmarks

    crop, lm, pad = face_crop(), template_landmarks(), 96
    photo = cv2.copyMakeBorder(crop, pad, pad // 2, pad, pad * 2, cv2.BORDER_REFLECT101)  # non-square, off-centre
    other = sbi.SBIConfig(p_frequency=0.5, p_jpeg=1.0, p_hsv=1.0, p_rgb_shift=1.0, translate=(0.05, 0.05),
                          scale=(0.9, 1.1), elastic_alpha=0.06, p_forehead=1.0)
    out = {}

    def record(name: str, result) -> None:
        image, mask, label = result
        out[name] = {"image": digest(image), "mask": digest(mask), "label": digest(int(label))}

    for seed in range(SEEDS):
        record(f"faces/landmarks/{seed}", sbi.self_blend(crop, lm, np.random.default_rng(seed)))
        record(f"faces/no-landmarks/{seed}", sbi.self_blend(crop, None, np.random.default_rng(seed)))
        record(f"faces/config/{seed}", sbi.self_blend(crop, lm, np.random.default_rng(seed), other))
        record(f"faces/photo/{seed}", sbi.self_blend(photo, lm + pad, np.random.default_rng(seed)))
    return out


def photo_cases() -> dict[str, dict[str, str]]:
    from manipseg.faces import sbi
    from manipseg.faces.data import FaceSet, PhotoPatch
    from manipseg.faces.train import TrainConfig, make_batch, photo_pair
    from test_faces import template_landmarks

    astronaut = photos()["astronaut"]
    lm = template_landmarks(200) + (150, 10)
    patch = PhotoPatch(astronaut, lm)
    cfg = TrainConfig()
    out = {}
    for seed in range(SEEDS // 2):
        for augment in (True, False):
            arrays = photo_pair(patch, np.random.default_rng(seed), cfg, sbi.SBIConfig(), 64, augment=augment)
            out[f"photo/pair/{'aug' if augment else 'plain'}/{seed}"] = {
                name: digest(a) for name, a in zip(("real", "fake", "mask"), arrays)}
    crop_lm = template_landmarks(64)
    crops = np.stack([cv2.resize(astronaut[20:220, 140:340], (64, 64), interpolation=cv2.INTER_AREA),
                      cv2.resize(photos()["coffee"][50:250, 200:400], (64, 64), interpolation=cv2.INTER_AREA)])
    fs = FaceSet(crops, np.stack([crop_lm, crop_lm]), np.array([0, 1]), np.array(["a.png", "b.png"]))
    for seed in range(SEEDS // 4):
        for name, c in (("default", cfg), ("no-paste", dataclasses.replace(cfg, p_paste=0.0))):
            images, labels, masks = make_batch(fs, np.array([0, 1]), np.random.default_rng(seed), c, sbi.SBIConfig())
            out[f"photo/batch/{name}/{seed}"] = {"images": digest(np.stack(images)), "labels": digest(labels),
                                                 "masks": digest(masks)}
    return out


def compute() -> dict[str, dict[str, str]]:
    """Every case's digests (the cases of the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = engine_cases(Path(tmp))
    out.update(public_cases())
    out.update(faces_cases())
    out.update(photo_cases())
    return out


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    result = compute()
    lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(result.items())]
    FIXTURE.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {len(result)} cases to {FIXTURE}")
