"""What the network costs on this CPU: multiply-accumulates per megapixel, the rate ONNX Runtime reaches, and
whether int8 static quantisation pays off here.

* GMAC/MP: every convolution's output elements x (input channels / groups) x kernel area, counted with forward
  hooks on a 512 x 512 input of the network in ``--weights``;
* fp32: the shipped (or exported) ONNX graph on one ``--side`` x ``--side`` tile of real photos, 2 runs after
  a warm-up, ``--threads`` intra-op threads;
* int8: the same graph quantised by ONNX Runtime (QDQ, per-channel weights, uint8 activations, convolutions
  only), calibrated on ``--calibration`` authentic photos of the shared data (never MISD / NoSo), timed the
  same way, with its largest and mean change of the probabilities against fp32.

    python benchmarks/bench_network_cost.py                      # the bundled gsr-compact
    python benchmarks/bench_network_cost.py --weights W.safetensors --side 1024 --threads 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def gmac_per_mp(weights: Path) -> float:
    import torch

    from manipseg.models.weights import network_from_weights

    net, _ = network_from_weights(weights)
    total = [0]

    def hook(m, _inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, 3, 512, 512))
    return total[0] / (512 * 512) * 1e6 / 1e9


def photos(data: Path, n: int) -> list[np.ndarray]:
    from manipseg.io import list_images, load_image

    files = list(list_images([str(data / "natural" / "sun-hays")]).files)[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} photos in {data / 'natural' / 'sun-hays'}, found {len(files)}")
    out = []
    for f in files:
        im = load_image(f)
        out.append(np.ascontiguousarray(im[:im.shape[0] // 8 * 8, :im.shape[1] // 8 * 8]))
    return out


def feed(image: np.ndarray) -> dict[str, np.ndarray]:
    from manipseg.models.tiling import normalisation

    scale, offset = normalisation(image)
    return {"image": image[None], "scale": np.asarray(scale, np.float32), "offset": np.asarray(offset, np.float32)}


def timed(graph: Path, inputs: dict, threads: int) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, inputs)[0]
    t0 = time.perf_counter()
    for _ in range(2):
        sess.run(None, inputs)
    return (time.perf_counter() - t0) / 2, out


def main(argv: list[str] | None = None) -> int:
    from manipseg.paths import data_root, shipped

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=shipped("gsr-compact.safetensors"))
    p.add_argument("--graph", type=Path, default=None, help="its ONNX graph (default: beside the weights)")
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--side", type=int, default=2048, help="tile side for the timing (default 2048 = 4.2 MP)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=int, default=32, help="authentic photos calibrating int8 (default 32)")
    p.add_argument("--no-int8", action="store_true")
    args = p.parse_args(argv)
    graph = args.graph or args.weights.with_suffix(".onnx")
    if not graph.is_file():
        raise SystemExit(f"no ONNX graph at {graph}: export one with manipseg.models.runtime.export_beside(WEIGHTS)")
    from manipseg.machine import cpu_model

    print(f"CPU {cpu_model()} | {args.threads} threads | {args.weights.name}")
    print(f"convolutions: {gmac_per_mp(args.weights):.1f} GMAC per megapixel")
    cal = photos(data_root(args.data), args.calibration)
    tile = np.tile(cal[0], (-(-args.side // cal[0].shape[0]), -(-args.side // cal[0].shape[1]), 1))
    tile = np.ascontiguousarray(tile[:args.side, :args.side])
    mp = args.side * args.side / 1e6
    inputs = feed(tile)
    t32, ref = timed(graph, inputs, args.threads)
    print(f"fp32 ONNX Runtime: {t32 / mp:.3f} s/MP ({mp:.1f}-MP tile)")
    if args.no_int8:
        return 0
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([feed(im) for im in cal])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, q8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(graph), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
        t8, out = timed(q8, inputs, args.threads)
    diff = np.abs(out - ref)
    print(f"int8 ONNX Runtime: {t8 / mp:.3f} s/MP ({t32 / t8:.2f}x fp32's speed); probability change max "
          f"{diff.max():.3f}, mean {diff.mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
