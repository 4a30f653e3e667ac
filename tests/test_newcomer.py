"""What a new user trips over: the pixel cap, a bad --out, interrupts, silent training, odd inputs."""
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from manipseg import registry
from manipseg.cli import main
from manipseg.contract import Detector, Prediction
from manipseg.io import ImageLoadError, decode_image, list_images, save_png


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black 1-bit pixels: tiny on disk, large in pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])  # 1-bit gray
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed zero pixels
    comp = zlib.compressobj(9)
    raw = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.slow
def test_pixel_cap_above_pillows_own_limit_can_be_raised():
    data = _png_header_only(10_000, 9_200)  # 92 MP: above Pillow's fixed 89.5-MP guard
    assert len(data) < 200_000
    with pytest.raises(ImageLoadError, match=r"92,000,000 pixels exceeds the cap of 90,000,000"):
        decode_image(data, "big.png", max_pixels=90_000_000)
    img = decode_image(data, "big.png", max_pixels=200_000_000)
    assert img.shape == (9_200, 10_000, 3) and img.dtype == np.uint8 and not img.any()


def test_faces_has_the_max_pixels_option_its_messages_mention(tmp_path, capsys):
    assert main(["faces", str(tmp_path / "none.jpg"), "--max-pixels", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--max-pixels must be a positive" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["file", "under_file", "proc"])
def test_bad_out_is_one_line_exit_2_and_no_work(tmp_path, coffee, case, capsys):
    save_png(tmp_path / "a.png", coffee)
    for d in ("images", "masks"):
        (tmp_path / "bench" / d).mkdir(parents=True)
    save_png(tmp_path / "bench" / "images" / "a.png", coffee)
    save_png(tmp_path / "bench" / "masks" / "a.png", np.full(coffee.shape[:2], 255, np.uint8))
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "sub",
           "proc": Path("/proc/manipseg-out-test")}[case]
    for cmd in (["predict", str(tmp_path / "a.png"), "--model", "noi"],
                ["evaluate", str(tmp_path / "bench"), "--model", "noi"],
                ["generate", "--sources", str(tmp_path), "--n", "1"]):
        assert main([*cmd, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0], err
        assert "Traceback" not in err[0]
    assert not (tmp_path / "afile").is_dir()


def test_read_only_out_is_refused_before_any_work(tmp_path, coffee, capsys, monkeypatch):
    """An output folder where no file can be created (EROFS, EACCES) is refused before the first image."""
    save_png(tmp_path / "a.png", coffee)
    out = tmp_path / "ro"
    out.mkdir()
    real = __import__("tempfile").mkstemp

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir) == out:
            raise OSError(30, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr("manipseg.io.tempfile.mkstemp", refuse)
    assert main(["predict", str(tmp_path / "a.png"), "--model", "noi", "--out", str(out)]) == 2
    assert "cannot write in output folder" in capsys.readouterr().err
    assert list(out.iterdir()) == []


_SLOW = textwrap.dedent("""
    import sys, time
    import numpy as np
    from manipseg import registry
    from manipseg.cli import main
    from manipseg.contract import Detector, Prediction

    class Slow(Detector):
        name = "slow-test"
        min_region = 0.0
        def _predict(self, image):
            time.sleep(0.4)
            return Prediction(np.zeros(image.shape[:2], np.float32), 0.0)

    registry.register("slow-test", "test")(Slow)
    sys.exit(main(sys.argv[1:]))
""")


def _wait_for(cond, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_batch_says_one_line_exits_130_and_resumes(tmp_path, coffee, sig):
    inputs = tmp_path / "in"
    inputs.mkdir()
    small = coffee[::4, ::4].copy()
    for i in range(12):
        save_png(inputs / f"img{i:02d}.png", small)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", _SLOW, "predict", str(inputs), "--model", "slow-test", "--out", str(out), "--no-progress"]
    jsonl = out / "predictions.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if not ln.startswith("INFO")]
    assert len(lines) == 1 and lines[0].startswith("interrupted after ") and "/12 images" in lines[0], err
    assert "Traceback" not in err
    done = [json.loads(ln) for ln in jsonl.read_text().splitlines()]
    assert 2 <= len(done) < 12 and all("error" not in r for r in done)
    # the same command with --resume analyses only the rest
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    records = [json.loads(ln) for ln in jsonl.read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == [f"img{i:02d}.png" for i in range(12)]
    assert f"({len(done)} kept from the earlier run)" in again.stdout


class Flat(Detector):
    name = "flat-test"
    min_region = 0.0

    def _predict(self, image):
        return Prediction(np.zeros(image.shape[:2], np.float32), 0.0)


@pytest.fixture
def flat_model():
    registry.register("flat-test", "test detector")(Flat)
    yield "flat-test"
    registry.DETECTORS.remove("flat-test")


def test_missing_input_is_reported_in_summary_and_jsonl(tmp_path, coffee, flat_model, capsys):
    save_png(tmp_path / "a.png", coffee[::4, ::4].copy())
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "nope.jpg"), "--model", flat_model,
                 "--out", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "1/2 images analysed" in text and "FAILED" in text and "nope.jpg: no such file or directory" in text
    records = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r.get("error", "") for r in records if "nope" in r["input"]] == [f"{tmp_path / 'nope.jpg'}: no such file or directory"]


def test_summary_names_paths_when_stems_collide(tmp_path, coffee, flat_model, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        save_png(tmp_path / d / "a.png", coffee[::4, ::4].copy())
    assert main(["predict", str(tmp_path / "x"), str(tmp_path / "y"), "--model", flat_model,
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert str(tmp_path / "x" / "a.png") in text and str(tmp_path / "y" / "a.png") + ": score" in text
    assert "(outputs a-2.*)" in text


def test_subfolders_are_mentioned_or_searched_and_own_outputs_skipped(tmp_path, coffee, flat_model, caplog):
    small = coffee[::4, ::4].copy()
    save_png(tmp_path / "top.png", small)
    (tmp_path / "sub").mkdir()
    save_png(tmp_path / "sub" / "deep.png", small)
    listing = list_images([str(tmp_path)])
    assert [p.name for p in listing.files] == ["top.png"]
    assert any("1 sub-folder(s) not searched (add --recursive" in n for n in listing.notes)
    assert [p.name for p in list_images([str(tmp_path)], recursive=True).files] == ["deep.png", "top.png"]
    # --out equal to the input folder: the next run does not take our outputs as inputs
    assert main(["predict", str(tmp_path), "--model", flat_model, "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "top.prob.png").is_file()
    again = list_images([str(tmp_path)])
    assert [p.name for p in again.files] == ["top.png"]
    assert any("4 manipseg output file(s)" in n for n in again.notes)


def test_stale_outputs_are_reported_or_removed_with_overwrite(tmp_path, coffee, flat_model, caplog):
    caplog.set_level(logging.INFO)
    small = coffee[::4, ::4].copy()
    save_png(tmp_path / "a.png", small)
    save_png(tmp_path / "b.png", small)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", flat_model, "--out", str(out),
                 "--no-progress"]) == 0
    caplog.clear()
    assert main(["predict", str(tmp_path / "a.png"), "--model", flat_model, "--out", str(out), "--no-progress"]) == 0
    assert "4 output file(s) of an earlier run are still in" in caplog.text
    assert main(["predict", str(tmp_path / "a.png"), "--model", flat_model, "--out", str(out), "--no-progress",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.mask.png", "a.overlay.jpg", "a.prob.png", "a.thumb.jpg",
                                                     "index.sqlite", "predictions.jsonl", "report.html"]


def test_small_ones(tmp_path, capsys):
    assert main(["serve", "--port", "99999"]) == 2
    assert registry.load_detector().name == registry.default_model()
    from manipseg.commands.generate import KIND_NAMES

    from manipseg.cli import build_parser
    parser, _ = build_parser()
    gen_help = [a for a in parser._subparsers._group_actions[0].choices["generate"]._actions if "--kinds" in a.option_strings][0]
    assert "all but authentic" not in gen_help.help and "composite" in KIND_NAMES


def test_models_into_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m manipseg models --json | head -c 10", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_generate_skips_unreadable_sources_once_and_makes_every_sample(tmp_path, caplog):
    from skimage import data

    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        save_png(src / f"good{i}.png", getattr(data, name)())
        (src / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    assert main(["generate", "--sources", str(src), "--n", "12", "--kinds", "splice,copymove", "--size", "64",
                 "--out", str(out)]) == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 12
    warned = [r.getMessage() for r in caplog.records if "unreadable source photo" in r.getMessage()]
    assert len(warned) == len({w.split(":")[1] for w in warned}) <= 4  # each bad file once


def test_overlay_legend_and_perceptual_colours(coffee):
    from manipseg.visualize import heatmap, overlay

    ramp = heatmap(np.linspace(0, 1, 256, dtype=np.float32)[None, :])[0].astype(float)
    lightness = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lightness) > -1.0)  # brighter = more suspicious, never green/cyan mid-way
    assert lightness[-1] - lightness[0] > 150
    prob = np.zeros(coffee.shape[:2], np.float32)
    plain, legend = overlay(coffee, prob), overlay(coffee, prob, legend=True)
    assert plain.shape == legend.shape == coffee.shape
    diff = np.any(plain != legend, axis=2)
    ys, xs = np.nonzero(diff)
    assert diff.any() and ys.min() > coffee.shape[0] // 2 and xs.min() > coffee.shape[1] // 2  # bottom-right corner


# -- training ------------------------------------------------------------------------------------------------
def _tiny(tmp_path, photos, steps):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
model: {{arch: compact, options: {{width: 4, head_channels: 4, boundary_channels: 4}}}}
data: {{sources: ["{photos}"], kinds: {{splice: 1}}, size: 48}}
train: {{steps: {steps}, batch_size: 2, bf16: false, log_every: 1}}
validation: {{generated: 0, every: 0}}
checkpoint: {{every: 1000, keep: 2}}
log: {{progress: false}}
""")
    return path


def test_training_refuses_to_overwrite_and_resume_keeps_set_values(tmp_path, photos, capsys, caplog, torch_one_thread):
    caplog.set_level(logging.INFO)
    cfg = _tiny(tmp_path, photos, 2)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--set", "checkpoint.keep=1"]) == 0
    assert "step 2/2" in caplog.text and "img/s" in caplog.text and "ETA" in caplog.text
    assert main(["train", str(cfg), "--out", str(run)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    # resume without --set: the run keeps keep=1 (its config.yaml), and may extend its steps
    assert main(["train", str(cfg), "--out", str(run), "--resume", "--steps", "3"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["checkpoint"]["keep"] == 1 and saved["train"]["steps"] == 3
    # a setting that would change the run is refused on resume
    assert main(["train", str(cfg), "--out", str(run), "--resume", "--steps", "4", "--set", "train.lr=0.1"]) == 2
    assert "cannot change" in capsys.readouterr().err
    other = cfg.read_text().replace("size: 48", "size: 40")
    (tmp_path / "other.yaml").write_text(other)
    assert main(["train", str(tmp_path / "other.yaml"), "--out", str(run), "--resume", "--steps", "4"]) == 2
    assert "data.size" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(run), "--force"]) == 0
    rows = (run / "train.csv").read_text().splitlines()
    assert rows[-1].startswith("2,")


def test_validation_is_logged_once(tmp_path, photos, caplog, torch_one_thread):
    caplog.set_level(logging.INFO)
    cfg = _tiny(tmp_path, photos, 1)
    text = cfg.read_text().replace("generated: 0", f"generated: 2, sources: [\"{photos}\"]")
    cfg.write_text(text)
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 0
    assert caplog.text.count("val_f1_dataset=") == 1


@pytest.mark.slow
def test_training_checkpoints_on_sigint_and_resumes(tmp_path, photos):
    cfg = _tiny(tmp_path, photos, 100000)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "manipseg", "train", str(cfg), "--out", str(run), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    csv_path = run / "train.csv"
    assert _wait_for(lambda: csv_path.is_file() and len(csv_path.read_text().splitlines()) >= 4, timeout=120)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted at step")]
    assert line and "--resume" in line[0], err
    step = int(line[0].split()[3].rstrip(";"))
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    assert ckpts and int(ckpts[-1].stem.split("_")[1]) == step >= 3
    done = subprocess.run(cmd + ["--resume", "--steps", str(step + 2)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (run / "model.safetensors").is_file()
