"""Where a segmentation network runs on the CPU: torch (fp32, or bf16 autocast where measured faster), or
ONNX Runtime (fp32) — chosen by measurement, not by CPU flags.

On CPUs without AMX, torch's fp32 convolutions with the compact network's few channels are 2-3x slower
than ONNX Runtime's (measured on a 2-core AMD EPYC: 0.58 s vs 0.23 s for a 0.8-MP input); with fast bf16,
torch can be faster. So the first time a network is loaded on a machine, :func:`choose` times both on the
same input and keeps ONNX Runtime unless torch is clearly faster (:data:`TORCH_MARGIN`), cached per CPU model, thread setting, library versions and architecture in
``~/.cache/manipseg/runtime.json``; ``MANIPSEG_RUNTIME=torch|onnx|int8`` forces one.

``int8`` is another network, not another runtime of the same one: the graph quantised post-training
(:func:`quantize_graph`: int8 weights per channel, uint8 activations with ranges measured on authentic photos)
that ships beside the weights as ``<name>.int8.onnx``. It is used only when asked for (the default detector's
view asks for it: about half the fp32 graph's time on CPUs without AMX, accuracy measured in the model card).

The ONNX graph is the network from the stride-padded uint8 pixels (with the whole image's normalisation as
two small inputs) to the probabilities of both heads at the padded input's resolution (bilinear
up-sampling and sigmoid of the logit difference included), with dynamic height and width, exported from the folded (batch norm merged) network. It ships beside the bundled
weights (``<name>.onnx``, made by ``scripts/ship_model.py``); for other weights it is exported once into the
cache (needs the ``onnx`` package), named by the weights' SHA-256, which the graph's metadata records, so a
graph is never used with other weights. When the cached choice is ONNX Runtime, a detector is built from the
graph alone: torch is not even imported, which saves a second of start-up per command.

This module imports torch only inside the functions that export or measure.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir, read_json, remember
from ..header import FORMAT_VERSION, WeightsError, read_header, read_info
from ..io import atomic_write
from ..machine import cpu_model

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "int8")
#: torch is chosen only when it runs the network in less than this share of ONNX Runtime's time: importing
#: torch costs about 1.5 s per command (measured: 12-MP photo, gsr-fused end to end 4.2 s with ONNX Runtime
#: vs 5.7 s with torch bf16, although torch bf16 was 4 % faster on the network alone)
TORCH_MARGIN = 0.8
#: what the graph computes; graphs of an older format are exported again
GRAPH_FORMAT = "uint8-nhwc-probabilities-3"


class RuntimeChoiceError(ValueError):
    """An unknown runtime name, or ``onnx`` asked for where it cannot run."""


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def requested_runtime(requested: str) -> str:
    """``requested`` unless ``MANIPSEG_RUNTIME`` overrides it; an unknown name is an error."""
    forced = os.environ.get("MANIPSEG_RUNTIME", "").strip().lower()
    if forced:
        requested = forced
    if requested not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    return requested


def arch_sha256(arch: dict[str, Any]) -> str:
    """A checksum of the architecture description (name and options): with the weights' checksum it names
    a graph, since options without tensors (dilation rates...) change what the network computes."""

    return hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()


def thread_setting() -> int:
    """Threads the network may use: ``OMP_NUM_THREADS`` when set (worker processes set it), else 0 (the
    library's default: the physical cores)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


# ----- export (torch) ----------------------------------------------------------------------------------
def _core(net):
    """The network from padded input to both heads' probabilities at that resolution (the graph's content)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Core(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.net = inner

        def forward(self, image: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor):
            # uint8 [1, H, W, 3] pixels -> normalised float [1, 3, H, W] (scale, offset: whole-image statistics)
            x = image.permute(0, 3, 1, 2).to(torch.float32) * scale.view(1, -1, 1, 1) + offset.view(1, -1, 1, 1)
            sides, context = self.net.features(x)
            hp, wp = x.shape[-2:]
            seg, boundary = self.net.heads(sides, context, (hp // self.net.head_stride, wp // self.net.head_stride))

            scale = float(self.net.head_stride)  # padded size = head size x head stride, exactly

            def prob(logits: torch.Tensor) -> torch.Tensor:
                diff = logits[:, 1:2] - logits[:, 0:1]
                if scale != 1.0:
                    diff = F.interpolate(diff, scale_factor=scale, mode="bilinear", align_corners=False)
                return torch.sigmoid(diff)

            return (prob(seg), prob(boundary)) if boundary is not None else (prob(seg),)

    return Core(net).eval()


def export_onnx(net, path: str | os.PathLike, weights_sha256: str | None = None) -> Path:
    """Export ``net`` (a non-DCT :class:`~manipseg.models.nets.SegNet`, batch norm folded here) to ONNX at
    ``path`` (written atomically), recording ``weights_sha256`` and the stride in the graph's metadata."""

    import torch

    try:
        import onnx
    except ImportError as exc:
        raise RuntimeChoiceError("exporting a network to ONNX needs the onnx package: pip install onnx") from exc
    from .nets import fold_batchnorm

    if getattr(net, "dct_stream", False):
        raise RuntimeChoiceError("networks with a DCT stream run in torch only (two inputs, not exported)")
    core = _core(fold_batchnorm(net))
    s = int(net.stride)
    args = (torch.zeros(1, 12 * s, 16 * s, 3, dtype=torch.uint8), torch.ones(3), torch.zeros(3))
    # traced with gradients on: the inference-only fused oneDNN convolutions (ConvReLU) are not exportable,
    # their plain convolution + ReLU path is
    outputs = ["seg", "boundary"] if len(core(*args)) == 2 else ["seg"]
    axes = {"image": {1: "h", 2: "w"}, **{o: {2: "h", 3: "w"} for o in outputs}}

    # the TorchScript exporter (torch >= 2.5 defaults to the dynamo one, which needs onnxscript)
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    arch = arch_of({"arch": getattr(net, "arch", ""), "arch_kwargs": getattr(net, "arch_kwargs", {})})

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches (static here)
            torch.onnx.export(core, args, str(tmp), input_names=["image", "scale", "offset"], output_names=outputs,
                              dynamic_axes=axes, opset_version=17, **extra)
        model = onnx.load(str(tmp))
        meta = {"weights_sha256": weights_sha256 or "", "arch": str(getattr(net, "arch", "")), "stride": str(s),
                "arch_sha256": arch_sha256(arch), "format": GRAPH_FORMAT, "producer": "manipseg"}
        for k, v in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(model, str(tmp))

    return atomic_write(path, write)


def export_beside(weights: str | os.PathLike) -> Path:
    """Export the network of a weights file to ``<weights>.onnx`` beside it (what ships with the bundled
    weights, so users need only onnxruntime); returns the graph's path."""
    from .weights import network_from_weights

    net, _ = network_from_weights(weights)
    return export_onnx(net, Path(weights).with_suffix(".onnx"), read_header(weights).get("sha256"))


def int8_graph_path(weights: str | os.PathLike) -> Path:
    """Where the int8 graph of a weights file lives: ``<weights>.int8.onnx`` beside it."""
    return Path(weights).with_suffix(".int8.onnx")


def quantize_graph(source: str | os.PathLike, out: str | os.PathLike, feeds: list[dict[str, np.ndarray]],
                   note: str = "") -> Path:
    """Post-training int8 quantisation of an exported graph (ONNX Runtime's static QDQ quantiser): the
    convolutions' weights per output channel (int8), their inputs per tensor (uint8) with ranges measured on
    ``feeds`` (the graph's inputs for a set of calibration photos, as :meth:`OnnxNetwork.feed` builds them).
    The source graph's metadata (weights checksum, architecture, format) is kept, with ``precision: int8`` and
    ``note`` (what the ranges were measured on) added; written atomically."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ValueError("int8 quantisation needs at least one calibration input")
    meta = graph_metadata(source)
    if meta.get("precision") == "int8":
        raise ValueError(f"{source} is already an int8 graph")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as work:
            pre = Path(work) / "pre.onnx"
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"],
                            calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(tmp))
        del model.metadata_props[:]
        for k, v in {**meta, "precision": "int8", "calibration": note}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, str(v)
        onnx.save(model, str(tmp))

    return atomic_write(out, write)


def set_graph_metadata(path: str | os.PathLike, entries: dict[str, str]) -> Path:
    """Add or replace metadata entries of an ONNX graph (written atomically)."""
    import onnx

    model = onnx.load(str(path))
    meta = {e.key: e.value for e in model.metadata_props}
    meta.update({k: str(v) for k, v in entries.items()})
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


def open_int8_graph(weights: str | os.PathLike | None, weights_sha256: str | None, arch: dict[str, Any]) -> OnnxNetwork:
    """The session over the int8 graph shipped beside ``weights``; a :class:`RuntimeChoiceError` saying how
    to make one if there is none (or it belongs to other weights)."""
    if weights is None or not weights_sha256:
        raise RuntimeChoiceError("runtime 'int8' runs the int8 graph of a weights file: give the weights by path "
                                 "(a network object or weights without a checksum have none)")
    path = int8_graph_path(weights)
    if path.is_file():
        net = _open_if_usable(path, weights_sha256, arch)
        if net is not None and net.metadata.get("precision") == "int8":
            return net
        why = "it belongs to other weights or is not an int8 graph"
    else:
        why = "there is no such file"
    raise RuntimeChoiceError(f"runtime 'int8' needs the int8 graph of {weights} at {path}, but {why}; make it with "
                             f"`python scripts/quantize_int8.py {weights}`, or choose runtime auto / onnx (fp32)")


# ----- running a graph (no torch) ----------------------------------------------------------------------
def graph_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata :func:`export_onnx` recorded in a graph (weights checksum, stride, format)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is wanted
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def graph_sha256(path: str | os.PathLike) -> str | None:
    """The weights checksum recorded in an ONNX graph exported by :func:`export_onnx`."""
    return graph_metadata(path).get("weights_sha256") or None


class OnnxNetwork:
    """An ONNX Runtime session over an exported network. ``run(tile, scale, offset)``: ``tile`` an H x W x 3
    uint8 window of the image, ``scale`` / ``offset`` the whole image's normalisation
    (:func:`manipseg.models.tiling.normalisation`); returns the segmentation and boundary (or None)
    probabilities, H x W float32."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = thread_setting() if threads is None else int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # worker threads sleep between operators instead of spinning: the default fusion runs the copy-move
        # search beside the network on the same cores (12-MP photo on 2 AVX2 cores: detector 0.19 -> 0.17 s/MP,
        # the network alone no slower)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)  # what export_onnx recorded
        self.weights_sha256 = self.metadata.get("weights_sha256") or None
        self.stride = int(self.metadata.get("stride", "8"))
        self.n_outputs = len(self.session.get_outputs())

    def feed(self, tile: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for one window (padded to the stride as SegNet.pad_to_stride: reflect, or
        replicate when the input is too small to reflect)."""
        h, w = tile.shape[:2]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        x = np.ascontiguousarray(tile, dtype=np.uint8)[None]
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "edge"
            x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
        return {"image": x, "scale": np.asarray(scale, np.float32), "offset": np.asarray(offset, np.float32)}

    def run(self, tile: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = tile.shape[:2]
        outs = self.session.run(None, self.feed(tile, scale, offset))
        seg = outs[0][0, 0, :h, :w]
        return seg, (outs[1][0, 0, :h, :w] if self.n_outputs > 1 else None)


# ----- the choice --------------------------------------------------------------------------------------
def cache_graph_path(weights_sha256: str, arch: dict[str, Any]) -> Path:
    """Where the cache keeps the graph of these weights and this architecture."""
    return cache_dir() / "onnx" / f"{weights_sha256[:32]}-{arch_sha256(arch)[:16]}.onnx"


def _open_if_usable(path: Path, weights_sha256: str, arch: dict[str, Any]) -> OnnxNetwork | None:
    """A session over ``path`` if its metadata says it is the graph of these weights and architecture
    (exported in the current format); None (with a warning) if it is unreadable or another network's."""
    try:
        net = OnnxNetwork(path)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are plain Exceptions: an unreadable graph
        log.warning("cannot read the ONNX graph %s (%s): not used", path, exc)
        return None
    meta = net.metadata
    if (meta.get("weights_sha256") == weights_sha256 and meta.get("format") == GRAPH_FORMAT
            and meta.get("arch_sha256") == arch_sha256(arch)):
        return net
    log.warning("%s was exported from other weights or another architecture (or by an older manipseg): "
                "not used", path)
    return None


def open_graph(weights: str | os.PathLike | None, weights_sha256: str, arch: dict[str, Any]) -> OnnxNetwork | None:
    """A session over the graph of these weights and architecture if one exists: the shipped
    ``<weights>.onnx`` if it belongs to them, else the cache's. Each file is opened once."""
    candidates = [Path(weights).with_suffix(".onnx")] if weights is not None else []
    candidates.append(cache_graph_path(weights_sha256, arch))
    for path in candidates:
        if path.is_file():
            net = _open_if_usable(path, weights_sha256, arch)
            if net is not None:
                return net
    return None


def speed_key(arch: dict[str, Any], bf16: bool) -> str:
    """What the measured choice depends on: CPU, threads, library versions, bf16 allowed, architecture."""

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "none"

    forced_bf16 = os.environ.get("MANIPSEG_BF16", "").strip()
    return (f"{cpu_model()} | threads {thread_setting() or 'default'} | torch {ver('torch')}"
            f"{' bf16 allowed' if bf16 else ''}{f' MANIPSEG_BF16={forced_bf16}' if forced_bf16 else ''}"
            f" | onnxruntime {ver('onnxruntime')} graph {GRAPH_FORMAT} | {json.dumps(arch, sort_keys=True, default=str)}")


@functools.lru_cache(maxsize=None)
def cached_choice(key: str) -> str | None:
    entry = read_json("runtime.json").get(key)
    if not isinstance(entry, dict):
        return None
    try:  # decided again from the stored timings, so a change of the rule applies to old measurements too
        return _decide({"torch": float(entry["torch_s"]), "onnx": float(entry["onnx_s"])})
    except (KeyError, TypeError, ValueError):
        return None


def _decide(times: dict[str, float]) -> str:
    return "torch" if times["torch"] < TORCH_MARGIN * times["onnx"] else "onnx"


def _remember(key: str, times: dict[str, float], runtime: str) -> None:
    remember("runtime.json", key, {"runtime": runtime, **{f"{k}_s": round(v, 4) for k, v in times.items()}})
    cached_choice.cache_clear()


def arch_of(info: dict[str, Any]) -> dict[str, Any]:
    """The architecture part of a weights description (what speed depends on)."""
    return {"arch": info.get("arch", ""), **(info.get("arch_kwargs") or {})}


def without_torch(requested: str, weights: str | os.PathLike, device: str, bf16: bool) -> OnnxNetwork | None:
    """The ONNX session to run these weights with, when that is already decided without torch: ``onnx``
    requested (or forced) and a graph exists, or ``auto`` with a cached choice of ONNX Runtime. None means
    "build the torch network" (which may still measure and choose ONNX Runtime: :func:`choose`)."""

    requested = requested_runtime(requested)
    if requested == "int8":  # a different network (quantised): never replaced by another runtime
        if str(device) != "cpu":
            raise RuntimeChoiceError(f"runtime 'int8' runs on the CPU only (device is {device})")
        if not onnxruntime_available():
            raise RuntimeChoiceError("runtime 'int8' needs onnxruntime (pip install onnxruntime)")
        return open_int8_graph(weights, read_header(weights).get("sha256"), arch_of(read_info(weights)))
    if requested == "torch" or str(device) != "cpu" or not onnxruntime_available():
        return None
    try:
        sha, info = read_header(weights).get("sha256"), read_info(weights)
    except WeightsError:
        return None  # the torch path reports the problem with the file
    if not sha or (info.get("arch_kwargs") or {}).get("dct_stream") or int(info.get("format", 0)) > FORMAT_VERSION:
        return None  # (a newer weights format: the torch path says so)
    arch = arch_of(info)
    if requested == "auto" and cached_choice(speed_key(arch, bf16)) != "onnx":
        return None  # not measured yet, or torch chosen: no graph is opened
    return open_graph(weights, sha, arch)


def measure(net, onnx_net: OnnxNetwork, bf16: bool, side: int = 384, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of one forward pass on a ``side`` x ``side`` input: torch (with bf16
    autocast when ``bf16``) and ONNX Runtime."""
    import torch

    from ..device import autocast
    from .tiling import normalisation

    image = torch.randint(0, 256, (1, side, side, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    scale, offset = normalisation(image[0].numpy())
    st, ot = torch.from_numpy(scale), torch.from_numpy(offset)
    core = _core(net)

    def best(fn) -> float:
        fn()  # first run: kernel selection, memory planning
        t = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
        return t

    def run_torch() -> None:  # what GSRDetector's torch path does: normalise, channels_last, network
        with torch.inference_mode(), autocast("cpu", bf16):
            x = (image.permute(0, 3, 1, 2).float() * st.view(1, -1, 1, 1) + ot.view(1, -1, 1, 1))
            core.net.head_logits(x.contiguous(memory_format=torch.channels_last))

    return {"torch": best(run_torch), "onnx": best(lambda: onnx_net.run(image[0].numpy(), scale, offset))}


def choose(requested: str, net, device, weights: str | os.PathLike | None, weights_sha256: str | None,
           bf16_allowed: bool, bf16: bool) -> tuple[str, OnnxNetwork | None]:
    """The runtime for a torch network already built (``"torch"`` or ``"onnx"``) and, for ONNX, its session.

    ``requested`` is ``auto`` (measure once, cached), ``torch`` or ``onnx`` (an error if it cannot run);
    ``MANIPSEG_RUNTIME`` overrides it. ``bf16_allowed`` is the detector's option (part of the cache key),
    ``bf16`` whether torch would really run in bf16 here."""
    requested = requested_runtime(requested)
    if requested == "torch":
        return "torch", None
    if requested == "int8":  # only a network object gets here: a weights file's int8 graph opens without torch
        raise RuntimeChoiceError("runtime 'int8' runs the int8 graph of a weights file: give the weights by path "
                                 "(a network object has none)")
    why_not = None
    if getattr(device, "type", str(device)) != "cpu":
        why_not = f"the ONNX runtime here runs on the CPU only (device is {device})"
    elif not onnxruntime_available():
        why_not = "onnxruntime is not installed (pip install onnxruntime)"
    elif getattr(net, "dct_stream", False) or not weights_sha256:
        why_not = "no ONNX graph for these weights (networks with a DCT stream, and weights without a checksum, run in torch)"
    onnx_net = None
    arch = arch_of({"arch": getattr(net, "arch", ""), "arch_kwargs": getattr(net, "arch_kwargs", {})})
    if why_not is None:
        onnx_net = open_graph(weights, weights_sha256, arch)
        if onnx_net is None:
            if importlib.util.find_spec("onnx") is None:
                why_not = "no ONNX graph for these weights, and the onnx package to export one is missing"
            else:
                cached = cache_graph_path(weights_sha256, arch)
                try:
                    onnx_net = OnnxNetwork(export_onnx(net, cached, weights_sha256))
                except Exception as exc:  # noqa: BLE001 - read-only cache, exporter or onnx failure: torch it is
                    why_not = f"cannot export the network to ONNX in {cached} ({type(exc).__name__}: {exc})"
                    if requested == "auto":
                        log.warning("%s; running the network in torch", why_not)
    if why_not is not None:
        if requested == "onnx":
            raise RuntimeChoiceError(f"runtime 'onnx' cannot be used: {why_not}")
        log.debug("running the network in torch: %s", why_not)
        return "torch", None
    if requested == "onnx":
        return "onnx", onnx_net
    key = speed_key(arch, bf16_allowed)
    choice = cached_choice(key)
    if choice is None:
        times = measure(net, onnx_net, bf16)
        choice = _decide(times)
        log.info("network runtime measured on this CPU: torch%s %.3f s, onnxruntime %.3f s -> %s",
                 " bf16" if bf16 else "", times["torch"], times["onnx"], choice)
        _remember(key, times, choice)
    return choice, (onnx_net if choice == "onnx" else None)
