"""``manipseg train`` end to end on generated data: config errors, a 2-step run, resume, and predict."""
import csv

from manipseg.cli import main


def _config(tmp_path, photos, extra=""):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
model: {{arch: compact, options: {{width: 4, head_channels: 4, boundary_channels: 4}}}}
data: {{sources: ["{photos}"], kinds: {{splice: 1, copymove: 1}}, size: 64}}
train: {{steps: 2, batch_size: 2, bf16: false, log_every: 1}}
refine: {{enabled: true}}
validation: {{generated: 3, every: 0, sources: ["{photos}"], seed: 99}}
checkpoint: {{every: 1, keep: 1}}
log: {{progress: false}}
{extra}""")
    return path


def test_train_cli_runs_resumes_and_exports_a_usable_model(tmp_path, photos, capsys):
    cfg = _config(tmp_path, photos)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run)]) == 0
    rows = list(csv.DictReader((run / "train.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "2"]
    assert float(rows[-1]["val_baseline_f1"]) > 0 and rows[-1]["val_f1_dataset"]
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] == ["step_00000002.pt"]
    # extend the same run by one step
    assert main(["train", str(cfg), "--out", str(run), "--resume", "--steps", "3"]) == 0
    assert [r["step"] for r in csv.DictReader((run / "train.csv").open())][-2:] == ["3", "3"]
    assert main(["predict", str(photos / "coffee.png"), "--model", str(run / "model.safetensors"),
                 "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    assert (tmp_path / "pred" / "coffee.mask.png").is_file()


def test_train_cli_reports_config_errors(tmp_path, photos, capsys):
    out = ["--out", str(tmp_path / "never")]
    assert main(["train", str(_config(tmp_path, photos)), "--set", "refine.passes=0", *out]) == 2
    assert "refine.passes must be > 0" in capsys.readouterr().err
    assert main(["train", str(_config(tmp_path, photos)), "--set", "data.kinds.splce=1", *out]) == 2
    assert "Did you mean 'splice'" in capsys.readouterr().err
    assert main(["train", str(_config(tmp_path, photos)), "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = _config(tmp_path, photos).read_text().replace(str(photos), str(tmp_path / "missing"))
    (tmp_path / "bad.yaml").write_text(bad)
    assert main(["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
