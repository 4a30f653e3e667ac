"""Time detectors in seconds per megapixel on synthetic photo-like images.

    python benchmarks/bench_detectors.py                     # every registered classical detector
    python benchmarks/bench_detectors.py --models noi gsrnet --sizes 1 4 --repeats 5 --threads 1
    python benchmarks/bench_detectors.py --models gsr-compact --sizes 1 12 --peak-ram   # + peak RSS per size

Images are skimage's astronaut resized to each size (plus mild noise, so no detector sees an easy
constant or upscaled-smooth input). Each figure is the median over ``--repeats`` timed runs after one
warm-up run; ``--threads`` pins OpenCV's and torch's thread pools for comparable figures.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np

CLASSICAL = ("noi", "cfa", "ela")


def make_image(megapixels: float, seed: int = 0) -> np.ndarray:
    """A 4:3 RGB uint8 image of about ``megapixels`` million pixels."""
    from skimage import data

    width = int(round(np.sqrt(megapixels * 1e6 * 4 / 3)))
    height = int(round(width * 3 / 4))
    image = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    image += np.random.default_rng(seed).normal(0.0, 2.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def set_threads(threads: int) -> None:
    """Pin OpenCV's and (when installed) torch's intra-op thread pools."""
    cv2.setNumThreads(threads)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)


def time_detector(detector, image: np.ndarray, repeats: int) -> float:
    detector.predict(image)  # warm-up (lazy imports, allocations, JIT)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.predict(image)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def peak_ram_gb(name: str, megapixels: float, threads: int, device: str) -> float:
    """Peak resident memory (GB) of a fresh process that loads ``name`` and analyses one image of that size."""
    cmd = [sys.executable, __file__, "--one", name, str(megapixels), "--threads", str(threads), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _one(name: str, megapixels: float, device: str) -> None:
    from manipseg import registry

    image = make_image(megapixels)
    registry.load_detector(name, device=device).predict(image)
    # VmHWM: this process's peak RSS (getrusage's ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as fh:
        hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(hwm_kb / 1024 ** 2)  # kB -> GB


def main(argv: list[str] | None = None) -> int:
    from manipseg import registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CLASSICAL), help="registered detector names or paths")
    parser.add_argument("--sizes", nargs="+", type=float, default=[1.0, 4.0], help="image sizes in megapixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per detector and size (median kept)")
    parser.add_argument("--threads", type=int, default=0, help="OpenCV/torch threads (0 = library default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-ram", action="store_true", help="also measure peak RSS per size (fresh process each)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        set_threads(args.threads)
    if args.one:
        _one(args.one[0], float(args.one[1]), args.device)
        return 0

    images = {mp: make_image(mp) for mp in args.sizes}
    header = f"{'detector':<12}" + "".join(f"{f'{mp:g} MP s':>12}{'s/MP':>9}" for mp in args.sizes)
    print(f"threads: {args.threads or 'default'}; median of {args.repeats} runs")
    print(header)
    print("-" * len(header))
    failures = 0
    for name in args.models:
        try:
            detector = registry.load_detector(name, device=args.device)
        except (registry.UnknownDetectorError, FileNotFoundError, ValueError) as exc:
            print(f"{name:<12}  cannot load: {exc}")
            failures += 1
            continue
        cells = []
        for mp, image in images.items():
            seconds = time_detector(detector, image, args.repeats)
            real_mp = image.shape[0] * image.shape[1] / 1e6
            cells.append(f"{seconds:>12.3f}{seconds / real_mp:>9.3f}")
        print(f"{name:<12}" + "".join(cells))
        if args.peak_ram:
            ram = "  ".join(f"{mp:g} MP {peak_ram_gb(name, mp, args.threads, args.device):.2f} GB" for mp in args.sizes)
            print(f"{'':<12}peak RSS (fresh process, image + detector): {ram}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
