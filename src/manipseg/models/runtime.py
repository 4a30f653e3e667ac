"""Where a segmentation network runs on the CPU: torch (fp32, or bf16 autocast where measured faster), or
ONNX Runtime (fp32) — chosen by measurement, not by CPU flags.

On CPUs without AMX, torch's fp32 convolutions with the compact network's few channels are 2-3x slower
than ONNX Runtime's (measured on a 2-core AMD EPYC: 0.58 s vs 0.23 s for a 0.8-MP input); with AMX, torch
bf16 is faster still. So at first use on a machine, :func:`choose` times both on the same input and keeps
the faster (cached per CPU model, thread count, library versions and architecture in
``~/.cache/manipseg/runtime.json``); ``MANIPSEG_RUNTIME=torch|onnx`` forces one.

The ONNX graph is the network without its input padding (the caller pads to the stride as torch does),
with dynamic height and width, exported from the folded (batch norm merged) network. It ships beside the
bundled weights (``<name>.onnx``, made by ``scripts/ship_model.py``); for other weights it is exported once
into the cache (needs the ``onnx`` package) and identified by the weights' SHA-256, which the graph's
metadata records, so a stale graph is never used for new weights.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")


class RuntimeChoiceError(ValueError):
    """An unknown runtime name, or ``onnx`` asked for where it cannot run."""


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class _Core(nn.Module):
    """The network from padded input to head logits (what the ONNX graph holds)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        sides, context = self.net.features(x)
        hp, wp = x.shape[-2:]
        seg, boundary = self.net.heads(sides, context, (hp // self.net.head_stride, wp // self.net.head_stride))
        return (seg, boundary) if boundary is not None else (seg,)


def export_onnx(net: nn.Module, path: str | os.PathLike, weights_sha256: str | None = None) -> Path:
    """Export ``net`` (a non-DCT :class:`~manipseg.models.nets.SegNet`, batch norm folded here) to ONNX at
    ``path`` (written atomically), recording ``weights_sha256`` in the graph's metadata."""
    import warnings

    from .nets import fold_batchnorm

    try:
        import onnx
    except ImportError as exc:
        raise RuntimeChoiceError("exporting a network to ONNX needs the onnx package: pip install onnx") from exc
    from ..io import atomic_write

    if getattr(net, "dct_stream", False):
        raise RuntimeChoiceError("networks with a DCT stream run in torch only (two inputs, not exported)")
    core = _Core(fold_batchnorm(net)).eval()
    s = int(net.stride)
    x = torch.zeros(1, 3, 12 * s, 16 * s)
    outputs = ["seg", "boundary"] if len(core(x)) == 2 else ["seg"]
    axes = {"x": {2: "h", 3: "w"}, **{o: {2: f"{o}_h", 3: f"{o}_w"} for o in outputs}}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches (static here)
            torch.onnx.export(core, (x,), str(tmp), input_names=["x"], output_names=outputs, dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        model = onnx.load(str(tmp))
        meta = {"weights_sha256": weights_sha256 or "", "arch": str(getattr(net, "arch", "")),
                "stride": str(s), "producer": "manipseg"}
        for k, v in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(model, str(tmp))

    return atomic_write(path, write)


def graph_sha256(path: str | os.PathLike) -> str | None:
    """The weights checksum recorded in an ONNX graph exported by :func:`export_onnx`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.get_modelmeta().custom_metadata_map.get("weights_sha256") or None


class OnnxNetwork:
    """An ONNX Runtime session over an exported network: ``run(x)`` with ``x`` a padded [1, 3, H, W] tensor
    returns the head logits as torch tensors, like ``_Core``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get("weights_sha256") or None
        self.n_outputs = len(self.session.get_outputs())

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        arr = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())
        outs = self.session.run(None, {"x": arr})
        seg = torch.from_numpy(outs[0])
        return seg, (torch.from_numpy(outs[1]) if self.n_outputs > 1 else None)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "manipseg"


def onnx_graph_for(net: nn.Module, weights: str | os.PathLike | None, weights_sha256: str | None) -> Path | None:
    """The ONNX graph of these weights: the shipped ``<weights>.onnx`` if its checksum matches, else one
    exported into the cache (None when it cannot be had: no onnx package, a DCT network, no checksum)."""
    if getattr(net, "dct_stream", False) or not weights_sha256:
        return None
    if weights is not None:
        beside = Path(weights).with_suffix(".onnx")
        if beside.is_file():
            if graph_sha256(beside) == weights_sha256:
                return beside
            log.warning("%s was exported from other weights than %s: not used", beside, weights)
    cached = _cache_dir() / "onnx" / f"{weights_sha256}.onnx"
    if cached.is_file():
        return cached
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return None
    try:
        return export_onnx(net, cached, weights_sha256)
    except (OSError, RuntimeError) as exc:  # a read-only cache, an exporter failure: torch it is
        log.warning("cannot export the network to ONNX in %s (%s); running it in torch", cached, exc)
        return None


def _speed_key(net: nn.Module, bf16: bool) -> str:
    import onnxruntime as ort

    from ..device import _cpu_model

    arch = json.dumps({"arch": getattr(net, "arch", ""), **getattr(net, "arch_kwargs", {})}, sort_keys=True, default=str)
    return (f"{_cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
            f"{' bf16' if bf16 else ''} | onnxruntime {ort.__version__} | {arch}")


def measure(net: nn.Module, onnx_net: OnnxNetwork, bf16: bool, side: int = 384, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of one forward pass on a ``side`` x ``side`` input: torch (with bf16
    autocast when ``bf16``) and ONNX Runtime."""
    from ..device import autocast

    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    xc = x.contiguous(memory_format=torch.channels_last)
    core = _Core(net).eval()

    def best(fn) -> float:
        fn()  # first run: kernel selection, memory planning
        t = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
        return t

    def run_torch() -> None:
        with torch.inference_mode(), autocast("cpu", bf16):
            core(xc)

    return {"torch": best(run_torch), "onnx": best(lambda: onnx_net.run(x))}


@functools.lru_cache(maxsize=None)
def _cached_choice(key: str) -> str | None:
    path = _cache_dir() / "runtime.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return None
    entry = cache.get(key)
    return entry.get("runtime") if isinstance(entry, dict) else None


def _remember(key: str, times: dict[str, float], runtime: str) -> None:
    path = _cache_dir() / "runtime.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    cache[key] = {"runtime": runtime, **{f"{k}_s": round(v, 4) for k, v in times.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: the choice is still made, just not remembered
        log.debug("cannot cache the runtime choice in %s: %s", path, exc)
    _cached_choice.cache_clear()


def choose(requested: str, net: nn.Module, device: torch.device, weights: str | os.PathLike | None,
           weights_sha256: str | None, bf16: bool) -> tuple[str, OnnxNetwork | None]:
    """The runtime to use (``"torch"`` or ``"onnx"``) and, for ONNX, its session.

    ``requested`` is ``auto`` (measure once, cached), ``torch`` or ``onnx`` (an error if it cannot run);
    the environment variable ``MANIPSEG_RUNTIME`` overrides it."""
    forced = os.environ.get("MANIPSEG_RUNTIME", "").strip().lower()
    if forced:
        requested = forced
    if requested not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch", None
    why_not = None
    if device.type != "cpu":
        why_not = f"the ONNX runtime here runs on the CPU only (device is {device})"
    elif not onnxruntime_available():
        why_not = "onnxruntime is not installed (pip install onnxruntime)"
    graph = None if why_not else onnx_graph_for(net, weights, weights_sha256)
    if why_not is None and graph is None:
        why_not = ("no ONNX graph for these weights (a DCT-stream network, weights without a checksum, or the "
                   "onnx package missing to export one)")
    if why_not is not None:
        if requested == "onnx":
            raise RuntimeChoiceError(f"runtime 'onnx' cannot be used: {why_not}")
        return "torch", None
    onnx_net = OnnxNetwork(graph)
    if requested == "onnx":
        return "onnx", onnx_net
    key = _speed_key(net, bf16)
    choice = _cached_choice(key)
    if choice not in ("torch", "onnx"):
        times = measure(net, onnx_net, bf16)
        choice = "onnx" if times["onnx"] < times["torch"] else "torch"
        log.info("network runtime measured on this CPU: torch%s %.3f s, onnxruntime %.3f s -> %s",
                 " bf16" if bf16 else "", times["torch"], times["onnx"], choice)
        _remember(key, times, choice)
    return choice, (onnx_net if choice == "onnx" else None)


def export_beside(weights: str | os.PathLike) -> Path:
    """Export the network of a weights file to ``<weights>.onnx`` beside it (what ships with the bundled
    weights, so users need only onnxruntime); returns the graph's path."""
    from .weights import network_from_weights, read_header

    net, _ = network_from_weights(weights)
    return export_onnx(net, Path(weights).with_suffix(".onnx"), read_header(weights).get("sha256"))
