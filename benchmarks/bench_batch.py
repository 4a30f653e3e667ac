"""Batch analysis throughput: ``manipseg predict`` over a folder with 1 and 2 worker processes and with Ray.

The photos are crops of the public-domain photos shipped in the scikit-image / scikit-learn wheels (real
texture, JPEG 92), ``--size`` pixels on the long side. Each configuration runs the CLI in a fresh process and
reports images per second of the whole command (start-up included) and after start-up (the wall time
less that of the same command on one tiny photo), peak resident memory of the whole process
tree and of the largest single process (a worker), and, for Ray, the cost of its start-up (the same command
on one tiny photo, Ray minus in-process). ``--resume-test N`` also runs N photos, interrupts the run with
Ctrl-C half-way, resumes it and checks that the second run analysed only the rest.

    python benchmarks/bench_batch.py --images 48 --size 1024 --model gsr-fused
    python benchmarks/bench_batch.py --images 0 --resume-test 1000 --size 256
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import mosaic  # noqa: E402


def make_photos(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` JPEG crops (``size`` x 3/4 ``size``) of a mosaic of the wheels' photos, each crop different."""
    import numpy as np

    from manipseg.io import save_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    h, w = (size * 3) // 4, size
    big = mosaic(max(2 * w, 2000), max(2 * h, 1500), seed=seed)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        y, x = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
        p = folder / f"photo{i:05d}.jpg"
        save_jpeg(p, big[y:y + h, x:x + w], quality=92)
        paths.append(p)
    return paths


def _tree_rss(root: int) -> tuple[int, int]:
    """(total, largest) resident bytes of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="utf-8") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total = largest = 0
    stack = [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", encoding="utf-8") as fh:
                rss = int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            rss = 0
        total += rss
        largest = max(largest, rss)
        stack.extend(children.get(pid, []))
    return total, largest


class MemoryWatch(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.total, self.largest = pid, every, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t, big = _tree_rss(self.pid)
            self.total, self.largest = max(self.total, t), max(self.largest, big)
            self.stop.wait(self.every)


def run_predict(src: Path, out: Path, model: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "manipseg", "predict", str(src), "--model", model, "--out", str(out),
           "--no-progress", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = MemoryWatch(proc.pid)
    watch.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    watch.stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"wall": wall, "peak_total": watch.total, "peak_process": watch.largest}


def resume_test(folder: Path, n: int, size: int, model: str, workers: int) -> None:
    src = folder / f"resume-{n}"
    make_photos(src, n, size, seed=1)
    out = folder / f"resume-{n}-out"
    cmd = [sys.executable, "-m", "manipseg", "predict", str(src), "--model", model, "--out", str(out),
           "--no-progress", "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "predictions.jsonl"
    while proc.poll() is None:
        if os.environ.get("BENCH_DEBUG") and jsonl.is_file():
            print(len(jsonl.read_text().splitlines()), end=" ", file=sys.stderr, flush=True)
        if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= n // 2:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    _, err = proc.communicate()
    first = len(jsonl.read_text().splitlines())
    t1 = time.perf_counter()
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    t2 = time.perf_counter()
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    inputs = [r["input"] for r in lines]
    import sqlite3

    rows = sqlite3.connect(out / "index.sqlite").execute("select count(*) from results").fetchone()[0]
    ok = (proc.returncode == 130 and res.returncode == 0 and len(inputs) == n == len(set(inputs)) == rows
          and f"({first} kept from the earlier run)" in res.stdout)
    print(f"\nresume test, {n} photos of {size} px, {workers} worker(s): interrupted (exit {proc.returncode}) after "
          f"{first} in {t1 - t0:.1f} s; resumed run analysed {n - first} in {t2 - t1:.1f} s (exit {res.returncode}); "
          f"predictions.jsonl {len(inputs)} lines, {len(set(inputs))} distinct, index {rows} rows -> "
          f"{'OK' if ok else 'FAILED'}")
    if not ok:
        print(err[-1500:], res.stderr[-1500:], file=sys.stderr)
        raise SystemExit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=1024, help="long side of the photos in pixels (default 1024)")
    p.add_argument("--model", default="gsr-fused")
    p.add_argument("--configs", nargs="+", default=["1", "2", "ray"],
                   help="worker counts and/or 'ray' (Ray local, one worker per CPU)")
    p.add_argument("--resume-test", type=int, default=0, metavar="N")
    p.add_argument("--resume-workers", type=int, default=2)
    args = p.parse_args()
    import platform

    from manipseg.parallel import cpu_count

    with tempfile.TemporaryDirectory(prefix="manipseg-bench-batch-") as tmp:
        folder = Path(tmp)
        if args.images:
            src = folder / "photos"
            make_photos(src, args.images, args.size)
            tiny = folder / "tiny"
            make_photos(tiny, 1, 64)
            mp = (args.size * (args.size * 3 // 4)) / 1e6
            print(f"{args.images} photos of {args.size} x {args.size * 3 // 4} ({mp:.2f} MP), model {args.model}, "
                  f"{cpu_count()} CPUs ({platform.processor() or platform.machine()})")
            print("| run | wall s | images/s (whole command) | images/s after start-up | peak RAM, all processes GB | "
                  "peak RAM, largest process GB | start-up s (1 tiny photo) |")
            print("|---|---|---|---|---|---|---|")
            for cfg in args.configs:
                extra = ["--ray"] if cfg == "ray" else ["--workers", cfg]
                label = "Ray local" if cfg == "ray" else f"{cfg} worker{'s' if cfg != '1' else ''}"
                start = run_predict(tiny, folder / f"tiny-{cfg}", args.model, extra)["wall"]
                r = run_predict(src, folder / f"out-{cfg}", args.model, extra)
                rate = args.images / (r["wall"] - start) if r["wall"] > start else None
                print(f"| {label} | {r['wall']:.1f} | {args.images / r['wall']:.2f} | "
                      f"{'-' if rate is None else f'{rate:.2f}'} | {r['peak_total'] / 2**30:.2f} | "
                      f"{r['peak_process'] / 2**30:.2f} | {start:.1f} |", flush=True)
        if args.resume_test:
            resume_test(folder, args.resume_test, args.size, args.model, args.resume_workers)


if __name__ == "__main__":
    main()
