"""Run a detector over a benchmark, clean and under attacks, and write the report.

:func:`evaluate` scores every sample with every protocol of :mod:`manipseg.eval.metrics`, beside the
trivial all-tampered baseline scored on exactly the same images, and writes into ``out_dir``:

``report.json``   every figure (protocols x metrics, per run), per-image results, quirks, failures, timing.
``report.md``     the same as tables for people.
``f1_vs_threshold.png``, ``pr_curve.png``, ``robustness.png`` (when attacks were run), ``qualitative.png``
                  (image / prediction / ground truth, as GSR-Net Fig. 3).
``probs/<name>.prob.png``  with ``save_probs``: the clean probability maps, 16-bit (value = prob x 65535).

An image that fails to load or to predict is reported and skipped (counted per run); the baseline
skips it too, so both are always measured on the same images.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..contract import Detector
from ..io import ImageLoadError, atomic_write, prob_to_u16, save_png
from ..parallel import PoolSpec, WorkerPool, absolute_if_file, pinned_environment, worker_detector
from . import plots
from .attacks import Attack
from .datasets import Dataset
from .metrics import PIXEL_METRICS, PROTOCOLS, Accumulator

log = logging.getLogger("manipseg.evaluate")

PROTOCOL_NOTES = {
    "best_dataset": "one threshold for the whole dataset, chosen per metric to maximise the mean per-image "
                    "score (GSR-Net Table 1); AUC = mean per-image AUC",
    "best_image": "each image at its own best threshold, then the mean (optimistic oracle)",
    "fixed_0.5": "mean per-image score at threshold 0.5",
    "pooled": "all pixels of all scored images pooled, best threshold; AUC over pooled pixels (16-bit)",
}
SCORED = ("pixel metrics use tampered images with a non-empty mask; authentic images and empty masks "
          "enter only image-level metrics")
BASELINE = "all-tampered: prob = 1 at every pixel, score = 1"


@dataclass
class Run:
    name: str
    attack: Attack | None
    detector: Accumulator
    baseline: Accumulator
    failed: int = 0


@dataclass
class Timing:
    images: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        spm = self.seconds / self.megapixels if self.megapixels else None
        return {"images": self.images, "megapixels": round(self.megapixels, 4), "seconds": round(self.seconds, 3),
                "seconds_per_megapixel": None if spm is None else round(spm, 4)}


@dataclass
class Thumbs:
    rows: list[list[np.ndarray]] = field(default_factory=list)
    limit: int = 6
    height: int = 192

    def add(self, image: np.ndarray, prob: np.ndarray, mask: np.ndarray) -> None:
        if len(self.rows) >= self.limit:
            return
        h, w = mask.shape
        size = (max(1, round(w * self.height / h)), self.height)
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        p = cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
        self.rows.append([small, np.clip(p, 0, 1), m])


def _clean_json(obj):
    """NaN/inf -> None and numpy scalars -> Python, so that report.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate(dataset: Dataset, detector: Detector, attacks: list[Attack] | None = None,
             out_dir: str | Path | None = None, save_probs: bool = False, n_thresholds: int = 101,
             grid_rows: int = 6, progress: bool = True, max_pixels: int | None = None,
             model_label: str | None = None, pool: PoolSpec | None = None) -> dict:
    """Evaluate ``detector`` on ``dataset`` (clean + each attack). Returns the report dict; when
    ``out_dir`` is given, also writes the report files and plots there.

    ``pool`` spreads the images over worker processes or Ray (:mod:`manipseg.parallel`); every worker loads
    its own detector from ``model_label`` (the name or file ``detector`` came from) with this process's bf16
    and runtime decisions, and results are gathered in dataset order, so the report is the same as in one process."""

    pool = pool or PoolSpec()
    if pool.parallel and not model_label:
        raise ValueError("a parallel evaluation needs the model's name or file (model_label=...) for the workers")
    own = float(getattr(detector, "threshold", 0.5))
    cal = getattr(detector, "calibration", None)
    verdict = float(cal.threshold) if cal is not None else None  # the calibrated "likely manipulated" score
    runs = [Run("clean", None, Accumulator(n_thresholds, own, verdict), Accumulator(n_thresholds))]
    runs += [Run(a.name, a, Accumulator(n_thresholds, own, verdict), Accumulator(n_thresholds)) for a in attacks or []]
    out = Path(out_dir) if out_dir is not None else None
    if save_probs and out is None:
        raise ValueError("save_probs needs an output directory")
    timing = Timing()
    thumbs = Thumbs(limit=grid_rows)
    failures: list[dict] = []
    if pool.parallel:
        factory, args = _eval_state, (absolute_if_file(model_label), str(detector.device),
                                      pinned_environment(detector), dataset, attacks or [], max_pixels,
                                      thumbs.height)
    else:
        factory, args = (lambda: (detector, dataset, attacks or [], max_pixels, thumbs.height)), ()
    bar = tqdm(total=len(dataset), desc=f"evaluate {detector.name}", unit="img", disable=not progress)
    with WorkerPool(factory, args, pool) as workers:
        # one result per worker in flight, plus one: each holds full-resolution maps for every attack
        for item in workers.imap(_evaluate_item, range(len(dataset)), window=workers.size + 1):
            bar.update(1)
            sample = dataset[item["index"]]
            if item["error"] is not None:
                failures.append({"name": sample.name, "run": "all", "error": item["error"]})
                log.error("skipped %s: %s", sample.name, item["error"])
                for run in runs:
                    run.failed += 1
                continue
            mask = item["mask"]
            for run, res in zip(runs, item["runs"]):
                if "error" in res:
                    failures.append({"name": sample.name, "run": run.name, "error": res["error"]})
                    log.error("skipped %s (%s): %s", sample.name, run.name, res["error"])
                    run.failed += 1
                    continue
                prob = res["prob"]
                run.detector.add(sample.name, prob, mask, res["score"], sample.authentic)
                run.baseline.add_constant(sample.name, 1.0, mask, sample.authentic)
                if run.attack is None:
                    timing.images += 1
                    timing.megapixels += item["megapixels"]
                    timing.seconds += res["seconds"]
                    if save_probs:
                        save_png(out / "probs" / f"{sample.name}.prob.png", prob_to_u16(prob))
                    if mask is not None and mask.any():
                        thumbs.add(item["thumb"], prob, mask)
    bar.close()

    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(dataset.root), "format": dataset.format, "mask_convention": dataset.convention,
                    "n_samples": len(dataset), "n_tampered": dataset.n_tampered,
                    "n_authentic": dataset.n_authentic, "quirks": dataset.quirks},
        "detector": {"name": detector.name, "model": model_label or detector.name, "device": detector.device,
                     "class": type(detector).__name__},
        "definitions": {"protocols": PROTOCOL_NOTES, "scored_images": SCORED, "baseline": BASELINE,
                        "thresholds": f"{n_thresholds} evenly spaced from 0 to 1; tampered where prob >= t"},
        "runs": {r.name: {"attack": r.attack.name if r.attack else None, "n_failed": r.failed,
                          "detector": r.detector.summary(), "baseline": r.baseline.summary()} for r in runs},
        "timing": timing.as_dict(),
        "failures": failures,
        "per_image": runs[0].detector.per_image(),
    }
    report = _clean_json(report)
    if out is not None:
        report["files"] = write_outputs(out, report, runs, thumbs)
    return report


