"""Image-level verdicts calibrated on authentic photos."""
import json

import numpy as np
import pytest

from manipseg import registry
from manipseg.calibration import (Calibration, CalibrationError, allowed_false_alarms, calibrate_scores, measure,
                                  threshold_at_rate, verdict_of)
from manipseg.cli import main
from manipseg.contract import Detector, Prediction
from manipseg.io import save_png


def test_threshold_at_rate_known_answers():
    scores = np.arange(100) / 100.0  # 0.00 ... 0.99
    t = threshold_at_rate(scores, 0.05)
    assert np.mean(scores >= t) == pytest.approx(0.05)  # exactly 5 of 100 reach it
    assert 0.94 < t <= 0.95 + 1e-9
    assert np.mean(scores >= threshold_at_rate(scores, 0.0)) == 0.0
    assert threshold_at_rate([0.3] * 10, 0.05) > 0.3  # ties: none of them may pass
    with pytest.raises(CalibrationError):
        threshold_at_rate([], 0.05)
    with pytest.raises(CalibrationError):
        threshold_at_rate([0.1], 1.0)


def test_a_rate_bounded_at_a_confidence():
    from scipy.stats import binom

    for n, rate in ((780, 0.05), (200, 0.05), (1000, 0.01)):
        k = allowed_false_alarms(n, rate, 0.95)
        assert k < allowed_false_alarms(n, rate)  # stricter than the plain quantile
        # Clopper-Pearson: with k of n seen, a true rate above `rate` would show k or fewer at most 5 % of the time
        assert binom.cdf(k, n, rate) <= 0.05 + 1e-9 < binom.cdf(k + 1, n, rate)
    assert allowed_false_alarms(780, 0.05, 0.95) == 28
    scores = np.arange(780) / 780.0
    assert np.sum(scores >= threshold_at_rate(scores, 0.05, confidence=0.95)) == 28
    with pytest.raises(CalibrationError, match="confidence"):
        allowed_false_alarms(100, 0.05, 1.5)
    assert allowed_false_alarms(59, 0.05, 0.95) == 0
    with pytest.raises(CalibrationError, match="58 photos are too few .*at least 59 are needed"):
        allowed_false_alarms(58, 0.05, 0.95)


def test_verdict_logic_and_round_trip(tmp_path):
    cal = calibrate_scores("x", np.linspace(0, 0.8, 81), rate=0.05, inconclusive_rate=0.25, sources=["a"])
    assert cal.low_threshold < cal.threshold
    assert cal.verdict(0.95) == "likely manipulated"
    assert cal.verdict((cal.low_threshold + cal.threshold) / 2) == "inconclusive"
    assert cal.verdict(0.0) == "no clear sign"
    m = measure(cal, np.linspace(0, 0.8, 81))
    assert m["flagged"] <= 0.05 and m["inconclusive_or_flagged"] <= 0.25
    path = cal.save(tmp_path / "c.json")
    again = Calibration.load(path)
    assert again == cal and again.confidence is None
    bounded = calibrate_scores("x", np.linspace(0, 0.8, 81), rate=0.05, confidence=0.95)
    assert bounded.threshold > cal.threshold and Calibration.load(bounded.save(tmp_path / "b.json")) == bounded
    assert Calibration.load(tmp_path / "b.json").confidence == 0.95
    bad = json.loads(path.read_text())
    bad["low_threshold"] = 0.99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(CalibrationError, match="low_threshold <= threshold"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="not found"):
        Calibration.load(tmp_path / "none.json")


