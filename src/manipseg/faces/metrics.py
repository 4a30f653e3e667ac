"""Frame-level binary metrics: ROC AUC, accuracy at a threshold, equal error rate."""
from __future__ import annotations

import numpy as np

from ..eval.metrics import roc_auc  # noqa: F401 - one ROC AUC (scikit-learn's argument order) for the project


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate (interpolated)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or (~y).all():
        return float("nan")
    thr = np.unique(np.r_[s, np.inf])
    fpr = np.array([(s[~y] >= t).mean() for t in thr])
    fnr = np.array([(s[y] < t).mean() for t in thr])
    d = fpr - fnr  # decreasing in t from >= 0 to <= 0
    k = int(np.argmax(d <= 0))
    if k == 0:
        return float(fpr[0])
    d0, d1 = d[k - 1], d[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[k - 1] + w * (fpr[k] - fpr[k - 1]))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    return {"auc": roc_auc(y, s), "accuracy": float(((s >= threshold) == y).mean()), "eer": eer(y, s), "n": int(len(y))}


def eer_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold at the equal error rate: among the scores, the one minimising
    max(false-positive rate, false-negative rate) for the rule ``score >= threshold``."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or (~y).all():
        raise ValueError("eer_threshold needs both classes")
    thr = np.unique(s)
    fpr = (s[~y][None, :] >= thr[:, None]).mean(1)
    fnr = (s[y][None, :] < thr[:, None]).mean(1)
    return float(thr[int(np.argmin(np.maximum(fpr, fnr)))])
