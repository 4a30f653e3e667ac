"""Pixel- and image-level metrics of manipulation localisation under the field's protocols.

Thresholds. All threshold sweeps use one fixed grid ``t_j = numpy.linspace(0, 1, T)[j]`` (T = 101 by
default: 0.00, 0.01, ..., 1.00); a pixel is predicted tampered at ``t_j`` when ``prob >= t_j`` (prob as
float64). Per image, one pass (the grid bin of every pixel, then one ``np.bincount`` split by the mask)
gives the confusion counts at every threshold, and one more the 16-bit histograms for the AUCs.

Which images count.
  * Pixel-level metrics use only tampered images whose mask has at least one tampered pixel.
  * Authentic images, and tampered images with an empty mask, enter only image-level metrics
    (and the authentic false-positive rate below). An F1/IoU on an image with nothing to find is
    undefined (0/0) or only measures false alarms, so it is left out rather than set to 0 or 1.

Per-image metrics at threshold t (TP, FP, FN, TN of that image):
  F1 = 2TP / (2TP + FP + FN); IoU = TP / (TP + FP + FN); MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)
  (TN+FP)(TN+FN)), 0 when the denominator is 0 (as scikit-learn); AUC = ROC AUC of the probabilities
  against the mask (ties count one half), undefined (NaN, left out of means) when the mask covers the
  whole image. AUCs are computed on probabilities quantised to 16 bits (``round(prob * 65535)``, the
  precision of the ``.prob.png`` files) from histograms: exact for such maps, and within ~1e-5 of the
  float AUC otherwise.

Protocols (each reported for F1, MCC and IoU; AUC is threshold-free):
  ``best_dataset``  GSR-Net Table 1 ("vary the prediction threshold ... report the optimal score over
                    the whole dataset"): for each metric, the one grid threshold that maximises the MEAN
                    per-image metric over the scored images; the mean at that threshold is reported with
                    the threshold. Each metric gets its own best threshold. AUC: mean per-image AUC.
  ``best_image``    each image at its own best grid threshold, then the mean (an optimistic oracle).
  ``fixed_0.5``     mean per-image metric at threshold 0.5.
  ``pooled``        all pixels of all scored images pooled into one confusion matrix per threshold; the
                    best grid threshold is reported. AUC: ROC AUC of all pooled pixels.

Permuted F1 (the "permute" protocol of the TruFor / IMDL-BenCo tables): per image, the better of the map
and its inverse (``1 - prob``, i.e. the complement of the prediction at each grid threshold), at the
image's best threshold (``f1_best_image``) or at 0.5 (``f1_fixed_0.5``). It forgives a detector that finds
the right split of the image but labels the wrong side as tampered.

Image level (when the dataset has authentic images): ROC AUC of the image score against the label
(tampered = 1, from the dataset, whatever the mask), accuracy / TPR / TNR at score >= 0.5; TPR and FPR at
the detector's own decision threshold (``decision_threshold``, default 0.5) and the TPR at 5 % FPR (the
highest TPR of any score threshold whose FPR is at most 5 %).

The trivial baseline predicts "tampered" everywhere (prob = 1, score = 1). Its F1 is the floor every
detector must beat: mean of ``2P / (2P + N)`` on best_dataset/best_image/fixed_0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from ..io import prob_to_u16

PIXEL_METRICS = ("f1", "mcc", "iou")
PROTOCOLS = ("best_dataset", "best_image", "fixed_0.5", "pooled")
Q16 = 65535


def threshold_grid(n: int = 101) -> np.ndarray:
    """``n`` evenly spaced thresholds from 0 to 1; ``n`` must be odd so that 0.5 is on the grid."""
    if n < 3 or n % 2 == 0:
        raise ValueError(f"the threshold grid needs an odd number >= 3 of points (0.5 must be on it), got {n}")
    return np.linspace(0.0, 1.0, n)


def threshold_bins(prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For every pixel, the number of grid thresholds ``t`` with ``t <= prob`` (0..len(thresholds)).

    Exact (same result as ``np.searchsorted(thresholds, prob, "right")``) for an evenly spaced grid from
    0 to 1, but element-wise: a floor estimate corrected by one comparison on each side.
    """
    p = np.asarray(prob, dtype=np.float64).ravel()
    last = len(thresholds) - 1
    b = np.clip(np.floor(p * last), 0, last).astype(np.int64)  # estimate of the last j with t_j <= p
    b += (b < last) & (p >= thresholds[np.minimum(b + 1, last)])
    b -= (b > 0) & (p < thresholds[b])
    return b + (p >= thresholds[b])


