"""Periodic validation during training: predict a held-out set, score it, and score the trivial baseline.

Scores are pixel-level F1 and MCC on tampered images (empty ground-truth masks are skipped) under two
protocols: one best threshold for the whole dataset (GSR-Net's Table 1 protocol: the threshold that
maximises the mean per-image score) and the best threshold per image. The trivial baseline predicts
"everything tampered" (its MCC is 0 by definition, its F1 is 2|K| / (|K| + N) per image), so a model that
does not beat it has learned nothing. The protocols are those of :mod:`manipseg.eval.metrics`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from ..models.dct import dct_batch


def score(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, float]:
    """Best-dataset and per-image F1/MCC/AUC (:mod:`manipseg.eval.metrics`) and the all-tampered baseline."""
    from ..eval.metrics import Accumulator

    model, baseline = Accumulator(), Accumulator()
    for i, (prob, mask) in enumerate(zip(probs, masks)):
        model.add(str(i), prob, mask, float(np.max(prob)), authentic=False)
        baseline.add_constant(str(i), 1.0, mask, authentic=False)
    if not model.records:
        raise ValueError("no validation image has a tampered pixel; pixel-level scores are undefined")
    m, b = model.summary()["protocols"], baseline.summary()["protocols"]
    return {
        "images": float(len(model.records)),
        "f1_dataset": m["best_dataset"]["f1"],
        "f1_dataset_threshold": m["best_dataset"]["f1_threshold"],
        "mcc_dataset": m["best_dataset"]["mcc"],
        "f1_image": m["best_image"]["f1"],
        "mcc_image": m["best_image"]["mcc"],
        "f1_fixed": m["fixed_0.5"]["f1"],
        "auc": m["best_dataset"]["auc"],
        "baseline_f1": b["best_dataset"]["f1"],
        "baseline_mcc": b["best_dataset"]["mcc"],
    }


def dct_input(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """The DCT-stream input of a uint8 batch (``[B, H, W, 3]`` or ``[B, 3, H, W]``) for networks that take
    one (``dct_stream``), else None."""
    net = getattr(model, "module", model)  # DistributedDataParallel wraps the network
    if not getattr(net, "dct_stream", False):
        return None

    return torch.from_numpy(dct_batch(images)).to(device)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: Iterable[np.ndarray], device: torch.device,
                  bf16: bool = True, channels_last: bool = True) -> list[np.ndarray]:
    """P(tampered) maps of uint8 ``(H, W, 3)`` images, one at a time (sizes may differ), in eval mode."""
    from ..device import autocast
    from ..models.nets import normalise

    was_training = model.training
    model.eval()
    out = []
    try:
        for image in images:
            x = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None].to(device)  # copies
            x = normalise(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            dct = dct_input(model, np.asarray(image)[None], device)
            with autocast(device, enabled=bf16):
                logits = model(x, dct)["seg"] if dct is not None else model(x)["seg"]
            out.append(torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy().astype(np.float32))
    finally:
        model.train(was_training)
    return out