class MeanScore(Detector):
    """Known answer: a hand-made map (a bright square) and the image's mean brightness as the score."""
    name = "meanscore-test"
    min_region = 0.0

    def _predict(self, image):
        h, w = image.shape[:2]
        prob = np.zeros((h, w), np.float32)
        prob[h // 4: h // 2, w // 4: w // 2] = 0.9
        return Prediction(prob, float(image.mean() / 255.0))


@pytest.fixture
def meanscore():
    registry.register("meanscore-test", "test detector")(MeanScore)
    yield "meanscore-test"
    registry.DETECTORS.remove("meanscore-test")


def test_calibrate_cli_then_predict_gives_consistent_verdicts_and_masks(tmp_path, meanscore, capsys):
    auth, other = tmp_path / "auth", tmp_path / "other"
    auth.mkdir()
    other.mkdir()
    for i in range(40):  # authentic photos of brightness 10 ... 205: scores 0.04 ... 0.80
        save_png(auth / f"a{i:02d}.png", np.full((32, 32, 3), 10 + 5 * i, np.uint8))
    for i in range(10):
        save_png(other / f"o{i}.png", np.full((32, 32, 3), 20 * i, np.uint8))
    out = tmp_path / "cal.json"
    # 40 photos cannot bound a 5 % rate at 95 % confidence (the default): a clear refusal, nothing written
    assert main(["calibrate", "--model", meanscore, "--authentic", str(auth), "--out", str(out), "--no-progress"]) == 2
    assert "too few" in capsys.readouterr().err and not out.exists()
    assert main(["calibrate", "--model", meanscore, "--authentic", str(auth), "--confidence", "1.5",
                 "--out", str(out)]) == 2 and "--confidence" in capsys.readouterr().err
    assert main(["calibrate", "--model", meanscore, "--authentic", str(auth), "--report", str(other),
                 "--out", str(out), "--no-progress", "--confidence", "0"]) == 0
    cal = Calibration.load(out)
    assert cal.n_images == 40 and cal.measured["calibration photos"]["flagged"] <= 0.05
    assert str(other) in cal.measured and cal.measured[str(other)]["n"] == 10
    assert "written to" in capsys.readouterr().out
    # the same folder for calibrating and reporting is refused
    assert main(["calibrate", "--model", meanscore, "--authentic", str(auth), "--report", str(auth),
                 "--out", str(tmp_path / "x.json")]) == 2
    bright, dark = tmp_path / "bright.png", tmp_path / "dark.png"
    save_png(bright, np.full((64, 64, 3), 250, np.uint8))
    save_png(dark, np.full((64, 64, 3), 5, np.uint8))
    res = tmp_path / "res"
    assert main(["predict", str(bright), str(dark), "--model", meanscore, "--calibration", str(out), "--out",
                 str(res), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "bright.png: likely manipulated" in text and "dark.png: no clear sign" in text
    recs = {r["stem"]: r for r in map(json.loads, (res / "predictions.jsonl").read_text().splitlines())}
    assert recs["bright"]["verdict"] == "likely manipulated" and recs["bright"]["false_alarm_rate"] == 0.05
    assert recs["bright"]["tampered_fraction"] > 0
    # judged authentic: no mask, and the record says why
    assert recs["dark"]["verdict"] == "no clear sign" and recs["dark"]["tampered_fraction"] == 0
    assert recs["dark"]["mask_note"].startswith("below the decision threshold")


def test_uncalibrated_detectors_say_so():
    class D(Detector):
        name = "d"
        threshold = 0.4

        def _predict(self, image):
            return Prediction(np.zeros(image.shape[:2], np.float32), 0.5)

    v = verdict_of(D(), 0.5)
    assert v == {"verdict": "uncalibrated", "manipulated": True, "score_threshold": 0.4, "false_alarm_rate": None}


def test_a_calibration_for_other_weights_is_not_used(tmp_path, caplog):
    import torch

    from manipseg.models.nets import build_network
    from manipseg.models.weights import save_weights
    from manipseg.calibration import sidecar_path

    torch.manual_seed(0)
    net = build_network("compact", width=4, head_channels=4, boundary_channels=4)
    w = save_weights(tmp_path / "n.safetensors", net, "compact", net.arch_kwargs, {"threshold": 0.5})
    cal = calibrate_scores(str(w), [0.1, 0.2, 0.3], weights_sha256="0" * 64)
    cal.save(sidecar_path(w))
    assert registry.load_detector(str(w)).calibration is None
    assert "made for other weights" in caplog.text
    from manipseg.calibration import weights_checksum

    cal.weights_sha256 = weights_checksum(registry.load_detector(str(w)))
    cal.save(sidecar_path(w))
    assert registry.load_detector(str(w)).calibration == cal


def test_a_calibration_measured_at_another_working_size_is_not_used(tmp_path, caplog):
    """The network's scores change with its working size (min_side / max_side): a calibration records the one it
    was measured at, and a detector running at another is left uncalibrated, with a warning."""
    import torch

    from manipseg.calibration import sidecar_path, weights_checksum, working_size_of
    from manipseg.models.nets import build_network
    from manipseg.models.weights import save_weights

    torch.manual_seed(0)
    net = build_network("compact", width=4, head_channels=4, boundary_channels=4)
    w = save_weights(tmp_path / "n.safetensors", net, "compact", net.arch_kwargs, {"threshold": 0.5})
    det = registry.load_detector(str(w))
    here = working_size_of(det)
    assert here == {"min_side": det.min_side, "max_side": det.max_side}
    other = {"min_side": (det.min_side or 0) + 64, "max_side": None}
    cal = calibrate_scores(str(w), [0.1, 0.2, 0.3], weights_sha256=weights_checksum(det), working_size=other)
    cal.save(sidecar_path(w))
    assert Calibration.load(sidecar_path(w)).working_size == other  # written and read back
    assert registry.load_detector(str(w)).calibration is None
    assert "working size" in caplog.text
    cal.working_size = here
    cal.save(sidecar_path(w))
    assert registry.load_detector(str(w)).calibration == cal
    fused = registry.create("fused", artifact=det)
    assert working_size_of(fused) == here  # a fusion reports its network's
    assert working_size_of(registry.create("noi")) is None


def test_a_calibration_measured_with_the_int8_network_is_not_used_for_fp32(tmp_path, caplog):
    """Scores change with the network's arithmetic: a calibration records it ("int8" for the quantised graph),
    and a detector running the network otherwise is left uncalibrated, with a warning."""
    import torch

    from manipseg.calibration import precision_of, sidecar_path, weights_checksum, working_size_of
    from manipseg.models.nets import build_network
    from manipseg.models.weights import save_weights

    torch.manual_seed(0)
    net = build_network("compact", width=4, head_channels=4, boundary_channels=4)
    w = save_weights(tmp_path / "n.safetensors", net, "compact", net.arch_kwargs, {"threshold": 0.5})
    det = registry.load_detector(str(w))
    assert precision_of(det) == "fp32" and precision_of(registry.create("noi")) is None
    cal = calibrate_scores(str(w), [0.1, 0.2, 0.3], weights_sha256=weights_checksum(det),
                           working_size=working_size_of(det), precision="int8")
    cal.save(sidecar_path(w))
    assert Calibration.load(sidecar_path(w)).precision == "int8"
    assert registry.load_detector(str(w)).calibration is None
    assert "the network in int8, the detector now runs it in fp32" in caplog.text
    cal.precision = "fp32"
    cal.save(sidecar_path(w))
    assert registry.load_detector(str(w)).calibration == cal
    # the shipped default was calibrated as it runs: the int8 graph
    default = registry.load_detector("gsr-fused")
    assert precision_of(default) == "int8" and default.calibration is not None
    assert default.calibration.precision == "int8"


def test_calibrate_a_fusion_and_its_network_in_one_pass(tmp_path, meanscore, capsys):
    """--network-out: the network inside a fused detector is calibrated from the same predictions — the same
    thresholds as calibrating that network on its own — and the option is refused for a detector without one."""
    from manipseg.models.fused import FusedDetector

    auth, other = tmp_path / "auth", tmp_path / "other"
    auth.mkdir()
    other.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        save_png(auth / f"a{i:02d}.png", np.full((32, 32, 3), 10 + 5 * i, np.uint8))
    for i in range(6):
        save_png(other / f"o{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))

    class FusedMean(FusedDetector):
        name = "fusedmean-test"
        default_artifact = meanscore

    registry.register("fusedmean-test", "test fusion")(FusedMean)
    try:
        common = ["--authentic", str(auth), "--report", str(other), "--no-progress", "--confidence", "0"]
        assert main(["calibrate", "--model", "fusedmean-test", "--out", str(tmp_path / "f.json"),
                     "--network-out", str(tmp_path / "n.json"), *common]) == 0
        assert main(["calibrate", "--model", meanscore, "--out", str(tmp_path / "alone.json"), *common]) == 0
    finally:
        registry.DETECTORS.remove("fusedmean-test")
    fused, net, alone = (Calibration.load(tmp_path / f) for f in ("f.json", "n.json", "alone.json"))
    assert fused.detector == "fusedmean-test" and net.detector == meanscore
    assert (net.threshold, net.low_threshold, net.measured) == (alone.threshold, alone.low_threshold, alone.measured)
    assert str(other) in net.measured and net.measured[str(other)]["n"] == 6
    assert main(["calibrate", "--model", meanscore, "--network-out", str(tmp_path / "x.json"), *common]) == 2
    assert "needs a fused detector" in capsys.readouterr().err


def test_a_detector_config_sets_the_network_working_size_and_is_calibrated_beside_it(tmp_path, capsys):
    """A YAML config naming the default with options of its network (here its working size) builds it on the
    bundled weights; the bundled calibration does not follow it (another working size), and `manipseg calibrate`
    on the config writes one beside it that `predict` then uses."""
    import yaml

    from manipseg.calibration import sidecar_path

    cfg = tmp_path / "fast.yaml"
    cfg.write_text(yaml.safe_dump({"name": "gsr-fused", "artifact_options": {"min_side": 0, "max_side": 64}}))
    det = registry.load_detector(str(cfg))
    assert det.artifact.name == "gsr-vgg16" and (det.artifact.min_side, det.artifact.max_side) == (None, 64)
    assert det.calibration is None
    with pytest.raises(ValueError, match="artifact_options must be a mapping"):
        registry.create("gsr-fused", artifact_options=[1])
    auth = tmp_path / "auth"
    auth.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        save_png(auth / f"a{i}.png", rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    assert main(["calibrate", "--model", str(cfg), "--authentic", str(auth), "--report", "--confidence", "0",
                 "--no-progress"]) == 0
    cal = Calibration.load(sidecar_path(cfg))
    assert cal.working_size == {"min_side": None, "max_side": 64} and cal.n_images == 6
    assert registry.load_detector(str(cfg)).calibration == cal
