"""Regenerate the bundled example forgeries in src/manipseg/examples/.

The sources are public-domain / CC0 photos that ship inside scikit-image (astronaut, coffee, chelsea,
rocket, ...); the forgeries are made by manipseg's own generation engine with fixed seeds, so the
examples are reproducible byte for byte with the same NumPy/OpenCV builds:

    python scripts/make_examples.py
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from manipseg.generate import ImagePool, make_sample
from manipseg.io import save_png

SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
#: (output name, manipulation kind, seed)
EXAMPLES = [("splice", "splice", 11), ("copymove", "copymove", 5), ("removal", "removal", 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src" / "manipseg" / "examples"))
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SOURCES:
            Image.fromarray(getattr(data, name)()).save(Path(tmp) / f"{name}.png")
        pool = ImagePool([tmp], size=args.size, annotations=False)
        no_post = {"post": {"jpeg_prob": 0.0, "resize_prob": 0.0, "blur_prob": 0.0, "noise_prob": 0.0}}
        for name, kind, seed in EXAMPLES:
            s = make_sample(kind, seed, pool, size=args.size, config=no_post)
            save_png(out / f"{name}.png", s.image)
            save_png(out / f"{name}_mask.png", s.mask.astype(np.uint8) * 255)
            print(f"{name}: {kind} seed {seed}, {100 * s.mask.mean():.1f}% of pixels, sources {s.meta.get('sources', s.meta)}")


if __name__ == "__main__":
    main()
