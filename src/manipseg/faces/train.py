"""Train the face classifier on Self-Blended Images of real faces only.

``manipseg train configs/faces/faces.yaml --out RUN_DIR [--resume] [--init W] [--max-minutes M]`` (the
config's ``recipe: faces``; :class:`FaceRecipe` run by the training engine; :func:`train` and the deprecated
``python -m manipseg.faces.train`` resume from ``RUN_DIR/last.pt`` when present). Every batch pairs each real crop with its own SBI (the paper's pairing);
reals and fakes get the same random post-processing (resampling, blur, JPEG), so that degradation is not
the cue. Real faces: the identity-split face set (its held-out part is never touched here, it is for
``benchmarks/bench_faces.py``) plus, optionally, every large-enough face of other authentic photo folders
(``extra_faces``). A validation split (whole identities / photos of the training part) picks the best step
and calibrates the decision threshold (equal error rate of its reals vs their SBIs). Writes
``RUN_DIR/log.csv``, ``RUN_DIR/last.pt`` (``torch.load(..., weights_only=True)``) and
``RUN_DIR/best.safetensors`` (best validation AUC, with its threshold).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from ..calibration import threshold_at_rate
from ..io import load_image
from ..paths import data_root
from ..train.checkpoint import set_rng_state
from ..train.config import apply_overrides, without_recipe
from ..train.engine import Clock, Engine, Plan, Recipe, SingleCheckpoint
from .data import (FaceSet, PhotoPatch, collect_faces, concat, merge_small_identities, photo_patch, prepare_faces,
                   split_by_identity, split_groups)
from .detect import Face, crop_matrix
from .model import AdapGRNet, FaceNetConfig, fake_probability, losses, to_tensors
from .sbi import PARTS, SBIConfig, color_transform, face_paste, jpeg, self_blend

log = logging.getLogger(__name__)
ARCH = "adapgrnet-face"


@dataclass
class TrainConfig:
    faces: str = "faces/caltech-faces"     # relative to the data root, or absolute
    margin: float = 0.3
    held_out: float = 0.2                 # test identities (bench_faces.py), never used here
    split_seed: int = 0
    val_fraction: float = 0.15            # of the remaining identities / extra photos: validation + threshold
    extra_faces: tuple[str, ...] = ()     # more authentic photo folders (relative to the data root) to take faces from
    extra_min_side: float = 40.0          # smallest landmark box (px) of an extra face
    extra_min_score: float = 0.0          # smallest dlib detector score of an extra face
    pairs_per_batch: int = 16             # batch = 2 x pairs (real + its SBI)
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    eval_every: int = 100
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (50, 95)
    p_blur: float = 0.15
    p_resample: float = 0.0               # down-then-up resampling of reals and fakes alike
    resample_scale: tuple[float, float] = (0.5, 1.0)
    p_jitter: float = 0.0                 # random rotation / scale / shift of the real before its SBI is made
    jitter: tuple[float, float, float] = (10.0, 0.08, 0.04)   # degrees, relative scale, fraction of the side
    p_colour: float = 0.0                 # SBI's colour transform on the real before its SBI is made
    blend_size: int = 0                   # crop side at which SBIs are made, then shrunk to the network's (0: same)
    photo_blend: float = 0.0              # share of SBIs made on the photo at its resolution, then cropped (1: all)
    p_paste: float = 0.0                  # share of fakes that are another person's face pasted by its box (face_paste)
    paste_feather: tuple[float, float] = (0.0, 4.0)   # range of the paste's Gaussian edge (pixels; 0 = hard)
    paste_colour: float = 0.5             # share of pastes colour-matched to the target face
    paste_partial: float = 0.25           # share of pastes of the upper (eyes) or lower (mouth) part only
    paste_misalign: float = 0.15          # relative error of the pasted box's size and position
    threshold_rate: float | None = None   # threshold at this share of validation reals flagged (None: the EER threshold)
    seed: int = 0
    bf16: bool = True
    threads: int = 2
    model: dict[str, Any] = field(default_factory=dict)
    sbi: dict[str, Any] = field(default_factory=dict)   # SBIConfig options (default: the paper's)

    @classmethod
    def load(cls, path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        """Options of the YAML file ``path`` (defaults without it), then ``overrides`` ``KEY=VALUE`` (VALUE
        read as YAML; ``model.KEY=VALUE`` sets a network option), applied as ``manipseg train --set`` does."""

        data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path is not None else {}
        data = without_recipe(apply_overrides(data, list(overrides)), "faces", str(path or "options"))
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path or 'options'}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        bad = set(data.get("model") or {}) - set(FaceNetConfig.__dataclass_fields__)
        if bad:
            raise ValueError(f"{path or 'options'}: unknown model option(s) {sorted(bad)}; "
                             f"known: {sorted(FaceNetConfig.__dataclass_fields__)}")
        bad = set(data.get("sbi") or {}) - set(SBIConfig.__dataclass_fields__)
        if bad:
            raise ValueError(f"{path or 'options'}: unknown sbi option(s) {sorted(bad)}; "
                             f"known: {sorted(SBIConfig.__dataclass_fields__)}")
        for key in ("jpeg_quality", "resample_scale", "extra_faces", "jitter", "paste_feather"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


_INTERP = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def post_augment(image: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Random resampling (a resized photo or a small face), blur and JPEG, each with its probability."""
    if rng.random() < cfg.p_resample:
        h, w = image.shape[:2]
        f = rng.uniform(*cfg.resample_scale)
        small = cv2.resize(image, (max(8, round(w * f)), max(8, round(h * f))), interpolation=int(rng.choice(_INTERP)))
        image = cv2.resize(small, (w, h), interpolation=int(rng.choice(_INTERP[1:])))
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


