"""Device selection and mixed precision.

On CPUs with AMX or AVX512-BF16, bfloat16 autocast (with channels_last tensors) makes convolutions several
times faster; elsewhere it is slow or unsupported, so :func:`bf16_supported` checks at run time and
:func:`autocast` silently becomes a no-op when bf16 is not usable. No device name is hard-coded: callers
pass one (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) and :func:`resolve_device` checks it exists.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import torch

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


@contextlib.contextmanager
def autocast(device: str | torch.device = "cpu", enabled: bool = True) -> Iterator[bool]:
    """bf16 autocast on ``device`` when ``enabled`` and supported, otherwise a no-op.

    Yields whether autocast is actually active (useful for logging).
    """
    dev = torch.device(device)
    active = bool(enabled) and dev.type in ("cpu", "cuda") and bf16_supported(str(dev.type))
    if not active:
        yield False
        return
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        yield True