def _eval_state(model: str, device: str, env: dict[str, str], dataset: Dataset, attacks: list[Attack],
                max_pixels: int | None, thumb_height: int) -> tuple:
    """A worker's detector (:func:`manipseg.parallel.worker_detector`) and the evaluation's inputs."""
    return worker_detector(model, device, env), dataset, attacks, max_pixels, thumb_height


def _evaluate_item(state: tuple, index: int) -> dict:
    """Load sample ``index`` and run the detector on it clean and under each attack (failures reported, not
    raised, so the evaluation goes on)."""
    detector, dataset, attacks, max_pixels, thumb_height = state
    sample = dataset[index]
    try:
        image, mask = dataset.load(index, max_pixels=max_pixels)
    except (ImageLoadError, OSError, ValueError) as exc:
        return {"index": index, "error": str(exc)}
    results = []
    for attack in [None, *attacks]:
        try:
            attacked = attack.apply(image, sample.name) if attack else image
            start = time.perf_counter()
            pred = detector.predict(attacked)
            seconds = time.perf_counter() - start
            prob = attack.restore(pred.prob, image.shape[:2]) if attack else pred.prob
        except Exception as exc:  # noqa: BLE001 - any detector failure is reported and the image skipped
            results.append({"error": f"{type(exc).__name__}: {exc}"})
            continue
        results.append({"prob": prob, "score": pred.score, "seconds": seconds})
    h, w = image.shape[:2]
    thumb = None
    if mask is not None and mask.any():  # the image at the qualitative grid's height (Thumbs.add)
        thumb = cv2.resize(image, (max(1, round(w * thumb_height / h)), thumb_height), interpolation=cv2.INTER_AREA)
    return {"index": index, "error": None, "mask": mask, "runs": results, "megapixels": h * w / 1e6, "thumb": thumb}