def jitter_matrix(rng: np.random.Generator, cfg: TrainConfig, w: int, h: int) -> np.ndarray | None:
    """3x3 random similarity about the centre of a ``w`` x ``h`` crop (rotation, scale, shift by fractions
    of the sides) with probability ``p_jitter``, else None."""
    if rng.random() >= cfg.p_jitter:
        return None
    deg, scale, shift = cfg.jitter
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-deg, deg), rng.uniform(1 - scale, 1 + scale))
    m[:2, 2] += rng.uniform(-shift, shift, 2) * (w, h)
    return m


def jitter(crop: np.ndarray, lm: np.ndarray | None, rng: np.random.Generator, cfg: TrainConfig
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Random similarity transform about the crop centre (with its landmarks), probability ``p_jitter``:
    the real never shows the network the same pixels twice, so it cannot be recognised as a seen image."""
    h, w = crop.shape[:2]
    m = jitter_matrix(rng, cfg, w, h)
    if m is None:
        return crop, lm
    m = m[:2]
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return out, None if lm is None else (lm @ m[:, :2].T + m[:, 2]).astype(np.float32)


def shrink(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` (no-op when it already is)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=interpolation)




def photo_pair(patch: PhotoPatch, rng: np.random.Generator, cfg: TrainConfig, sbi: SBIConfig, size: int,
               augment: bool = True, paste_from: "tuple[FaceSet, int, list[PhotoPatch]] | None" = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real crop, its fake's crop, blend mask in crop pixels): the fake is made on the photo patch at the
    photo's resolution, then both are cropped by one bilinear warp (the crop map of ``crop_face``, with the
    random flip and jitter folded in) — what ``manipseg faces`` does with a face altered in a photo. The fake
    is the patch's SBI or, with ``paste_from`` = (face set, this face's index, every face's patch) and
    probability ``cfg.p_paste``, another person's face pasted at the photo's resolution (:func:`paste_fake`).
    Without ``augment`` no flip, colour change or jitter (validation)."""
    image, lm = patch.image, patch.landmarks
    if augment and rng.random() < 0.5:
        image, lm = flip(image, lm)
    if augment and rng.random() < cfg.p_colour:
        image = color_transform(image, rng, sbi)
    if paste_from is not None and cfg.p_paste and rng.random() < cfg.p_paste:
        fs, i, patches = paste_from
        fake, mask = paste_fake(fs, i, image, lm, rng, cfg, patches=patches)
    else:
        fake, mask, _ = self_blend(image, lm, rng, sbi)
    m = np.vstack([crop_matrix(Face((0, 0, 0, 0), lm, 0.0), size, cfg.margin), [0, 0, 1]])
    j = jitter_matrix(rng, cfg, size, size) if augment else None
    if j is not None:
        m = j @ m
    warp = lambda a, border=cv2.BORDER_REFLECT101: cv2.warpAffine(  # noqa: E731
        a, m[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return warp(image), warp(fake), warp(mask, cv2.BORDER_CONSTANT)


def _face_box(lm: np.ndarray | None, side: int, margin: float) -> tuple[float, float, float, float]:
    """The landmarks' box (``Face.frame_box``), or without landmarks the box a crop of ``margin`` was cut around."""
    if lm is not None:
        return Face((0, 0, 0, 0), lm, 0.0).frame_box()
    inner = side / (1 + 2 * margin)
    off = (side - inner) / 2
    return off, off, off + inner, off + inner


def paste_fake(fs: FaceSet, i: int, crop: np.ndarray, lm: np.ndarray | None, rng: np.random.Generator,
               cfg: TrainConfig, patches: list[PhotoPatch] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` with another person's face (a random crop of ``fs`` of another identity, or with ``patches``
    that face's photo patch, at its photo's resolution) pasted by its box (:func:`face_paste`): the box's
    size and position off by up to ``paste_misalign``, an edge drawn from ``paste_feather``, colour-matched
    or not, the whole face or its upper / lower part."""
    others = np.flatnonzero(fs.identity != fs.identity[i])
    j = int(rng.choice(others)) if len(others) else i
    side = crop.shape[0]
    tx0, ty0, tx1, ty1 = _face_box(lm, side, cfg.margin)
    bw, bh = tx1 - tx0, ty1 - ty0
    scale = 1.0 + rng.uniform(-cfg.paste_misalign, cfg.paste_misalign)
    cx = (tx0 + tx1) / 2 + rng.uniform(-cfg.paste_misalign, cfg.paste_misalign) * bw
    cy = (ty0 + ty1) / 2 + rng.uniform(-cfg.paste_misalign, cfg.paste_misalign) * bh
    box = (cx - scale * bw / 2, cy - scale * bh / 2, cx + scale * bw / 2, cy + scale * bh / 2)
    source, source_lm = (fs.crops[j], fs.lm(j)) if patches is None else (patches[j].image, patches[j].landmarks)
    if rng.random() < 0.5:
        source = np.ascontiguousarray(source[:, ::-1])  # the box of a mirrored face is the mirrored box
        sx0, sy0, sx1, sy1 = _face_box(source_lm, source.shape[0], cfg.margin)
        source_box = (source.shape[1] - sx1, sy0, source.shape[1] - sx0, sy1)
    else:
        source_box = _face_box(source_lm, source.shape[0], cfg.margin)
    lo, hi = cfg.paste_feather
    part = PARTS[int(rng.choice(2)) + 1] if rng.random() < cfg.paste_partial else "full"
    fake, mask, _ = face_paste(crop, box, source, source_box, feather=float(rng.uniform(lo, hi)),
                               colour_match=bool(rng.random() < cfg.paste_colour), part=part)
    return fake, mask


def make_batch(fs: FaceSet, idx: np.ndarray, rng: np.random.Generator, cfg: TrainConfig, sbi: SBIConfig,
               size: int | None = None, patches: list[PhotoPatch] | None = None
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Crops (reals then their SBIs), labels (0 real, 1 fake) and masks (N, S, S).

    The SBI is made at the cached crops' size; with a network ``size`` below it, real and fake are then
    shrunk alike (bilinear, as ``crop_face`` samples a photo, or area): a face swapped in a photo is
    blended at the photo's resolution and only then cropped and resized to the network's input. With
    ``patches``, a share ``cfg.photo_blend`` of the SBIs is made on the face's photo patch instead
    (:func:`photo_pair`)."""
    size = size or fs.crops.shape[1]
    reals, fakes, masks = [], [], []
    for i in idx:
        if patches is not None and (cfg.photo_blend >= 1 or rng.random() < cfg.photo_blend):
            real, fake, mask = photo_pair(patches[int(i)], rng, cfg, sbi, size, paste_from=(fs, int(i), patches))
            reals.append(post_augment(real, rng, cfg))
            fakes.append(post_augment(fake, rng, cfg))
            masks.append(mask / max(float(mask.max()), 1e-6))
            continue
        crop, lm = fs.crops[i], fs.lm(int(i))
        if rng.random() < 0.5:
            crop, lm = flip(crop, lm)
        crop, lm = jitter(crop, lm, rng, cfg)
        if rng.random() < cfg.p_colour:
            crop = color_transform(crop, rng, sbi)
        if cfg.p_paste and rng.random() < cfg.p_paste:  # (no draw without pastes: older configs unchanged)
            fake, mask = paste_fake(fs, int(i), crop, lm, rng, cfg)
        else:
            fake, mask, _ = self_blend(crop, lm, rng, sbi)
        interp = int(rng.choice(_INTERP[:2]))
        reals.append(post_augment(shrink(crop, size, interp), rng, cfg))
        fakes.append(post_augment(shrink(fake, size, interp), rng, cfg))
        mask = shrink(mask, size, cv2.INTER_AREA)
        masks.append(mask / max(float(mask.max()), 1e-6))  # the blended region, whatever the blend ratio
    n = len(idx)
    labels = np.r_[np.zeros(n), np.ones(n)].astype(np.int64)
    all_masks = np.concatenate([np.zeros((n, size, size), np.float32), np.stack(masks)])
    return reals + fakes, labels, all_masks


def build_eval_set(fs: FaceSet, seed: int = 1234, cfg: TrainConfig | None = None,
                   size: int | None = None, patches: list[PhotoPatch] | None = None
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """Reals and one SBI of each, fixed by ``seed``, shrunk to ``size`` (bilinear) after blending (with
    ``patches``: blended on the photo patches, then cropped; with ``patches`` and ``cfg.photo_blend`` below 1,
    one SBI of each kind); with ``cfg``, all get its post-processing (a fixed draw)."""
    rng = np.random.default_rng(seed)
    size = size or fs.crops.shape[1]
    fakes = []
    if patches is None or (cfg is not None and cfg.photo_blend < 1):
        fakes += [shrink(self_blend(fs.crops[i], fs.lm(i), rng)[0], size, cv2.INTER_LINEAR) for i in range(len(fs))]
    if patches is None:
        crops = [shrink(c, size, cv2.INTER_LINEAR) for c in fs.crops]
    else:
        pairs = [photo_pair(p, rng, cfg or TrainConfig(), SBIConfig(), size, augment=False)[:2] for p in patches]
        crops = [p[0] for p in pairs]
        fakes += [p[1] for p in pairs]
    crops += fakes
    if cfg is not None:
        crops = [post_augment(c, rng, cfg) for c in crops]
    return crops, np.r_[np.zeros(len(fs)), np.ones(len(fakes))].astype(np.int64)


def photo_patches(fs: FaceSet, margin: float) -> list[PhotoPatch]:
    """:func:`photo_patch` of every face of ``fs``, each photo read once."""

    photos: dict[str, np.ndarray] = {}
    out = []
    for i in range(len(fs)):
        path = str(fs.paths[i]) if fs.paths is not None else ""
        if path and path not in photos:
            photos[path] = load_image(Path(path))
        out.append(photo_patch(fs, i, margin, image=photos.get(path)))
    return out


def split_train_val(cfg: TrainConfig, size: int, cache: Path) -> tuple[FaceSet, FaceSet, dict[str, int]]:
    """(train, validation, counts): the face set minus its held-out test identities, plus the extra faces,
    each split into train / validation by whole identities (extra faces: by photo); crops cached in ``cache``."""
    folder = Path(cfg.faces) if Path(cfg.faces).is_absolute() else data_root() / cfg.faces
    fs = prepare_faces(folder, cache, size=size, margin=cfg.margin)
    rest, test = split_by_identity(fs, cfg.held_out, cfg.split_seed)
    main = fs.subset(rest)
    main = dataclasses.replace(main, identity=merge_small_identities(fs.identity)[rest])
    tr, va = split_groups(main.identity, cfg.val_fraction, cfg.split_seed)
    train_set, val_set = main.subset(tr), main.subset(va)
    counts = {"train_faces": len(tr), "val_faces": len(va), "held_out_faces": len(test), "extra_train_faces": 0,
              "extra_val_faces": 0}
    if cfg.extra_faces:
        folders = [Path(f) if Path(f).is_absolute() else data_root() / f for f in cfg.extra_faces]
        extra = collect_faces(folders, cache, size=size, margin=cfg.margin, min_side=cfg.extra_min_side,
                              min_score=cfg.extra_min_score)
        etr, eva = split_groups(extra.identity, cfg.val_fraction, cfg.split_seed)
        train_set, val_set = concat(train_set, extra.subset(etr)), concat(val_set, extra.subset(eva))
        counts.update(extra_train_faces=len(etr), extra_val_faces=len(eva))
    return train_set, val_set, counts


@torch.no_grad()
def predict_crops(net: AdapGRNet, crops: list[np.ndarray], bf16: bool = True, batch: int = 64,
                  device: str = "cpu", flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities (N,) and heatmaps (N, S, S) of uint8 crops. ``flip``: each crop is also judged
    mirrored left-right and the two are averaged (the fusion logits, and the heatmaps mirrored back): a face
    and its mirror image are equally real, and the average is steadier than either."""
    from ..device import autocast
    from .model import heatmap

    net.eval()
    probs, maps = [], []
    for k in range(0, len(crops), batch):
        rgb, res = to_tensors(crops[k:k + batch], net.cfg)
        with autocast(device, bf16):
            out = net(rgb.to(device), res.to(device))
            if flip:  # the residual of a mirrored crop is the mirrored residual (symmetric box filters)
                mirrored = net(rgb.flip(-1).to(device), res.flip(-1).to(device))
        heat = heatmap(out, rgb.shape[-1]).float()
        if flip:
            out = {"logits": (out["logits"].float() + mirrored["logits"].float()) / 2}
            heat = (heat + heatmap(mirrored, rgb.shape[-1]).float().flip(-1)) / 2
        probs.append(fake_probability(out).cpu().numpy())
        maps.append(heat.cpu().numpy())
    return np.concatenate(probs), np.concatenate(maps)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps or over the time budget, whichever ends first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


LOG_FIELDS = ["step", "minutes", "lr", "loss", "ce_rgb", "ce_gr", "ce_fused", "loc", "train_acc",
              "val_auc", "val_acc", "val_eer", "alpha_rgb", "threshold"]


class FaceRecipe(Recipe):
    """The face classifier's recipe of the training :class:`~manipseg.train.engine.Engine`: ``log.csv`` (a row
    per evaluation), ``last.pt`` (the checkpoint, at every evaluation), ``best.safetensors`` (best validation
    AUC) and ``last.safetensors``. ``init``: weights to start from (fine-tuning; fresh optimiser and schedule).
    A time budget of the Engine also shapes the learning rate (:func:`lr_at`)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, init: Path | None = None) -> None:
        self.cfg, self.run_dir, self.init = cfg, Path(run_dir), init

    def plan(self) -> Plan:
        cfg = self.cfg
        return Plan(run_dir=self.run_dir, steps=cfg.steps, images_per_step=2 * cfg.pairs_per_batch,
                    csv_fields=LOG_FIELDS, checkpoints=SingleCheckpoint(self.run_dir / "last.pt"), csv_name="log.csv",
                    csv_float_format="{:.5g}", log_every=cfg.eval_every, validate_every=cfg.eval_every,
                    checkpoint_every=cfg.eval_every, loss_key="total")

    def setup(self, checkpoint: dict[str, Any] | None, clock: Clock) -> int:
        cfg, run_dir, init = self.cfg, self.run_dir, self.init
        torch.set_num_threads(cfg.threads)
        run_dir.mkdir(parents=True, exist_ok=True)
        net_cfg = FaceNetConfig.from_dict(cfg.model)
        if cfg.blend_size and cfg.blend_size < net_cfg.size:
            raise ValueError(f"blend_size {cfg.blend_size} must be 0 or at least the network's input size {net_cfg.size}")
        if cfg.photo_blend and cfg.blend_size:
            raise ValueError("photo_blend and blend_size exclude each other (photo_blend blends at the photo's resolution)")
        lo, hi = cfg.paste_feather
        if not 0 <= lo <= hi:
            raise ValueError(f"paste_feather must be a range 0 <= low <= high (pixels), got {cfg.paste_feather}")
        if cfg.threshold_rate is not None and not 0 < cfg.threshold_rate < 1:
            raise ValueError(f"threshold_rate must be in (0, 1) or null, got {cfg.threshold_rate}")
        train_set, val_set, counts = split_train_val(cfg, cfg.blend_size or net_cfg.size, run_dir / "cache")
        log.info("faces (no identity in two splits): %s", counts)
        train_patches = val_patches = None
        if cfg.photo_blend:
            train_patches, val_patches = photo_patches(train_set, cfg.margin), photo_patches(val_set, cfg.margin)
            log.info("photo patches: %d train, %d validation (median side %d px)", len(train_patches), len(val_patches),
                     int(np.median([p.image.shape[0] for p in train_patches])))
        self.eval_crops, self.eval_labels = build_eval_set(val_set, cfg=cfg, size=net_cfg.size, patches=val_patches)

        torch.manual_seed(cfg.seed)  # the initial weights: the same seed, the same run
        self.net = net = AdapGRNet(net_cfg).to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        step, self.best = 0, -1.0
        if init is not None:  # fine-tune: start from trained weights, fresh optimiser and schedule
            from ..models.weights import load_weights

            state, info = load_weights(init)
            if FaceNetConfig.from_dict(info.get("arch_kwargs", {})) != net_cfg:
                raise ValueError(f"{init}: network settings differ from the config's model section")
            net.load_state_dict({k: v.float() for k, v in state.items()})
            log.info("initialised from %s", init)
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            step = int(checkpoint["step"])
            log.info("resumed from %s at step %d (best AUC %.4f)", run_dir / "last.pt", step, self.best)
        (run_dir / "config.json").write_text(json.dumps({**cfg.__dict__, "model": net_cfg.to_dict()}, indent=1,
                                                        default=list))
        self.sbi = SBIConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.sbi.items()})
        self.net_cfg, self.train_set, self.train_patches, self.counts = net_cfg, train_set, train_patches, counts
        self.clock = clock
        return step

    def step(self, step: int) -> dict[str, float]:
        from ..device import autocast

        cfg, net, opt, net_cfg = self.cfg, self.net, self.opt, self.net_cfg
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(len(self.train_set), cfg.pairs_per_batch, replace=False)
        crops, labels, masks = make_batch(self.train_set, idx, rng, cfg, self.sbi, size=net_cfg.size,
                                          patches=self.train_patches)
        rgb, res = to_tensors(crops, net_cfg)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, self.clock.fraction())
        net.train()
        with autocast("cpu", cfg.bf16):
            out = net(rgb, res)
        parts = losses(out, torch.from_numpy(labels), torch.from_numpy(masks), net_cfg.loc_weight)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
        pred = out["logits"].argmax(1).numpy()
        return {k: float(v.detach()) for k, v in parts.items()} | {"acc": float((pred == labels).mean()),
                                                                  "alpha": float(out["alpha"][:, 0].detach().mean())}

    def row(self, step: int, history: list[dict[str, float]]) -> dict[str, Any]:
        """Training losses and accuracy averaged since the last evaluation."""
        mean = self.mean = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
        return {"minutes": round(self.clock.minutes(), 2), "lr": self.opt.param_groups[0]["lr"], "loss": mean["total"],
                "ce_rgb": mean["ce_rgb"], "ce_gr": mean["ce_gr"], "ce_fused": mean["ce_fused"], "loc": mean["loc"],
                "train_acc": mean["acc"], "alpha_rgb": mean["alpha"]}

    def validate(self) -> dict[str, float]:
        """SBI AUC, accuracy and EER on the validation faces, at the calibrated threshold."""
        from .metrics import binary_metrics, eer_threshold

        cfg, labels = self.cfg, self.eval_labels
        probs, _ = predict_crops(self.net, self.eval_crops, cfg.bf16)
        if cfg.threshold_rate is None:
            threshold = eer_threshold(labels, probs)
        else:  # at most this share of the validation reals (people never trained on) flagged
            threshold = threshold_at_rate(probs[labels == 0], cfg.threshold_rate)
        m = binary_metrics(labels, probs, threshold)
        return {"val_auc": m["auc"], "val_acc": m["accuracy"], "val_eer": m["eer"], "threshold": threshold}

    def after_step(self, step: int, validation: dict[str, float] | None) -> None:
        """At an evaluation: ``best.safetensors`` when the AUC improved, and ``last.safetensors``."""
        from ..models.weights import save_weights

        if validation is None:
            return
        cfg, mean, v = self.cfg, self.mean, validation
        log.info("step %d loss %.4f acc %.3f | validation SBI AUC %.4f EER %.3f, acc %.3f at threshold %.3f",
                 step, mean["total"], mean["acc"], v["val_auc"], v["val_eer"], v["val_acc"], v["threshold"])
        meta = {"step": step, "val_auc_sbi": v["val_auc"], "val_eer": v["val_eer"], "threshold": v["threshold"],
                **self.counts, "data": cfg.faces, "extra_faces": list(cfg.extra_faces), "margin": cfg.margin}
        kwargs = self.net_cfg.to_dict()
        if v["val_auc"] > self.best:
            self.best = v["val_auc"]
            save_weights(self.run_dir / "best.safetensors", self.net, ARCH, kwargs, meta, kind="face-classifier")
        save_weights(self.run_dir / "last.safetensors", self.net, ARCH, kwargs, meta, kind="face-classifier")

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "opt": self.opt.state_dict(), "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.best = float(state["best"])
        if "rng" in state:  # (last.pt files written before the Engine have none)
            set_rng_state(state["rng"])

    def export(self, step: int, validation: dict[str, float]) -> Path:
        return self.run_dir / "best.safetensors"


def train(cfg: TrainConfig, run_dir: Path, max_minutes: float | None = None, init: Path | None = None) -> Path:
    """Train (continuing from ``RUN_DIR/last.pt`` when present) within ``max_minutes``; returns
    ``RUN_DIR/best.safetensors``."""
    recipe = FaceRecipe(cfg, Path(run_dir), init)
    Engine(recipe, max_minutes).run(resume=(Path(run_dir) / "last.pt").is_file())
    return Path(run_dir) / "best.safetensors"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m manipseg.faces.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None, help="YAML of TrainConfig options (configs/faces/faces.yaml)")
    p.add_argument("--run-dir", type=Path, required=True, help="where logs, checkpoints and weights go")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config option (repeatable), e.g. --set steps=4000 --set model.size=160")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training time budget: the learning rate decays to 0 over it, training stops past it")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    new = f"manipseg train {args.config or 'CONFIG'} --out {args.run_dir}" + (" --resume" if (args.run_dir / "last.pt").is_file() else "")
    print(f"python -m manipseg.faces.train is deprecated: use {new} (the config's recipe: faces; "
          "--init and --max-minutes work there too)", file=sys.stderr)
    try:
        cfg = TrainConfig.load(args.config, args.overrides)
    except ValueError as exc:
        p.error(str(exc))
    train(cfg, args.run_dir, args.max_minutes, args.init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
