"""End-to-end ``manipseg evaluate`` on a 3-image dataset with a detector whose output is known."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from manipseg import registry
from manipseg.cli import main
from manipseg.contract import Detector, Prediction
from manipseg.eval.attacks import parse_attacks
from manipseg.eval.datasets import open_dataset
from manipseg.eval.evaluate import evaluate

H, W = 16, 20
REPO = Path(__file__).resolve().parents[1]


@registry.register("test-halves", "test detector: left half 0.8, right half 0.2")
class HalvesDetector(Detector):
    """prob = 0.8 on the left half of its input and 0.2 on the right; score 0.9 for bright images."""

    def _predict(self, image):
        h, w = image.shape[:2]
        prob = np.full((h, w), 0.2, np.float32)
        prob[:, : w // 2] = 0.8
        return Prediction(prob, 0.9 if image.mean() > 128 else 0.1)


def write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr)


@pytest.fixture()
def dataset_dir(tmp_path):
    root = tmp_path / "ds"
    bright = np.full((H, W, 3), 200, np.uint8)
    write(root / "images" / "a.png", bright)
    write(root / "images" / "b.png", bright)
    write(root / "authentic" / "c.png", np.full((H, W, 3), 50, np.uint8))
    ma = np.zeros((H, W), np.uint8)
    ma[:, :10] = 255  # left half: exactly the 0.8 region
    mb = np.zeros((H, W), np.uint8)
    mb[:8, :10] = 255  # top-left quarter: half of the 0.8 region
    write(root / "masks" / "a.png", ma)
    write(root / "masks" / "b.png", mb)
    return root


# hand-computed figures (see the detector and masks above)
F1_LOW = (2 / 3 + 0.4) / 2  # t <= 0.2: everything predicted
F1_MID = (1 + 2 / 3) / 2  # 0.2 < t <= 0.8: left half predicted
MCC_MID = (1 + 1 / np.sqrt(3)) / 2
IOU_MID = (1 + 0.5) / 2
AUC = (1 + (160 / 240 + 0.5 * 80 / 240)) / 2
POOLED_F1 = 480 / (480 + 80)


def test_evaluate_known_values(dataset_dir, tmp_path):
    ds = open_dataset(dataset_dir)
    out = tmp_path / "out"
    rep = evaluate(ds, HalvesDetector(), parse_attacks(["jpeg:70", "scale:0.5"]), out_dir=out,
                   save_probs=True, progress=False)
    clean = rep["runs"]["clean"]
    d, b = clean["detector"]["protocols"], clean["baseline"]["protocols"]
    assert clean["detector"]["n_scored"] == 2 and clean["detector"]["n_authentic"] == 1
    assert d["best_dataset"]["f1"] == pytest.approx(F1_MID)
    assert d["best_dataset"]["f1_threshold"] == pytest.approx(0.21)  # first grid point above 0.2
    assert d["best_dataset"]["mcc"] == pytest.approx(MCC_MID)
    assert d["best_dataset"]["iou"] == pytest.approx(IOU_MID)
    assert d["best_dataset"]["auc"] == pytest.approx(AUC)
    assert d["best_image"]["f1"] == pytest.approx(F1_MID)
    assert d["fixed_0.5"]["f1"] == pytest.approx(F1_MID)
    assert d["pooled"]["f1"] == pytest.approx(POOLED_F1)
    # trivial baseline: everything tampered
    assert b["best_dataset"]["f1"] == pytest.approx(F1_LOW) and b["fixed_0.5"]["f1"] == pytest.approx(F1_LOW)
    assert b["best_dataset"]["mcc"] == 0 and b["best_dataset"]["iou"] == pytest.approx((0.5 + 0.25) / 2)
    assert b["pooled"]["f1"] == pytest.approx(480 / (480 + 400)) and b["pooled"]["auc"] == 0.5
    # image level: bright tampered images score 0.9, the dark authentic one 0.1
    il = clean["detector"]["image_level"]
    assert il["auc"] == 1.0 and il["accuracy"] == 1.0
    assert clean["baseline"]["image_level"]["accuracy"] == pytest.approx(2 / 3)
    assert clean["detector"]["authentic_fp_rate_0.5"] == pytest.approx(0.5)
    # the map does not depend on content, so JPEG changes nothing; scale blurs the boundary a little
    assert rep["runs"]["jpeg:70"]["detector"]["protocols"] == d
    assert 0.5 < rep["runs"]["scale:0.5"]["detector"]["protocols"]["best_dataset"]["f1"] <= F1_MID + 1e-9
    # files
    for f in ["report.json", "report.md", "f1_vs_threshold.png", "pr_curve.png", "robustness.png", "qualitative.png",
              "probs/a.prob.png", "probs/b.prob.png", "probs/c.prob.png"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    saved = cv2.imread(str(out / "probs" / "a.prob.png"), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint16 and saved[0, 0] == round(0.8 * 65535) and saved[0, -1] == round(0.2 * 65535)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["runs"]["clean"]["detector"]["protocols"]["best_dataset"]["f1"] == pytest.approx(F1_MID)
    md = (out / "report.md").read_text()
    assert "baseline F1" in md and "| best_dataset | 0.833 |" in md and "Image level" in md


def test_check_script_agrees_with_evaluate(dataset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    evaluate(open_dataset(dataset_dir), HalvesDetector(), out_dir=out, save_probs=True, progress=False)
    spec = importlib.util.spec_from_file_location("check_f1", REPO / "scripts" / "check_f1_from_probs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code = mod.main([str(out / "probs"), str(dataset_dir / "masks"), "--report", str(out / "report.json")])
    text = capsys.readouterr().out
    assert code == 0 and "within" in text and f"{F1_MID:.4f}" in text


def test_cli_reports_and_skips_broken_image(dataset_dir, tmp_path, capsys):
    (dataset_dir / "images" / "broken.png").write_bytes(b"")
    write(dataset_dir / "masks" / "broken.png", np.full((H, W), 255, np.uint8))
    out = tmp_path / "cli"
    code = main(["evaluate", str(dataset_dir), "--model", "test-halves", "--attack", "jpeg:50",
                 "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1  # one image failed; the others were still evaluated and reported
    assert "broken" in captured.err and "all-tampered baseline" in captured.out
    rep = json.loads((out / "report.json").read_text())
    assert rep["runs"]["clean"]["n_failed"] == 1 and rep["runs"]["clean"]["detector"]["n_scored"] == 2
    assert rep["runs"]["clean"]["detector"]["protocols"]["best_dataset"]["f1"] == pytest.approx(F1_MID)


def test_cli_errors(dataset_dir, tmp_path, capsys, monkeypatch):
    assert main(["evaluate", str(dataset_dir), "--model", "test-halves", "--attack", "jpg:50"]) == 2
    assert "Did you mean 'jpeg'" in capsys.readouterr().err
    assert main(["evaluate", str(dataset_dir), "--model", "test-halves", "--format", "casia"]) == 2
    assert "Known formats" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(dataset_dir), "--model", "nio"]) == 2
    assert not (tmp_path / "manipseg-eval").exists()  # a usage error creates no output folder
    assert "noi" in capsys.readouterr().err