# -- outputs ------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def protocol_table(run: dict) -> list[str]:
    det, base = run["detector"]["protocols"], run["baseline"]["protocols"]
    head = "| protocol | F1 | MCC | IoU | AUC | baseline F1 | baseline MCC | baseline IoU | baseline AUC |"
    lines = [head, "|" + "---|" * 9]
    for p in PROTOCOLS:
        d, b = det.get(p, {}), base.get(p, {})
        cells = [_fmt(d.get(k)) for k in (*PIXEL_METRICS, "auc")] + [_fmt(b.get(k)) for k in (*PIXEL_METRICS, "auc")]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


def _thresholds_line(run: dict) -> str:
    det = run["detector"]["protocols"]
    label = {"f1": "F1", "mcc": "MCC", "iou": "IoU"}
    parts = [f"{p} {label[k]} at t={det[p][k + '_threshold']:.2f}" for p in ("best_dataset", "pooled")
             for k in PIXEL_METRICS if det.get(p, {}).get(k + "_threshold") is not None]
    return "Chosen thresholds: " + ", ".join(parts) + "." if parts else ""


def markdown(report: dict) -> str:
    ds, det, runs = report["dataset"], report["detector"], report["runs"]
    clean = runs["clean"]
    lines = [f"# manipseg evaluation: `{det['model']}` on `{ds['path']}`", "",
             f"- dataset format `{ds['format']}` (mask convention `{ds['mask_convention']}`): {ds['n_samples']} "
             f"samples, {ds['n_tampered']} tampered, {ds['n_authentic']} authentic",
             f"- pixel-level metrics scored on {clean['detector']['n_scored']} tampered images "
             f"({clean['detector']['n_empty_mask']} with an empty mask left out); {SCORED}",
             f"- baseline: {BASELINE}", f"- created {report['created']}", "", "## Clean images", ""]
    lines += protocol_table(clean)
    lines += ["", _thresholds_line(clean), ""]
    perm, own = clean["detector"].get("permuted") or {}, clean["detector"].get("own_threshold")
    if perm.get("f1_best_image") is not None:
        lines += [f"Permuted per-image F1 (better of the map and its inverse): best threshold "
                  f"{_fmt(perm['f1_best_image'])}, at 0.5 {_fmt(perm['f1_fixed_0.5'])}."]
    if own:
        lines += [f"At the detector's own threshold {own['threshold']:.2f}: F1 {_fmt(own['f1'])}, MCC {_fmt(own['mcc'])}, "
                  f"IoU {_fmt(own['iou'])}."]
    lines.append("")
    il, bil = clean["detector"].get("image_level"), clean["baseline"].get("image_level")
    if il:
        lines += ["## Image level (tampered vs authentic)", "", "| | AUC | accuracy@0.5 | TPR | TNR |", "|---|---|---|---|---|",
                  f"| detector | {_fmt(il['auc'])} | {_fmt(il['accuracy'])} | {_fmt(il['tpr'])} | {_fmt(il['tnr'])} |",
                  f"| baseline | {_fmt(bil['auc'])} | {_fmt(bil['accuracy'])} | {_fmt(bil['tpr'])} | {_fmt(bil['tnr'])} |"]
        lines += ["", f"At the detector's threshold {il['decision_threshold']:.2f}: TPR {_fmt(il['tpr_at_threshold'])}, "
                  f"FPR {_fmt(il['fpr_at_threshold'])}; TPR at 5 % FPR {_fmt(il['tpr_at_fpr_5'])}."]
        if "verdict_threshold" in il:
            lines += ["", f"'Likely manipulated' (calibrated verdict, score >= {il['verdict_threshold']:.3f}): "
                      f"{_fmt(il['tpr_at_verdict'])} of the forgeries, {_fmt(il['fpr_at_verdict'])} of the authentic images."]
        if clean["detector"].get("authentic_fp_rate_0.5") is not None:
            lines += ["", f"Fraction of authentic pixels flagged at 0.5: {_fmt(clean['detector']['authentic_fp_rate_0.5'])}"]
        lines.append("")
    if len(runs) > 1:
        lines += ["## Robustness (best_dataset protocol)", "",
                  "| run | F1 | MCC | IoU | AUC | baseline F1 | scored | failed |", "|---|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            d = r["detector"]["protocols"].get("best_dataset", {})
            b = r["baseline"]["protocols"].get("best_dataset", {})
            lines.append(f"| {name} | {_fmt(d.get('f1'))} | {_fmt(d.get('mcc'))} | {_fmt(d.get('iou'))} | "
                         f"{_fmt(d.get('auc'))} | {_fmt(b.get('f1'))} | {r['detector']['n_scored']} | {r['n_failed']} |")
        lines.append("")
        for name, r in list(runs.items())[1:]:
            lines += [f"### {name}", ""] + protocol_table(r) + [""]
    lines += ["## Dataset quirks", ""]
    lines += [f"- {k}: {v}" for k, v in ds["quirks"].items()] or ["- none"]
    t = report["timing"]
    lines += ["", "## Timing (clean run)", "",
              f"{t['images']} images, {t['megapixels']:.2f} MP in {t['seconds']:.1f} s: "
              f"{_fmt(t['seconds_per_megapixel'])} s per megapixel", ""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- `{f['name']}` ({f['run']}): {f['error']}" for f in report["failures"]] + [""]
    lines += ["## Protocols", ""] + [f"- `{k}`: {v}" for k, v in report["definitions"]["protocols"].items()]
    files = report.get("files", {})
    if files.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in files["plots"]]
    return "\n".join(lines) + "\n"


def _panels(report: dict) -> list[dict]:
    order = {"jpeg": lambda v: -v, "scale": lambda v: -v, "blur": lambda v: v, "noise": lambda v: v}
    runs = report["runs"]
    clean_d = runs["clean"]["detector"]["protocols"].get("best_dataset", {}).get("f1")
    clean_b = runs["clean"]["baseline"]["protocols"].get("best_dataset", {}).get("f1")
    by_kind: dict[str, list[tuple[float, str]]] = {}
    for name, r in runs.items():
        if r["attack"]:
            kind, _, value = name.partition(":")
            by_kind.setdefault(kind, []).append((float(value), name))
    panels = []
    for kind, items in by_kind.items():
        items.sort(key=lambda it: order[kind](it[0]))
        names = [n for _, n in items]
        f = lambda r, who: r[who]["protocols"].get("best_dataset", {}).get("f1")  # noqa: E731
        det = [clean_d] + [f(runs[n], "detector") for n in names]
        base = [clean_b] + [f(runs[n], "baseline") for n in names]
        panels.append({"kind": kind, "labels": ["none"] + [n.split(":")[1] for n in names],
                       "detector": [np.nan if v is None else v for v in det],
                       "baseline": [np.nan if v is None else v for v in base]})
    return panels


def write_outputs(out: Path, report: dict, runs: list[Run], thumbs: Thumbs) -> dict:
    """Write plots, qualitative grid, report.json and report.md; return the relative file names."""
    from ..visualize import grid

    out.mkdir(parents=True, exist_ok=True)
    title = f"{report['detector']['model']} on {Path(report['dataset']['path']).name}"
    plot_files = []
    clean = runs[0]
    if clean.detector.records:
        t = clean.detector.thresholds
        curves = {"detector, mean per-image F1": clean.detector.curves()["f1"].mean(axis=0),
                  "detector, pooled-pixel F1": clean.detector.pooled_curves()["f1"],
                  "all-tampered baseline, mean per-image F1": clean.baseline.curves()["f1"].mean(axis=0)}
        plots.f1_vs_threshold(out / "f1_vs_threshold.png", t, curves, title)
        precision, recall = clean.detector.pr_curve()
        pos = sum(r.pos for r in clean.detector.records)
        total = sum(r.pos + r.neg for r in clean.detector.records)
        plots.pr_curve(out / "pr_curve.png", precision, recall, pos / total, title)
        plot_files += ["f1_vs_threshold.png", "pr_curve.png"]
    panels = _panels(report)
    if panels:
        plots.robustness(out / "robustness.png", panels, title)
        plot_files.append("robustness.png")
    if thumbs.rows:
        save_png(out / "qualitative.png", grid(thumbs.rows, cell=thumbs.height))
        plot_files.append("qualitative.png")
    files = {"report_json": "report.json", "report_md": "report.md", "plots": plot_files}
    report["files"] = files
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2), encoding="utf-8"))
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(markdown(report), encoding="utf-8"))
    return files