def confusion_curve(prob: np.ndarray, mask: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at every threshold (``prob >= t``), in one pass over the pixels.

    Returns (tp, fp), int64 arrays of len(thresholds). FN = P - tp, TN = N - fp.
    """
    m = np.asarray(mask, dtype=bool).ravel()
    if np.size(prob) != m.size:
        raise ValueError(f"probability map of {np.shape(prob)} and mask of {np.shape(mask)} differ in shape")
    n = len(thresholds)
    # k = number of thresholds <= p: the pixel is predicted positive at t_j for j < k.
    k = threshold_bins(prob, thresholds)
    hist = np.bincount(k + (n + 1) * m, minlength=2 * (n + 1))
    neg_hist, pos_hist = hist[: n + 1], hist[n + 1:]
    tp = np.cumsum(pos_hist[::-1])[::-1][1:]
    fp = np.cumsum(neg_hist[::-1])[::-1][1:]
    return tp.astype(np.int64), fp.astype(np.int64)


def histograms16(prob: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of the 16-bit quantised probabilities of tampered and of authentic pixels."""
    m = np.asarray(mask, dtype=bool).ravel()
    hist = np.bincount(quantise16(prob).ravel() + (Q16 + 1) * m, minlength=2 * (Q16 + 1))
    return hist[Q16 + 1:], hist[: Q16 + 1]


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def iou_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = tp + fp + fn
    return np.divide(tp, den, out=np.zeros_like(den), where=den > 0)


def mcc_from_counts(tp, fp, fn, tn) -> np.ndarray:
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, den, out=np.zeros_like(den), where=den > 0)


def metric_curves(tp: np.ndarray, fp: np.ndarray, pos: int, neg: int) -> dict[str, np.ndarray]:
    """F1, MCC and IoU at every threshold from confusion curves."""
    fn, tn = pos - tp, neg - fp
    return {"f1": f1_from_counts(tp, fp, fn), "mcc": mcc_from_counts(tp, fp, fn, tn), "iou": iou_from_counts(tp, fp, fn)}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties); NaN when only one class is present.
    Arguments in scikit-learn's order (``roc_auc_score(y_true, y_score)``)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest TPR over score thresholds ("positive when score >= t") whose FPR is at most ``max_fpr``;
    NaN when only one class is present."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    neg = np.sort(scores[~labels])[::-1]
    k = int(math.floor(max_fpr * neg.size + 1e-9))  # negatives allowed above the threshold
    # threshold just above the (k+1)-th highest negative: at most k negatives reach it
    t = np.nextafter(neg[k], np.inf) if k < neg.size else -np.inf
    return float(np.mean(scores[labels] >= t))


