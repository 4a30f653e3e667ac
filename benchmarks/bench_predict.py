"""What a user waits for: ``manipseg predict`` end to end on a 12-MP photo with real texture.

The test photo is a mosaic of the public-domain photos that ship inside the scikit-image and scikit-learn
wheels, tiled at their native pixels (no up-scaling: real camera texture, edges and noise, not a smooth
up-sampled image) to 4000 x 3000 and saved as JPEG quality 92, like a phone photo. Each configuration runs
the CLI in a fresh process (``python -m manipseg predict PHOTO --out DIR --model M``) and reports

* wall seconds and seconds per megapixel of the whole command (start-up, decoding, analysis, the 16-bit
  probability PNG, mask and overlay), the median of ``--repeats`` runs;
* the start-up alone (the same command on a 64 x 64 photo);
* peak resident memory of the process (VmHWM);
* the time inside the detector (``predictions.jsonl`` "seconds" covers load + predict + writing; the
  detector's own time is measured in-process with ``--in-process``).

``--bf16 off`` forces fp32 (``MANIPSEG_BF16=0``), which is what a CPU without fast bf16 (no AMX, or
AVX512-BF16 slower than fp32) runs; ``auto`` lets manipseg measure and decide (the default for users).

    python benchmarks/bench_predict.py --models gsr-fused gsr-compact --bf16 auto off --threads 2 1
    python benchmarks/bench_predict.py --in-process --models gsr-compact --bf16 off
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def mosaic(width: int = 4000, height: int = 3000, seed: int = 0) -> np.ndarray:
    """A ``height`` x ``width`` RGB mosaic of the photos shipped in the scikit-image / scikit-learn wheels."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    tiles = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry(),
             *load_sample_images().images]
    tiles = [t[:, :, :3] if t.ndim == 3 else np.repeat(t[:, :, None], 3, axis=2) for t in tiles]
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.uint8)
    y = 0
    while y < height:
        x, row_h = 0, 0
        while x < width:
            t = tiles[int(rng.integers(len(tiles)))]
            if rng.random() < 0.5:
                t = t[:, ::-1]
            h, w = min(t.shape[0], height - y), min(t.shape[1], width - x)
            out[y:y + h, x:x + w] = t[:h, :w]
            x += w
            row_h = max(row_h, h)
        y += row_h
    return out


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    import cv2

    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])


_RUNNER = """
import sys
sys.argv = ["manipseg"] + sys.argv[1:]
try:
    from manipseg.cli import main
    code = main(sys.argv[1:])
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
    sys.stderr.write("VMHWM_KB " + (hwm[0].split()[1] if hwm else "0") + "\\n")
sys.exit(code)
"""


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one ``manipseg`` command in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"manipseg {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    kb = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM_KB")]
    return wall, (kb[-1] / 1024 / 1024 if kb else float("nan"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["gsr-fused"])
    p.add_argument("--bf16", nargs="+", choices=("auto", "off", "on"), default=["auto", "off"])
    p.add_argument("--threads", nargs="+", type=int, default=[2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--in-process", action="store_true", help="also time detector.predict alone in this process")
    args = p.parse_args(argv)

    width = int(round(np.sqrt(args.megapixels * 1e6 * 4 / 3)))
    height = int(round(width * 3 / 4))
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    photo, tiny = work / "mosaic.jpg", work / "tiny.jpg"
    img = mosaic(width, height)
    _write_jpeg(photo, img)
    _write_jpeg(tiny, img[:64, :64])
    mp = width * height / 1e6
    print(f"photo: {width} x {height} = {mp:.1f} MP mosaic of real photos, JPEG 92 ({photo.stat().st_size / 1e6:.1f} MB)")
    print("| model | bf16 | threads | start-up s | end-to-end s | s/MP | peak RAM GB | detector alone s/MP |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for bf16 in args.bf16:
            for threads in args.threads:
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                env.pop("MANIPSEG_BF16", None)
                if bf16 != "auto":
                    env["MANIPSEG_BF16"] = "1" if bf16 == "on" else "0"
                common = ["--model", model, "--no-progress"]
                start = statistics.median(run_cli(["predict", str(tiny), "--out", str(work / "o-tiny"), *common], env)[0]
                                          for _ in range(max(1, args.repeats)))
                runs = [run_cli(["predict", str(photo), "--out", str(work / "o"), *common], env)
                        for _ in range(max(1, args.repeats))]
                wall = statistics.median(r[0] for r in runs)
                ram = max(r[1] for r in runs)
                alone = "–"
                if args.in_process:
                    alone = f"{in_process(model, img, threads, bf16, args.repeats) / mp:.3f}"
                print(f"| {model} | {bf16} | {threads} | {start:.2f} | {wall:.2f} | {wall / mp:.3f} | {ram:.2f} | {alone} |",
                      flush=True)
    return 0


def in_process(model: str, img: np.ndarray, threads: int, bf16: str, repeats: int) -> float:
    """Median seconds of ``detector.predict`` alone (after a warm-up), with these threads and bf16 setting."""
    code = f"""
import os, statistics, time, json, sys
os.environ.pop("MANIPSEG_BF16", None)
{'' if bf16 == 'auto' else f'os.environ["MANIPSEG_BF16"] = "{1 if bf16 == "on" else 0}"'}
import numpy as np, torch, cv2
torch.set_num_threads({threads}); cv2.setNumThreads({threads})
from manipseg.registry import load_detector
img = np.load(sys.argv[1])
det = load_detector({model!r})
det.predict(img)
runs = []
for _ in range({max(1, repeats)}):
    t0 = time.perf_counter(); det.predict(img); runs.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(runs)))
"""
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as fh:
        np.save(fh, img)
    try:
        out = subprocess.run([sys.executable, "-c", code, fh.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    return float(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    sys.exit(main())
