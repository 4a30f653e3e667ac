"""Forgeries per second per core for each manipulation kind and for the mix, at 256² and 512².

Single process, OpenCV limited to one thread. Both samples per CPU-second of this process (the
per-core figure, robust to other load on the machine) and per wall-clock second are printed. The image pool is decoded and resized once up front
(the cache the training DataLoader workers keep), so the figures measure generation, not JPEG decoding;
the warm-up time is printed separately.

    python benchmarks/bench_generate.py                       # shared data (COCO + BSDS) if present
    python benchmarks/bench_generate.py --sources DIR --n 200 --sizes 256
    python benchmarks/bench_generate.py --profile splice      # cProfile top functions for one kind
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from manipseg.generate import KINDS, ImagePool, SyntheticDataset, make_sample
from manipseg.paths import data_root

MIX = ["splice", "copymove", "poisson", "removal", "enhance", "sbi"]


def default_sources() -> list[str]:
    nat = data_root() / "natural"
    found = [str(nat / d) for d in ("coco", "bsds500") if (nat / d).is_dir()]
    if found:
        return found
    from skimage import data

    tmp = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(tmp / f"{name}.png"), getattr(data, name)()[:, :, ::-1])
    return [str(tmp)]


def rate(fn, n: int) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=None)
    ap.add_argument("--n", type=int, default=100, help="samples per kind and size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--no-post", action="store_true", help="switch post-processing off")
    ap.add_argument("--profile", default=None, choices=KINDS + ("mixed",))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    sources = args.sources or default_sources()
    config = {"post": {"enabled": False}} if args.no_post else None
    print(f"sources: {', '.join(sources)}   opencv threads: {cv2.getNumThreads()}   post: {not args.no_post}")
    for size in args.sizes:
        pool = ImagePool(sources, size=size, cache_size=10**6)
        t = time.perf_counter()
        for i in range(len(pool)):
            pool.get(i)
        warm = time.perf_counter() - t
        print(f"\n{size}x{size}: pool of {len(pool)} images decoded+resized in {warm:.1f} s "
              f"({len(pool) / warm:.0f} images/s, paid once per worker)")
        if args.profile:
            ds = SyntheticDataset(pool, MIX, size=size, length=args.n, config=config)
            fn = (lambda i: ds.sample(i)) if args.profile == "mixed" else \
                (lambda i: make_sample(args.profile, i, pool, size, config))
            prof = cProfile.Profile()
            prof.runcall(rate, fn, args.n)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            continue
        results = {}
        for kind in KINDS:
            results[kind] = rate(lambda i, k=kind: make_sample(k, 10_000 + i, pool, size, config), args.n)
        ds = SyntheticDataset(pool, MIX, size=size, length=args.n * 3, config=config)
        results["mixed (6 forgery kinds)"] = rate(ds.sample, args.n * 3)
        print(f"  {'kind':<24} {'per CPU-second':>15} {'per wall-second':>16}")
        for name, (wall, cpu) in results.items():
            print(f"  {name:<24} {cpu:11.1f} /s   {wall:12.1f} /s   ({1000 / cpu:6.2f} ms CPU each)")
        alloc = np.mean([len(pool.objects(i)) for i in range(len(pool))])
        print(f"  (mean annotated regions per image: {alloc:.1f})")


if __name__ == "__main__":
    main()
