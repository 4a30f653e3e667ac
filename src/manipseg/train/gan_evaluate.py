"""Are G(K, M) harder than plain copy-pastes? A segmenter's F1 on held-out copy-pastes M vs on G(K, M).

Held-out copy-pastes come from the generation engine (``splice``) on photos not used for training. The
segmenter (a ``model.safetensors`` from ``manipseg train``) predicts both M and G(K, M) (with the
blender's inference compositing, see :class:`manipseg.gan.Blender`); both are scored against K with the
training validation's protocols (:func:`manipseg.train.validate.score`), and paired per image at the
threshold that is best on the copy-pastes (share of images where G(K, M) scores lower / higher). L_bg (Eq. 3) of G's *whole*
output (no compositing) is reported too, in [-1, 1] units and in 8-bit levels per channel, over the
whole background and outside K's edge band (whose outer half Eq. 5 pulls towards S).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .config import resolve_path


def _f1(pred: np.ndarray, gt: np.ndarray) -> float:
    tp = np.count_nonzero(pred & gt)
    denom = 2 * tp + np.count_nonzero(pred & ~gt) + np.count_nonzero(~pred & gt)
    return 2 * tp / denom if denom else 1.0


def blender_edge_width(path: str) -> int:
    """The edge width a blender was trained with (5 when its metadata does not say)."""
    from ..gan.model import load_generator_file

    cfg = load_generator_file(path, "blender")[1].get("config") or {}
    return int((cfg.get("loss") or cfg.get("gan") or {}).get("edge_width", 5))


def compare(generator: str, model: str, sources: Sequence[str], n: int = 48, size: int = 256, seed: int = 777,
            composite_width: int = 5, root: str | None = None) -> dict[str, float]:
    from ..gan.losses import edge_mask, loss_bg
    from ..gan.model import Blender, to_signed
    from ..generate import SyntheticDataset
    from ..models.weights import network_from_weights
    from .validate import predict_probs, score

    ds = SyntheticDataset([str(resolve_path(s, root)) for s in sources], ["splice"], size, n, seed)
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items]).float() / 255.0
    masks = torch.stack([it["mask"] for it in items])
    targets = torch.stack([it["target"] for it in items]).float() / 255.0
    blender = Blender(generator, composite_width=composite_width)
    raw = Blender(blender.G, composite_width=0)
    blended, whole = [], []
    for i in range(0, n, 8):  # small batches keep memory flat
        blended.append(blender(images[i:i + 8], masks[i:i + 8]))
        whole.append(raw(images[i:i + 8], masks[i:i + 8]))
    blended_t, whole_t = torch.cat(blended), torch.cat(whole)
    lbg = float(loss_bg(to_signed(whole_t), to_signed(targets), masks))
    # the same outside K's edge band (Eq. 5 pulls the band's outer half towards S, not T)
    band = edge_mask(masks, blender_edge_width(generator)) > 0.5
    lbg_far = float(loss_bg(to_signed(whole_t), to_signed(targets), (masks > 0.5) | band))
    # the copy-paste's own value (not 0: post-processing such as JPEG blocks straddling K touches T too)
    lbg_cp = float(loss_bg(to_signed(images), to_signed(targets), masks))
    net, _ = network_from_weights(model)
    dev = torch.device("cpu")
    as_u8 = lambda x: [(a.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for a in x]  # noqa: E731
    gt = [m[0].numpy() > 0.5 for m in masks]
    res: dict[str, float] = {"images": float(n), "size": float(size), "l_bg": lbg, "l_bg_255": lbg / 3 * 127.5,
                             "l_bg_outside_edge_band_255": lbg_far / 3 * 127.5, "l_bg_copy_paste": lbg_cp,
                             "l_bg_copy_paste_255": lbg_cp / 3 * 127.5}
    probs = {}
    for name, batch in (("cp", images), ("gan", blended_t)):
        probs[name] = predict_probs(net, as_u8(batch), dev, bf16=False, channels_last=False)
        for k, v in score(probs[name], gt).items():
            if k in ("f1_dataset", "f1_dataset_threshold", "f1_image", "f1_fixed", "mcc_dataset", "auc"):
                res[f"{name}_{k}"] = v
    # paired: per-image F1 of both at the threshold that is best on the copy-pastes
    thr = res["cp_f1_dataset_threshold"]
    f1 = {name: np.array([_f1(p > thr, g) for p, g in zip(probs[name], gt)]) for name in probs}
    res["paired_threshold"] = thr
    res["paired_cp_f1"], res["paired_gan_f1"] = float(f1["cp"].mean()), float(f1["gan"].mean())
    res["paired_share_harder"] = float(np.mean(f1["gan"] < f1["cp"]))
    res["paired_share_easier"] = float(np.mean(f1["gan"] > f1["cp"]))
    inside = masks.expand_as(images) > 0.5
    res["mean_abs_change_in_k_255"] = float((blended_t - images).abs()[inside].mean() * 255)
    return res
