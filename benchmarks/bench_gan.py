"""Speed and size of the GAN generators: ``python benchmarks/bench_gan.py [--generator FILE] [--size 256]``.

Prints parameters, weights-file size, inference images/s of the blender / inpainter and training
steps/s of G + D at the training crop size, on this machine's CPU with the given thread count."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--generator", default=None, help="a blender .safetensors (default: an untrained default-size G)")
    p.add_argument("--size", type=int, default=256, help="inference image side")
    p.add_argument("--train-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from manipseg.gan import Blender, BlenderGAN, GanSettings, Inpainter, UNetGenerator, save_generator

    settings = GanSettings()
    G = UNetGenerator(**settings.generator, identity_init=True)
    path = Path(a.generator) if a.generator else Path(tempfile.mkdtemp()) / "g.safetensors"
    if not a.generator:
        save_generator(path, G, "blender")
    blender = Blender(path)
    n = sum(t.numel() for t in blender.G.parameters())
    print(f"generator: {n / 1e6:.2f} M parameters, {path.stat().st_size / 1e6:.2f} MB ({path.name}), threads={a.threads}")
    x = torch.rand(a.batch, 3, a.size, a.size)
    k = torch.zeros(a.batch, 1, a.size, a.size)
    k[:, :, a.size // 4: a.size // 2, a.size // 4: a.size // 2] = 1
    for name, fn in (("blender", blender), ("inpainter (same net)", Inpainter(blender.G))):
        fn(x, k)
        t = time.perf_counter()
        for _ in range(a.repeats):
            fn(x, k)
        dt = (time.perf_counter() - t) / a.repeats
        print(f"{name}: {a.batch / dt:.1f} images/s at {a.size}x{a.size}")
    pair = BlenderGAN(settings)
    s = a.train_size
    m, t_, src = (torch.rand(a.batch, 3, s, s) * 2 - 1 for _ in range(3))
    kk = torch.zeros(a.batch, 1, s, s)
    kk[:, :, s // 4: s // 2, s // 4: s // 2] = 1
    pair.step(m, kk, t_, src)
    t = time.perf_counter()
    for _ in range(a.repeats):
        pair.step(m, kk, t_, src)
    dt = (time.perf_counter() - t) / a.repeats
    print(f"training G + D (width {settings.discriminator['width']}): {1 / dt:.2f} steps/s, batch {a.batch} at {s}x{s}")


if __name__ == "__main__":
    main()
