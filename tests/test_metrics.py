"""Metrics and protocols checked against scikit-learn on random and hand-made cases."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, matthews_corrcoef, roc_auc_score

from manipseg.eval import metrics as M

T = M.threshold_grid(101)
pytestmark = pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")


def sk_metrics(prob, mask, t):
    y, yhat = mask.ravel(), (prob.astype(np.float64) >= t).ravel()
    return {"f1": f1_score(y, yhat, zero_division=0), "mcc": matthews_corrcoef(y, yhat),
            "iou": jaccard_score(y, yhat, zero_division=0)}


def random_case(rng, shape=(23, 31), frac=0.3, quantised=False):
    mask = rng.random(shape) < frac
    prob = np.clip(0.35 * mask + rng.random(shape) * 0.7, 0, 1).astype(np.float32)
    if quantised:
        prob = (np.rint(prob * 65535) / 65535).astype(np.float32)
    return prob, mask


def test_grid_contains_half_and_rejects_even():
    assert 0.5 in M.threshold_grid(101)
    with pytest.raises(ValueError, match="odd"):
        M.threshold_grid(100)


def test_confusion_curve_matches_thresholding_exactly():
    rng = np.random.default_rng(0)
    prob, mask = random_case(rng)
    # values exactly on grid points and float32 values just around them
    prob.flat[:10] = np.float32([0.0, 0.29, 0.5, 1.0, 0.01, 0.57, 0.99, 0.3, 0.7, 0.1])
    tp, fp = M.confusion_curve(prob, mask, T)
    for j, t in enumerate(T):
        pred = prob.astype(np.float64) >= t
        assert tp[j] == np.sum(pred & mask) and fp[j] == np.sum(pred & ~mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_curves_match_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    prob, mask = random_case(rng, frac=[0.05, 0.3, 0.8][seed])
    tp, fp = M.confusion_curve(prob, mask, T)
    curves = M.metric_curves(tp, fp, int(mask.sum()), int((~mask).sum()))
    for j in range(0, 101, 7):
        ref = sk_metrics(prob, mask, T[j])
        for k in M.PIXEL_METRICS:
            assert curves[k][j] == pytest.approx(ref[k], abs=1e-12), (k, T[j])


def test_degenerate_cases_match_sklearn():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    # all-zero prediction: F1 = IoU = 0, MCC = 0 (sklearn convention)
    zero = np.zeros((8, 8), np.float32)
    # all-one mask and an all-one prediction: MCC denominator 0 -> 0
    full = np.ones((8, 8), bool)
    for prob, m in [(zero, mask), (np.ones((8, 8), np.float32), mask), (np.ones((8, 8), np.float32), full),
                    (zero + 0.3, full)]:
        tp, fp = M.confusion_curve(prob, m, T)
        curves = M.metric_curves(tp, fp, int(m.sum()), int((~m).sum()))
        for t_idx in (0, 50, 100):
            ref = sk_metrics(prob, m, T[t_idx])
            for k in M.PIXEL_METRICS:
                assert curves[k][t_idx] == pytest.approx(ref[k], abs=1e-12)


def test_hand_made_values():
    mask = np.array([[1, 1, 0, 0]], bool)
    prob = np.array([[0.9, 0.4, 0.6, 0.1]], np.float32)
    tp, fp = M.confusion_curve(prob, mask, T)
    c = M.metric_curves(tp, fp, 2, 2)
    # t=0.5: TP=1 FP=1 FN=1 TN=1 -> F1 0.5, IoU 1/3, MCC 0
    assert c["f1"][50] == pytest.approx(0.5) and c["iou"][50] == pytest.approx(1 / 3) and c["mcc"][50] == 0
    # t=0.7: TP=1 FP=0 FN=1 TN=2 -> F1 2/3, MCC 1/sqrt(3)
    assert c["f1"][70] == pytest.approx(2 / 3) and c["mcc"][70] == pytest.approx(1 / np.sqrt(3))
    assert M.roc_auc(mask, prob) == pytest.approx(0.75)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.4
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(M.roc_auc(np.ones(500, bool), s))


def test_histogram_auc_is_exact_on_quantised_scores():
    rng = np.random.default_rng(4)
    prob, mask = random_case(rng, quantised=True)
    q = M.quantise16(prob).ravel()
    pos = np.bincount(q[mask.ravel()], minlength=65536)
    neg = np.bincount(q[~mask.ravel()], minlength=65536)
    assert M.auc_from_histograms(pos, neg) == pytest.approx(roc_auc_score(mask.ravel(), prob.ravel()), abs=1e-12)


def test_protocols_against_sklearn():
    rng = np.random.default_rng(5)
    cases = [random_case(rng, shape=(17 + i, 29), frac=f, quantised=True) for i, f in enumerate([0.1, 0.3, 0.6])]
    acc = M.Accumulator()
    for i, (p, m) in enumerate(cases):
        acc.add(f"im{i}", p, m, score=0.9, authentic=False)
    s = acc.summary()["protocols"]
    # per-image sklearn curves on a grid
    ref = {k: np.array([[sk_metrics(p, m, t)[k] for t in T] for p, m in cases]) for k in M.PIXEL_METRICS}
    for k in M.PIXEL_METRICS:
        mean_curve = ref[k].mean(axis=0)
        assert s["best_dataset"][k] == pytest.approx(mean_curve.max(), abs=1e-12)
        assert s["best_dataset"][f"{k}_threshold"] == pytest.approx(T[np.argmax(mean_curve)])
        assert s["best_image"][k] == pytest.approx(ref[k].max(axis=1).mean(), abs=1e-12)
        assert s["fixed_0.5"][k] == pytest.approx(mean_curve[50], abs=1e-12)
    all_p = np.concatenate([p.ravel() for p, _ in cases])
    all_m = np.concatenate([m.ravel() for _, m in cases])
    pooled_f1 = max(f1_score(all_m, all_p.astype(np.float64) >= t) for t in T)
    assert s["pooled"]["f1"] == pytest.approx(pooled_f1, abs=1e-12)
    assert s["pooled"]["auc"] == pytest.approx(roc_auc_score(all_m, all_p), abs=1e-12)
    mean_auc = np.mean([roc_auc_score(m.ravel(), p.ravel()) for p, m in cases])
    assert s["best_dataset"]["auc"] == pytest.approx(mean_auc, abs=1e-12)


def test_authentic_and_empty_masks_only_enter_image_level():
    rng = np.random.default_rng(6)
    p, m = random_case(rng)
    acc = M.Accumulator()
    acc.add("t", p, m, score=0.8, authentic=False)
    acc.add("empty", p, np.zeros_like(m), score=0.7, authentic=False)
    acc.add("a1", np.zeros_like(p), None, score=0.2, authentic=True)
    acc.add("a2", np.ones_like(p), None, score=0.75, authentic=True)
    s = acc.summary()
    assert s["n_scored"] == 1 and s["n_empty_mask"] == 1 and s["n_authentic"] == 2
    only = M.Accumulator()
    only.add("t", p, m, score=0.8, authentic=False)
    assert s["protocols"] == only.summary()["protocols"]
    il = s["image_level"]
    labels, scores = [1, 1, 0, 0], [0.8, 0.7, 0.2, 0.75]
    assert il["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert il["accuracy"] == pytest.approx(0.75) and il["tnr"] == 0.5 and il["tpr"] == 1.0
    assert s["authentic_fp_rate_0.5"] == pytest.approx(0.5)
    assert only.summary()["image_level"] is None
    assert "verdict_threshold" not in il
    calibrated = M.Accumulator(verdict_threshold=0.72)
    for name, score, auth in (("t", 0.8, False), ("empty", 0.7, False), ("a1", 0.2, True), ("a2", 0.75, True)):
        calibrated.add(name, p, None if auth else m, score=score, authentic=auth)
    cil = calibrated.summary()["image_level"]
    assert cil["verdict_threshold"] == 0.72 and cil["tpr_at_verdict"] == 0.5 and cil["fpr_at_verdict"] == 0.5


def test_trivial_baseline_constant_equals_full_map():
    rng = np.random.default_rng(7)
    a, b = M.Accumulator(), M.Accumulator()
    fl = []
    for i in range(3):
        _, m = random_case(rng, frac=0.1 * (i + 1))
        a.add(str(i), np.ones(m.shape, np.float32), m, 1.0, False)
        b.add_constant(str(i), 1.0, m, False)
        fl.append(f1_score(m.ravel(), np.ones(m.size, bool)))
    sa, sb = a.summary()["protocols"], b.summary()["protocols"]
    for p in M.PROTOCOLS:
        for k in ("f1", "mcc", "iou", "auc"):
            assert sa[p][k] == pytest.approx(sb[p][k], abs=1e-12), (p, k)
    assert sb["best_dataset"]["f1"] == pytest.approx(np.mean(fl))
    assert sb["best_dataset"]["mcc"] == 0 and sb["pooled"]["auc"] == 0.5


@pytest.mark.parametrize("n", [101, 11, 257])
def test_threshold_bins_equal_searchsorted(n):
    grid = M.threshold_grid(n)
    rng = np.random.default_rng(n)
    p = np.concatenate([rng.random(5000), grid, np.nextafter(grid, -1)[1:], np.nextafter(grid, 2)[:-1],
                        grid.astype(np.float32).astype(np.float64), [0.0, 1.0]])
    p = np.clip(p, 0, 1)
    assert np.array_equal(M.threshold_bins(p, grid), np.searchsorted(grid, p, side="right"))


def test_per_image_auc_close_to_float_auc():
    rng = np.random.default_rng(8)
    prob, mask = random_case(rng, shape=(60, 70))
    acc = M.Accumulator()
    rec = acc.add("x", prob, mask, 0.5, False)
    assert rec.auc == pytest.approx(roc_auc_score(mask.ravel(), prob.ravel()), abs=1e-4)
