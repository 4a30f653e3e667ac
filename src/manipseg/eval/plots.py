"""Evaluation plots (matplotlib, Agg backend): F1 vs threshold, pooled PR curve, robustness curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_write


def _figure(ncols: int = 1, width: float = 5.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def _finish_axes(ax, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float],
                 title: str) -> None:
    """Labels, limits, grid, title and legend shared by the single-panel curve plots."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def f1_vs_threshold(path: Path, thresholds: np.ndarray, curves: dict[str, np.ndarray], title: str) -> Path:
    """``curves``: label -> F1 at every threshold (dashed when the label mentions 'baseline')."""
    plt, fig, (ax,) = _figure()
    for label, y in curves.items():
        style = "--" if "baseline" in label else "-"
        line, = ax.plot(thresholds, y, style, label=label)
        if "baseline" not in label and len(y):
            j = int(np.argmax(y))
            ax.plot(thresholds[j], y[j], "o", color=line.get_color())
    _finish_axes(ax, "threshold on P(tampered)", "F1", (0, 1), (0, 1), title)
    return _save(plt, fig, path)


def pr_curve(path: Path, precision: np.ndarray, recall: np.ndarray, base_precision: float, title: str) -> Path:
    """Pooled precision-recall curve with the all-tampered baseline (recall 1, precision = prevalence)."""
    plt, fig, (ax,) = _figure()
    ax.plot(recall, precision, "-", label="detector (pooled pixels)")
    ax.plot([1.0], [base_precision], "s", label=f"all-tampered baseline (P={base_precision:.3f})")
    ax.axhline(base_precision, ls=":", color="gray", lw=0.8)
    _finish_axes(ax, "recall", "precision", (0, 1.02), (0, 1.02), title)
    return _save(plt, fig, path)


def robustness(path: Path, panels: list[dict], title: str) -> Path:
    """One panel per attack kind: ``{"kind", "labels", "detector", "baseline"}`` (F1 per x position)."""
    plt, fig, axes = _figure(ncols=len(panels), width=4.2)
    for ax, panel in zip(axes, panels):
        x = np.arange(len(panel["labels"]))
        ax.plot(x, panel["detector"], "o-", label="detector")
        ax.plot(x, panel["baseline"], "s--", color="gray", label="all-tampered baseline")
        ax.set_xticks(x, panel["labels"])
        ax.set_xlabel(panel["kind"])
        ax.set_ylabel("F1 (best dataset threshold)")
        ax.set_ylim(0, max(0.2, 1.15 * max([*panel["detector"], *panel["baseline"], 0.0])))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)
