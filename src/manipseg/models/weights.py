"""Trained weights as safetensors files (no pickle).

A weights file holds the network's state dict and, in the safetensors metadata:

* ``manipseg``: JSON ``{"format": 1, "kind": ..., "arch": ..., "arch_kwargs": {...}, "threshold": ...,
  "training": {...}}`` (``metadata`` passed to :func:`save_weights` is stored under ``"training"``, except
  ``threshold``); ``kind`` says which family of networks ``arch`` names (:data:`KINDS`: the segmentation networks,
  the face classifier, the GAN's generators) — files written before it existed are read by their ``arch``;
* ``sha256``: the SHA-256 of all tensors (names, dtypes, shapes and bytes, in sorted name order), checked on
  load so that a corrupted or truncated file gives a clear error instead of silently wrong predictions.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..header import FORMAT_VERSION, WeightsError, read_header, read_info
from ..io import atomic_write

__all__ = ["FORMAT_VERSION", "KINDS", "WeightsError", "read_header", "read_info", "save_weights", "load_weights",
           "ship", "network_from_weights", "tensors_sha256", "kind_of"]

#: the families of networks one weights format holds: ``segmenter`` (:mod:`manipseg.models.nets`, the detectors'
#: networks), ``face-classifier`` (:mod:`manipseg.faces.model`), ``gan-generator`` (:mod:`manipseg.gan.nets`)
KINDS = ("segmenter", "face-classifier", "gan-generator")
_KIND_OF_ARCH = {"adapgrnet-face": "face-classifier", "gan-unet": "gan-generator"}


def kind_of(info: Mapping[str, Any]) -> str:
    """The ``kind`` of a weights file's description (older files, without one, by their ``arch``)."""
    return str(info.get("kind") or _KIND_OF_ARCH.get(str(info.get("arch")), "segmenter"))


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and raw bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} value {value!r} in weights metadata (JSON only)")


def save_weights(path: str | os.PathLike, model: nn.Module, arch: str, arch_kwargs: Mapping[str, Any],
                 metadata: Mapping[str, Any] | None = None, kind: str = "segmenter") -> Path:
    """Write ``model``'s weights and description to a safetensors file, atomically.

    ``metadata`` (JSON-serialisable) describes the training run; its ``threshold`` key, if any, becomes the
    detector's default decision threshold (0.5 otherwise). ``kind``: one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"weights kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from safetensors.torch import save

    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = dict(metadata or {})
    threshold = float(meta.pop("threshold", 0.5))
    info = {"format": FORMAT_VERSION, "kind": kind, "arch": arch, "arch_kwargs": _jsonable(dict(arch_kwargs)),
            "threshold": threshold, "training": _jsonable(meta)}
    header = {"manipseg": json.dumps(info, sort_keys=True), "sha256": tensors_sha256(tensors)}
    data = save(tensors, metadata=header)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file written by :func:`save_weights`: ``(state_dict, info)``.

    ``info`` has ``arch``, ``arch_kwargs``, ``threshold``, ``training`` and ``path``. Raises
    :class:`WeightsError` naming the file and the problem when it is missing, unreadable, not a manipseg
    weights file, or its tensors do not match the recorded checksum.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    data = p.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{p}: not a readable safetensors file ({exc}); the file is corrupted or truncated - "
                           "copy or download it again") from None
    meta = header.get("__metadata__") or {}
    if "manipseg" not in meta or "sha256" not in meta:
        raise WeightsError(f"{p}: safetensors file without manipseg metadata (arch, checksum); "
                           "it was not written by manipseg.models.weights.save_weights")
    try:
        info = json.loads(meta["manipseg"])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{p}: corrupted manipseg metadata ({exc})") from None
    if int(info.get("format", 0)) > FORMAT_VERSION:
        raise WeightsError(f"{p}: weights format {info.get('format')} is newer than this manipseg understands "
                           f"({FORMAT_VERSION}); upgrade manipseg")
    actual = tensors_sha256(tensors)
    if actual != meta["sha256"]:
        raise WeightsError(f"{p}: checksum mismatch (recorded {meta['sha256'][:12]}..., actual {actual[:12]}...): "
                           "the weights are corrupted - copy or download the file again")
    info["path"] = str(p)
    return tensors, info


def ship(run_weights: str | os.PathLike, dest: str | os.PathLike, card: str, threshold: float | None = None,
         threshold_note: str | None = None, half: bool = False) -> Path:
    """Copy a training run's weights to ``dest`` (e.g. the package's ``weights/`` folder), checksum verified,
    with ``card`` (a one-line model card: data, steps, headline figures) added to the training metadata, and
    optionally a new decision ``threshold`` (with a note saying where it came from). ``half`` stores the
    floating-point tensors as float16 (half the size; loaded back into float32 networks)."""
    from safetensors.torch import save

    tensors, info = load_weights(run_weights)
    if half:
        tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
        info["stored_dtype"] = "float16"
    info.pop("path", None)
    info.setdefault("training", {})["card"] = str(card)
    if threshold is not None:
        info["threshold"] = float(threshold)
        info["training"]["threshold_note"] = threshold_note or ""
    header = {"manipseg": json.dumps(info, sort_keys=True), "sha256": tensors_sha256(tensors)}
    data = save(tensors, metadata=header)
    return atomic_write(dest, lambda tmp: tmp.write_bytes(data))


def network_from_weights(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network described by a weights file and load its weights (strictly); eval mode."""
    from .nets import build_network

    state, info = load_weights(path)
    if kind_of(info) != "segmenter":
        raise WeightsError(f"{path}: holds a {kind_of(info)} network ({info.get('arch')!r}), not a segmentation "
                           "network: " + {"face-classifier": "use it with `manipseg faces --weights FILE`",
                                          "gan-generator": "use it as a generation kind's generator (manipseg.gan)"
                                          }.get(kind_of(info), "see manipseg.models.weights.KINDS"))
    try:
        net = build_network(info["arch"], **info.get("arch_kwargs", {}))
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot build the network it describes: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit architecture {info['arch']!r}: {exc}") from None
    return net.eval(), info
