"""Train the face classifier on Self-Blended Images of real faces only.

``python -m manipseg.faces.train --config configs/faces.yaml --run-dir RUN_DIR`` (resumes from
``RUN_DIR/last.pt`` when present). Every batch pairs each real crop with its own SBI (the paper's pairing);
both get the same light post-processing (random JPEG / blur) for robustness. Writes ``RUN_DIR/log.csv``,
``RUN_DIR/last.pt`` (``torch.load(..., weights_only=True)``) and ``RUN_DIR/best.safetensors`` (best
held-out SBI AUC).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..io import atomic_write
from ..paths import data_root
from .data import FaceSet, prepare_faces, split_by_identity
from .model import AdapGRNet, FaceNetConfig, fake_probability, losses, to_tensors
from .sbi import SBIConfig, jpeg, self_blend

log = logging.getLogger(__name__)
ARCH = "adapgrnet-face"


@dataclass
class TrainConfig:
    faces: str = "faces/caltech-faces"     # relative to the data root, or absolute
    margin: float = 0.3
    held_out: float = 0.2
    split_seed: int = 0
    pairs_per_batch: int = 16             # batch = 2 x pairs (real + its SBI)
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    eval_every: int = 100
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (50, 95)
    p_blur: float = 0.15
    seed: int = 0
    bf16: bool = True
    threads: int = 2
    model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> "TrainConfig":
        if path is None:
            return cls()
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        if "jpeg_quality" in data:
            data["jpeg_quality"] = tuple(data["jpeg_quality"])
        return cls(**data)


def post_augment(image: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    if rng.random() < cfg.p_blur:
        k = int(rng.choice([3, 5]))
        image = cv2.blur(image, (k, k)) if rng.random() < 0.5 else cv2.GaussianBlur(image, (k, k), 0)
    if rng.random() < cfg.p_jpeg:
        image = jpeg(image, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return image


def flip(crop: np.ndarray, lm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    out = np.ascontiguousarray(crop[:, ::-1])
    if lm is None:
        return out, None
    lm = lm.copy()
    lm[:, 0] = crop.shape[1] - 1 - lm[:, 0]
    return out, lm


def make_batch(fs: FaceSet, idx: np.ndarray, rng: np.random.Generator, cfg: TrainConfig, sbi: SBIConfig
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Crops (reals then their SBIs), labels (0 real, 1 fake) and masks (N, S, S)."""
    reals, fakes, masks = [], [], []
    for i in idx:
        crop, lm = fs.crops[i], fs.lm(int(i))
        if rng.random() < 0.5:
            crop, lm = flip(crop, lm)
        fake, mask, _ = self_blend(crop, lm, rng, sbi)
        reals.append(post_augment(crop, rng, cfg))
        fakes.append(post_augment(fake, rng, cfg))
        masks.append(mask / max(float(mask.max()), 1e-6))  # the blended region, whatever the blend ratio
    n = len(idx)
    size = fs.crops.shape[1]
    labels = np.r_[np.zeros(n), np.ones(n)].astype(np.int64)
    all_masks = np.concatenate([np.zeros((n, size, size), np.float32), np.stack(masks)])
    return reals + fakes, labels, all_masks


