"""Speed and memory of the GSR-Net networks on this machine.

Prints, for each architecture (rates from wall time and from process CPU time divided by the thread count;
the latter estimates an otherwise idle machine when other jobs share the cores):
  * training images/s at SIZE^2 (forward + backward + Adam step, both heads' cross-entropy), with
    bf16 autocast + channels_last and with plain fp32, median and range over repeats;
  * inference seconds per megapixel through GSRDetector (normalisation, tiling, softmax, blending) on
    1 MP and 12 MP images, each in a fresh subprocess so the peak RSS is that of inference alone;
  * the largest / mean difference of the probability map between bf16 and fp32 inference, and between
    tiled and untiled inference.

Random-init weights unless --weights is given (then that file's architecture only).

    python benchmarks/bench_models.py                       # both archs, batch 16, 256 px
    python benchmarks/bench_models.py --arch compact --repeats 5
    python benchmarks/bench_models.py --weights run/model.safetensors --skip-train
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def train_speed(arch: str, batch: int, size: int, steps: int, repeats: int, bf16: bool) -> tuple[list[float], list[float]]:
    """Images/s from wall time, and from process CPU time / threads (the rate on an otherwise idle machine)."""
    import torch
    import torch.nn.functional as F

    from manipseg.device import autocast
    from manipseg.models.nets import build_network, normalise

    torch.manual_seed(0)
    net = build_network(arch).train()
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-5)
    x = normalise(torch.rand(batch, 3, size, size)).contiguous(memory_format=fmt)
    seg = torch.zeros(batch, size, size, dtype=torch.long)
    seg[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    weight = torch.tensor([0.3, 0.7])

    def step() -> None:
        with autocast("cpu", bf16):
            out = net(x)
        loss = F.cross_entropy(out["seg"].float(), seg) + F.cross_entropy(out["boundary"].float(), seg, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN kernel selection)
    wall, cpu = [], []
    threads = torch.get_num_threads()
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall.append(batch * steps / (time.perf_counter() - t0))
        cpu.append(batch * steps / ((time.process_time() - c0) / threads))
    return wall, cpu


def infer_one(arch: str, megapixels: float, bf16: bool, weights: str | None) -> dict:
    """Runs in a subprocess: time GSRDetector.predict on a synthetic photo-like image; report peak RSS."""
    import numpy as np
    import torch

    from manipseg.models.gsr import _ARCH_CLASSES, GSRDetector
    from manipseg.models.nets import build_network

    torch.manual_seed(0)
    if weights:
        det = GSRDetector.from_weights(weights, bf16=bf16)
    else:
        det = _ARCH_CLASSES[arch](model=build_network(arch).eval(), bf16=bf16)
    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(megapixels * 1e6 / h))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    import cv2

    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    noise += img
    img = np.clip(noise, 0, 255).astype(np.uint8)
    del noise, base
    rss_before = peak_rss_mb()
    det.predict(img[:256, :256])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    pred = det.predict(img)
    seconds, cpu = time.perf_counter() - t0, (time.process_time() - c0) / torch.get_num_threads()
    mp = h * w / 1e6
    return {"arch": arch, "megapixels": mp, "size": f"{w}x{h}", "seconds": seconds, "s_per_mp": seconds / mp,
            "cpu_s_per_mp": cpu / mp, "tiles": pred.extras["tiles"], "bf16": pred.extras["bf16"],
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's at fork time)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bf16_difference(arch: str, weights: str | None) -> dict:
    import numpy as np
    import torch
    from skimage import data

    from manipseg.models.gsr import _ARCH_CLASSES, GSRDetector
    from manipseg.models.nets import build_network

    torch.manual_seed(0)
    net = None if weights else build_network(arch).eval()
    make = (lambda b: GSRDetector.from_weights(weights, bf16=b)) if weights else (lambda b: _ARCH_CLASSES[arch](model=net, bf16=b))
    img = data.astronaut()
    p16, p32 = make(True).predict(img).prob, make(False).predict(img).prob
    d = np.abs(p16 - p32)
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "p99_abs": float(np.percentile(d, 99)),
            "mask_disagreement": float(((p16 > 0.5) != (p32 > 0.5)).mean())}


def tiling_difference(arch: str, weights: str | None, tile: int) -> dict:
    """Tiled (``tile`` px) vs untiled probability maps on a 3x up-scaled skimage astronaut (1536x1536)."""
    import cv2
    import numpy as np
    import torch
    from skimage import data

    from manipseg.models.gsr import _ARCH_CLASSES, GSRDetector
    from manipseg.models.nets import build_network

    torch.manual_seed(0)
    img = cv2.resize(data.astronaut(), (1536, 1536), interpolation=cv2.INTER_CUBIC)
    if weights:
        whole = GSRDetector.from_weights(weights, max_pixels=img.shape[0] * img.shape[1])
        tiled = GSRDetector.from_weights(weights, tile=tile)
    else:
        net = build_network(arch).eval()
        whole = _ARCH_CLASSES[arch](model=net, max_pixels=img.shape[0] * img.shape[1])
        tiled = _ARCH_CLASSES[arch](model=net, tile=tile)
    pw, pt = whole.predict(img), tiled.predict(img)
    d = np.abs(pw.prob - pt.prob)
    return {"tiles": pt.extras["tiles"], "max_abs": float(d.max()), "p99_abs": float(np.percentile(d, 99)),
            "mean_abs": float(d.mean()), "mask_disagreement": float(((pw.prob > 0.5) != (pt.prob > 0.5)).mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["compact", "gsr-vgg16"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="training steps per repeat (VGG uses 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 12.0])
    ap.add_argument("--weights", help="benchmark a trained weights file instead of random init")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice, usually all cores)")
    ap.add_argument("--tile", type=int, default=1024, help="tile size for the tiled-vs-whole comparison")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-fp32", action="store_true", help="only the bf16 + channels_last configuration")
    ap.add_argument("--infer-one", nargs=3, metavar=("ARCH", "MP", "BF16"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.infer_one:
        arch, mp, bf16 = args.infer_one
        print(json.dumps(infer_one(arch, float(mp), bf16 == "1", args.weights)))
        return 0

    import torch

    from manipseg.device import bf16_supported

    archs = args.arch
    if args.weights:
        from manipseg.models.weights import load_weights

        archs = [load_weights(args.weights)[1]["arch"]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 supported: {bf16_supported()}")
    modes = [True] if args.skip_fp32 else [True, False]
    for arch in archs:
        if not args.skip_train:
            steps = args.steps if arch == "compact" else 1
            for bf16 in modes:
                wall, cpu = train_speed(arch, args.batch, args.size, steps, args.repeats, bf16)
                label = "bf16+channels_last" if bf16 else "fp32"
                print(f"[train] {arch:9s} {label:18s} batch {args.batch} {args.size}px: "
                      f"{statistics.median(wall):6.2f} img/s wall (range {min(wall):.2f}-{max(wall):.2f}), "
                      
                      f"{statistics.median(cpu):6.2f} img/s by CPU time (range {min(cpu):.2f}-{max(cpu):.2f}), "
                      f"n={len(wall)}", flush=True)
        for mp in args.megapixels:
            for bf16 in modes:
                cmd = [sys.executable, __file__, "--infer-one", arch, str(mp), "1" if bf16 else "0"]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.weights:
                    cmd += ["--weights", args.weights]
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if res.returncode:
                    print(f"[infer] {arch} {mp} MP failed:\n{res.stderr[-2000:]}")
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"[infer] {arch:9s} {'bf16' if r['bf16'] else 'fp32'} {r['size']:>9s} ({r['megapixels']:.1f} MP, "
                      f"{r['tiles']} tiles): {r['seconds']:.2f} s = {r['s_per_mp']:.3f} s/MP wall, "
                      f"{r['cpu_s_per_mp']:.3f} s/MP by CPU time, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB (after import {r['rss_before_mb']:.0f} MB)", flush=True)
        if len(modes) == 2:
            d = bf16_difference(arch, args.weights)
            print(f"[bf16-vs-fp32] {arch}: prob |diff| max {d['max_abs']:.4f}, p99 {d['p99_abs']:.4f}, "
                  f"mean {d['mean_abs']:.5f}; mask (0.5) disagreement {100 * d['mask_disagreement']:.3f}% of pixels")
        t = tiling_difference(arch, args.weights, args.tile)
        print(f"[tiled-vs-whole] {arch}: {t['tiles']} tiles of <= {args.tile} px on 1536x1536: prob |diff| max "
              f"{t['max_abs']:.4f}, p99 {t['p99_abs']:.4f}, mean {t['mean_abs']:.5f}; mask (0.5) disagreement "
              f"{100 * t['mask_disagreement']:.3f}% of pixels", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