def auc_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """ROC AUC of scores given as histograms over ordered bins (ties within a bin count one half)."""
    pos = np.asarray(pos_hist, dtype=np.float64)
    neg = np.asarray(neg_hist, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def quantise16(prob: np.ndarray) -> np.ndarray:
    """Probabilities as the integers 0..65535 stored in ``.prob.png`` files."""

    return prob_to_u16(prob).astype(np.int64)


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


@dataclass
class ImageRecord:
    name: str
    pos: int
    neg: int
    tp: np.ndarray
    fp: np.ndarray
    auc: float
    score: float


@dataclass
class Accumulator:
    """Collects per-image confusion curves, pooled histograms and image scores; :meth:`summary` applies
    every protocol. ``constant`` makes it score a constant map instead (the trivial baseline)."""

    n_thresholds: int = 101
    decision_threshold: float = 0.5   # the detector's own threshold (pixel F1 at it, image TPR / FPR at it)
    verdict_threshold: float | None = None  # the calibrated "likely manipulated" score, if any (TPR / FPR at it)
    thresholds: np.ndarray = field(init=False)
    records: list[ImageRecord] = field(default_factory=list)
    image_scores: list[float] = field(default_factory=list)
    image_labels: list[int] = field(default_factory=list)
    authentic_fp: list[float] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    pooled_pos16: np.ndarray = field(init=False)
    pooled_neg16: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = threshold_grid(self.n_thresholds)
        self.pooled_pos16 = np.zeros(Q16 + 1, dtype=np.int64)
        self.pooled_neg16 = np.zeros(Q16 + 1, dtype=np.int64)

    def add(self, name: str, prob: np.ndarray, mask: np.ndarray | None, score: float, authentic: bool) -> ImageRecord | None:
        """Add one image. ``mask`` is None for authentic images. Returns the pixel record, if scored."""
        self.image_scores.append(float(score))
        self.image_labels.append(0 if authentic else 1)
        prob = np.asarray(prob)
        if authentic or mask is None:
            self.authentic_fp.append(float(np.mean(prob >= 0.5)))
            return None
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            self.empty_masks.append(name)
            return None
        tp, fp = confusion_curve(prob, mask, self.thresholds)
        pos16, neg16 = histograms16(prob, mask)
        pos = int(mask.sum())
        rec = ImageRecord(name, pos, mask.size - pos, tp, fp, auc_from_histograms(pos16, neg16), float(score))
        self.pooled_pos16 += pos16
        self.pooled_neg16 += neg16
        self.records.append(rec)
        return rec

    def add_constant(self, name: str, value: float, mask: np.ndarray | None, authentic: bool) -> None:
        """Add a constant prediction (``prob = value`` everywhere, ``score = value``) without a full map."""
        self.image_scores.append(float(value))
        self.image_labels.append(0 if authentic else 1)
        if authentic or mask is None:
            self.authentic_fp.append(1.0 if value >= 0.5 else 0.0)
            return
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            self.empty_masks.append(name)
            return
        pos = int(mask.sum())
        neg = mask.size - pos
        on = (self.thresholds <= value).astype(np.int64)
        auc = 0.5 if neg > 0 else float("nan")
        self.records.append(ImageRecord(name, pos, neg, on * pos, on * neg, auc, float(value)))
        q = int(quantise16(np.array(value)))
        self.pooled_pos16[q] += pos
        self.pooled_neg16[q] += neg

    # -- protocols --------------------------------------------------------------------------
    def curves(self) -> dict[str, np.ndarray]:
        """Per-image metric curves stacked: metric -> (n_images, n_thresholds)."""
        per = [metric_curves(r.tp, r.fp, r.pos, r.neg) for r in self.records]
        return {k: np.stack([c[k] for c in per]) if per else np.zeros((0, self.n_thresholds)) for k in PIXEL_METRICS}

    def pooled_curves(self) -> dict[str, np.ndarray]:
        if not self.records:
            return {k: np.zeros(self.n_thresholds) for k in PIXEL_METRICS}
        tp = np.sum([r.tp for r in self.records], axis=0)
        fp = np.sum([r.fp for r in self.records], axis=0)
        pos = sum(r.pos for r in self.records)
        neg = sum(r.neg for r in self.records)
        return metric_curves(tp, fp, pos, neg)

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled precision and recall at every grid threshold (precision 1 where nothing is predicted)."""
        tp = np.sum([r.tp for r in self.records], axis=0).astype(np.float64)
        fp = np.sum([r.fp for r in self.records], axis=0).astype(np.float64)
        pos = sum(r.pos for r in self.records)
        precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
        return precision, tp / max(pos, 1)

    def summary(self) -> dict:
        """Every protocol, image-level metrics and counts, as plain JSON-able values."""
        t = self.thresholds
        out: dict = {"n_scored": len(self.records), "n_empty_mask": len(self.empty_masks),
                     "n_authentic": self.image_labels.count(0), "n_images": len(self.image_labels),
                     "n_thresholds": len(t)}
        protocols: dict[str, dict[str, float | None]] = {p: {} for p in PROTOCOLS}
        if self.records:
            curves = self.curves()
            pooled = self.pooled_curves()
            i_half = int(np.argmin(np.abs(t - 0.5)))
            for k in PIXEL_METRICS:
                mean_curve = curves[k].mean(axis=0)
                j = int(np.argmax(mean_curve))
                protocols["best_dataset"][k] = float(mean_curve[j])
                protocols["best_dataset"][f"{k}_threshold"] = float(t[j])
                protocols["best_image"][k] = float(curves[k].max(axis=1).mean())
                protocols["fixed_0.5"][k] = float(mean_curve[i_half])
                jp = int(np.argmax(pooled[k]))
                protocols["pooled"][k] = float(pooled[k][jp])
                protocols["pooled"][f"{k}_threshold"] = float(t[jp])
            mean_auc = _nanmean(r.auc for r in self.records)
            for p in ("best_dataset", "best_image", "fixed_0.5"):
                protocols[p]["auc"] = mean_auc
            protocols["pooled"]["auc"] = auc_from_histograms(self.pooled_pos16, self.pooled_neg16)
        out["protocols"] = protocols
        out["permuted"] = self.permuted()
        if self.records:
            j_own = int(np.argmin(np.abs(t - self.decision_threshold)))
            curves = self.curves()
            out["own_threshold"] = {"threshold": float(t[j_own]),
                                    **{k: float(curves[k][:, j_own].mean()) for k in PIXEL_METRICS}}
        out["image_level"] = self.image_level()
        labels = np.asarray(self.image_labels)
        if self.verdict_threshold is not None and labels.size and out["image_level"] is None:
            out["verdict_level"] = self._at_verdict(labels, np.asarray(self.image_scores))  # one class only
        if self.authentic_fp:
            out["authentic_fp_rate_0.5"] = float(np.mean(self.authentic_fp))
        return out

    def permuted(self) -> dict[str, float | None]:
        """Permuted per-image F1 (see the module docstring): best threshold and 0.5."""
        if not self.records:
            return {"f1_best_image": None, "f1_fixed_0.5": None}
        i_half = int(np.argmin(np.abs(self.thresholds - 0.5)))
        best, half = [], []
        for r in self.records:
            f1 = f1_from_counts(r.tp, r.fp, r.pos - r.tp)
            inv = f1_from_counts(r.pos - r.tp, r.neg - r.fp, r.tp)  # the complement of each prediction
            both = np.maximum(f1, inv)
            best.append(float(both.max()))
            half.append(float(both[i_half]))
        return {"f1_best_image": float(np.mean(best)), "f1_fixed_0.5": float(np.mean(half))}

    def image_level(self) -> dict | None:
        labels = np.asarray(self.image_labels)
        if labels.size == 0 or labels.min() == labels.max():
            return None
        scores = np.asarray(self.image_scores)
        pred = scores >= 0.5
        own = scores >= self.decision_threshold
        return {"auc": roc_auc(labels, scores), "accuracy": float(np.mean(pred == (labels == 1))),
                "tpr": float(np.mean(pred[labels == 1])), "tnr": float(np.mean(~pred[labels == 0])),
                "decision_threshold": float(self.decision_threshold),
                "tpr_at_threshold": float(np.mean(own[labels == 1])), "fpr_at_threshold": float(np.mean(own[labels == 0])),
                "tpr_at_fpr_5": tpr_at_fpr(labels, scores, 0.05),
                **self._at_verdict(labels, scores),
                "n_tampered": int(labels.sum()), "n_authentic": int((labels == 0).sum())}

    def _at_verdict(self, labels: np.ndarray, scores: np.ndarray) -> dict:
        if self.verdict_threshold is None:
            return {}
        flagged = scores >= self.verdict_threshold
        out = {"verdict_threshold": float(self.verdict_threshold), "tpr_at_verdict": float(np.mean(flagged[labels == 1]))}
        if (labels == 0).any():
            out["fpr_at_verdict"] = float(np.mean(flagged[labels == 0]))
        return out

    def per_image(self) -> list[dict]:
        """Per scored image: pixel counts, AUC, score, best F1 (threshold) and F1 at 0.5."""
        t = self.thresholds
        i_half = int(np.argmin(np.abs(t - 0.5)))
        rows = []
        for r in self.records:
            f1 = metric_curves(r.tp, r.fp, r.pos, r.neg)["f1"]
            j = int(np.argmax(f1))
            rows.append({"name": r.name, "tampered_pixels": r.pos, "pixels": r.pos + r.neg, "auc": r.auc,
                         "score": r.score, "best_f1": float(f1[j]), "best_threshold": float(t[j]),
                         "f1_0.5": float(f1[i_half])})
        return rows
