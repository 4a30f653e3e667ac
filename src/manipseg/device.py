"""Device selection and mixed precision.

On some CPUs bfloat16 autocast (with channels_last tensors) makes convolutions several times faster (AMX
Xeons: 3-4x); on others that have the instructions it is *slower* than fp32 (a Xeon with AVX512-BF16 but
no AMX, measured), and on most it is unsupported. So the choice is made by measurement, not by a CPU flag:
:func:`bf16_supported` checks that bf16 works, :func:`bf16_faster` times a small convolution stack in both
precisions the first time it is asked (about a second) and caches the answer per CPU model, torch version
and thread count (``$XDG_CACHE_HOME/manipseg/bf16.json``; ``MANIPSEG_BF16=0`` or ``1`` overrides it), and
:func:`autocast` is active only when both hold. No device name is hard-coded: callers
pass one (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) and :func:`resolve_device` checks it exists.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Iterator

import torch

from .cache import read_json, remember
from .machine import cpu_model

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class DeviceError(RuntimeError):
    """A device that was asked for but is not available on this machine."""


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """Return ``torch.device(name)`` after checking that the device is present.

    ``None`` or ``"auto"`` picks the first accelerator torch reports (CUDA, then MPS), else the CPU.
    """
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device(torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"invalid device {name!r}: {exc}. Use e.g. 'cpu', 'cuda', 'cuda:0' or 'mps'.") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but this torch build has no usable CUDA GPU; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r} requested but only {count} CUDA device(s) exist (0..{count - 1})")
        return device
    if device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r} requested but Apple MPS is not available; use --device cpu")
        return device
    raise DeviceError(f"unsupported device type {device.type!r} in {name!r}; use 'cpu', 'cuda[:N]' or 'mps'")


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.lru_cache(maxsize=None)
def bf16_supported(device: str = "cpu") -> bool:
    """Whether bf16 autocast is fast *and* works on ``device``.

    CPU: the processor must have native bf16 (AMX-BF16 or AVX512-BF16, from /proc/cpuinfo, or torch
    reporting an AMX/AVX512-BF16 capability) and a tiny autocast convolution must run and agree with fp32.
    CUDA: ``torch.cuda.is_bf16_supported()``. Other devices: False.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    has_flag = bool(_cpu_flags() & set(_BF16_CPU_FLAGS)) or "AMX" in capability or "BF16" in capability
    if not has_flag:
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 4, 3, 3, generator=gen)
        ref = torch.nn.functional.conv2d(x, w, padding=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.nn.functional.conv2d(x, w, padding=1)
    except RuntimeError:
        return False
    if out.dtype != torch.bfloat16:
        return False
    return bool(torch.allclose(out.float(), ref, rtol=0.05, atol=0.1 * float(ref.abs().max())))


def measure_bf16_speedup(repeats: int = 5) -> float:
    """fp32 time / bf16 time of a small stack of 3x3 convolutions (the compact network's kind of layer,
    channels_last, forward only) on this CPU with the current thread count: > 1 means bf16 is faster."""

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 192, 192, generator=gen).contiguous(memory_format=torch.channels_last)
    convs = [torch.nn.Conv2d(32, 32, 3, padding=1).to(memory_format=torch.channels_last) for _ in range(3)]

    def run(bf16: bool) -> float:
        best = float("inf")
        with torch.inference_mode():
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = x
                    for conv in convs:
                        y = torch.relu(conv(y))
                if i:  # the first run selects kernels
                    best = min(best, time.perf_counter() - t0)
        return best

    fp32, bf16 = run(False), run(True)
    return fp32 / max(bf16, 1e-9)


@functools.lru_cache(maxsize=None)
def bf16_faster(device: str = "cpu") -> bool:
    """Whether bf16 autocast is faster than fp32 on ``device``: CUDA when supported; on the CPU measured
    once (:func:`measure_bf16_speedup`, at least 10 % faster) and cached; ``MANIPSEG_BF16`` overrides."""
    forced = os.environ.get("MANIPSEG_BF16")
    if forced is not None and forced.strip() in ("0", "1"):
        return forced.strip() == "1"
    dev = torch.device(device)
    if dev.type == "cuda":
        return bf16_supported("cuda")
    if dev.type != "cpu" or not bf16_supported("cpu"):
        return False

    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    entry = read_json("bf16.json").get(key)
    if isinstance(entry, dict) and "speedup" in entry:
        return float(entry["speedup"]) >= 1.1
    speedup = measure_bf16_speedup()
    remember("bf16.json", key, {"speedup": round(speedup, 3), "bf16": speedup >= 1.1})
    return speedup >= 1.1


@contextlib.contextmanager
def autocast(device: str | torch.device = "cpu", enabled: bool = True) -> Iterator[bool]:
    """bf16 autocast on ``device`` when ``enabled``, supported and measured faster than fp32
    (:func:`bf16_faster`), otherwise a no-op.

    Yields whether autocast is actually active (useful for logging).
    """
    dev = torch.device(device)
    active = (bool(enabled) and dev.type in ("cpu", "cuda") and bf16_supported(str(dev.type))
              and bf16_faster(str(dev.type)))
    if not active:
        yield False
        return
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        yield True
