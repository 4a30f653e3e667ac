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


def test_sigterm_to_the_whole_run_checkpoints_and_resumes(tmp_path, photos):
    """A scheduler's SIGTERM reaches the trainer and its data-loader workers at once: the trainer still
    writes its checkpoint and exits 130, and --resume continues from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = _config(tmp_path, photos, "").read_text().replace("steps: 2,", "steps: 400,").replace(
        "log_every: 1}", "log_every: 1, num_workers: 1}").replace("every: 1, keep: 1", "every: 1000, keep: 1")
    path = tmp_path / "long.yaml"
    path.write_text(cfg)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "manipseg", "train", str(path), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = (run / "train.csv").read_text().splitlines() if (run / "train.csv").is_file() else []
        if len(rows) >= 4:  # header + 3 steps: the loader workers are running
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its loader workers together
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "DataLoader worker" not in err
    assert list((run / "checkpoints").glob("step_*.pt"))  # written on the signal (no periodic one was due)