def summary_table(report: dict) -> str:
    """Compact stdout table: every protocol on clean images, best_dataset per attack, baseline beside."""
    cols = " ".join(f"{c:>6}" for c in ("F1", "MCC", "IoU", "AUC"))
    head = f"{'run':<12} {'protocol':<13} {cols}  | all-tampered baseline: {cols}"
    lines = [head, "-" * len(head)]
    for name, r in report["runs"].items():
        protos = PROTOCOLS if name == "clean" else ("best_dataset",)
        for p in protos:
            d = r["detector"]["protocols"].get(p, {})
            b = r["baseline"]["protocols"].get(p, {})
            dv = " ".join(f"{_fmt(d.get(k)):>6}" for k in (*PIXEL_METRICS, "auc"))
            bv = " ".join(f"{_fmt(b.get(k)):>6}" for k in (*PIXEL_METRICS, "auc"))
            lines.append(f"{name:<12} {p:<13} {dv}  | {'':<22} {bv}")
    perm = report["runs"]["clean"]["detector"].get("permuted") or {}
    if perm.get("f1_best_image") is not None:
        lines.append(f"permuted per-image F1: best {_fmt(perm['f1_best_image'])}, at 0.5 {_fmt(perm['f1_fixed_0.5'])}")
    il = report["runs"]["clean"]["detector"].get("image_level")
    vl = report["runs"]["clean"]["detector"].get("verdict_level")
    if vl and "tpr_at_verdict" in vl:
        lines.append(f"'likely manipulated' (calibrated verdict, score >= {vl['verdict_threshold']:.3f}): "
                     f"{_fmt(vl['tpr_at_verdict'])} of the forgeries")
    if il:
        lines.append(f"image level: AUC {_fmt(il['auc'])}, accuracy@0.5 {_fmt(il['accuracy'])} "
                     f"(baseline AUC 0.500, accuracy {_fmt(report['runs']['clean']['baseline']['image_level']['accuracy'])}); "
                     f"at the detector's threshold {il['decision_threshold']:.2f}: TPR {_fmt(il['tpr_at_threshold'])}, "
                     f"FPR {_fmt(il['fpr_at_threshold'])}; TPR at 5 % FPR {_fmt(il['tpr_at_fpr_5'])}"
                     + (f"; 'likely manipulated' (score >= {il['verdict_threshold']:.3f}): TPR {_fmt(il['tpr_at_verdict'])}, "
                        f"FPR {_fmt(il['fpr_at_verdict'])}" if "verdict_threshold" in il else ""))
    return "\n".join(lines)