def build_eval_set(fs: FaceSet, seed: int = 1234) -> tuple[list[np.ndarray], np.ndarray]:
    """Held-out reals and one SBI of each, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    fakes = [self_blend(fs.crops[i], fs.lm(i), rng)[0] for i in range(len(fs))]
    return list(fs.crops) + fakes, np.r_[np.zeros(len(fs)), np.ones(len(fs))].astype(np.int64)


@torch.no_grad()
def predict_crops(net: AdapGRNet, crops: list[np.ndarray], bf16: bool = True, batch: int = 64,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities (N,) and heatmaps (N, S, S) of uint8 crops."""
    from ..device import autocast
    from .model import heatmap

    net.eval()
    probs, maps = [], []
    for k in range(0, len(crops), batch):
        rgb, res = to_tensors(crops[k:k + batch], net.cfg)
        with autocast(device, bf16):
            out = net(rgb.to(device), res.to(device))
        probs.append(fake_probability(out).cpu().numpy())
        maps.append(heatmap(out, rgb.shape[-1]).float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(maps)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps or over the time budget, whichever ends first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train(cfg: TrainConfig, run_dir: Path, max_minutes: float | None = None, init: Path | None = None) -> Path:
    from ..device import autocast
    from ..models.weights import save_weights
    from .metrics import binary_metrics

    torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(cfg.faces) if Path(cfg.faces).is_absolute() else data_root() / cfg.faces
    net_cfg = FaceNetConfig.from_dict(cfg.model)
    fs = prepare_faces(folder, run_dir / "cache", size=net_cfg.size, margin=cfg.margin)
    tr, ho = split_by_identity(fs, cfg.held_out, cfg.split_seed)
    train_set, held = fs.subset(tr), fs.subset(ho)
    log.info("%d faces: %d train, %d held-out (no identity in both)", len(fs), len(tr), len(ho))
    eval_crops, eval_labels = build_eval_set(held)

    net = AdapGRNet(net_cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best, minutes_before = 0, -1.0, 0.0
    if init is not None:  # fine-tune: start from trained weights, fresh optimiser and schedule
        from ..models.weights import load_weights

        state, info = load_weights(init)
        if FaceNetConfig.from_dict(info.get("arch_kwargs", {})) != net_cfg:
            raise ValueError(f"{init}: network settings differ from the config's model section")
        net.load_state_dict({k: v.float() for k, v in state.items()})
        log.info("initialised from %s", init)
    last = run_dir / "last.pt"
    if last.is_file():
        ck = torch.load(last, weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, best, minutes_before = int(ck["step"]), float(ck["best"]), float(ck.get("minutes", 0.0))
        log.info("resumed from %s at step %d (best AUC %.4f)", last, step, best)
    (run_dir / "config.json").write_text(json.dumps({**cfg.__dict__, "model": net_cfg.to_dict()}, indent=1, default=list))
    log_path = run_dir / "log.csv"
    fields = ["step", "minutes", "lr", "loss", "ce_rgb", "ce_gr", "ce_fused", "loc", "train_acc",
              "val_auc", "val_acc", "val_eer", "alpha_rgb"]
    if not log_path.is_file():
        log_path.write_text(",".join(fields) + "\n")
    sbi = SBIConfig()
    t0 = time.time()
    acc_hist: list[dict[str, float]] = []
    def minutes() -> float:
        return minutes_before + (time.time() - t0) / 60

    def time_fraction() -> float:
        return minutes() / max_minutes if max_minutes else 0.0

    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(len(train_set), cfg.pairs_per_batch, replace=False)
        crops, labels, masks = make_batch(train_set, idx, rng, cfg, sbi)
        rgb, res = to_tensors(crops, net_cfg)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, time_fraction())
        net.train()
        with autocast("cpu", cfg.bf16):
            out = net(rgb, res)
        parts = losses(out, torch.from_numpy(labels), torch.from_numpy(masks), net_cfg.loc_weight)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
        step += 1
        pred = out["logits"].argmax(1).numpy()
        acc_hist.append({k: float(v.detach()) for k, v in parts.items()} | {"acc": float((pred == labels).mean()),
                                                                  "alpha": float(out["alpha"][:, 0].detach().mean())})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            probs, _ = predict_crops(net, eval_crops, cfg.bf16)
            m = binary_metrics(eval_labels, probs)
            mean = {k: float(np.mean([h[k] for h in acc_hist])) for k in acc_hist[0]}
            row = [step, round(minutes(), 2), opt.param_groups[0]["lr"], mean["total"], mean["ce_rgb"],
                   mean["ce_gr"], mean["ce_fused"], mean["loc"], mean["acc"], m["auc"], m["accuracy"], m["eer"],
                   mean["alpha"]]
            with log_path.open("a") as f:
                csv.writer(f).writerow([f"{v:.5g}" if isinstance(v, float) else v for v in row])
            log.info("step %d loss %.4f acc %.3f | held-out SBI AUC %.4f acc %.3f EER %.3f", step, mean["total"],
                     mean["acc"], m["auc"], m["accuracy"], m["eer"])
            acc_hist.clear()
            meta = {"step": step, "val_auc_sbi": m["auc"], "train_faces": len(tr), "held_out_faces": len(ho),
                    "data": cfg.faces, "margin": cfg.margin}
            if m["auc"] > best:
                best = m["auc"]
                save_weights(run_dir / "best.safetensors", net, ARCH, net_cfg.to_dict(), meta)
            save_weights(run_dir / "last.safetensors", net, ARCH, net_cfg.to_dict(), meta)
            state = {"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                     "minutes": minutes()}
            atomic_write(last, lambda tmp, s=state: torch.save(s, tmp))
            if max_minutes is not None and minutes() > max_minutes:
                log.info("time budget of %.0f min reached at step %d", max_minutes, step)
                break
    return run_dir / "best.safetensors"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m manipseg.faces.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None, help="YAML of TrainConfig options (configs/faces.yaml)")
    p.add_argument("--run-dir", type=Path, required=True, help="where logs, checkpoints and weights go")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training time budget: the learning rate decays to 0 over it, training stops past it")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(TrainConfig.load(args.config), args.run_dir, args.max_minutes, args.init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
