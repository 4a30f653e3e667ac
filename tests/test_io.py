"""Image input that survives the real world: formats, depths, modes, orientation, bombs, corrupt files."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from manipseg.io import (ImageLoadError, atomic_write, decode_image, list_images, load_image, load_mask,
                         read_prob_png, save_png)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("TIFF", ".tif"), ("BMP", ".bmp"), ("WEBP", ".webp")])
def test_lossless_formats_round_trip(tmp_path, rgb, fmt, suffix):
    path = tmp_path / f"a{suffix}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(rgb).save(path, fmt, **kwargs)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_jpeg(tmp_path, rgb):
    path = tmp_path / "a.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    out = load_image(path)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_grayscale_palette_rgba_la_cmyk(tmp_path, rgb):
    img = Image.fromarray(rgb)
    gray = img.convert("L")
    gray.save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out[:, :, 0], np.asarray(gray))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])

    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))

    rgba = img.convert("RGBA")
    rgba.putalpha(7)
    rgba.save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)  # alpha dropped, colours kept

    gray.convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png")[:, :, 1], np.asarray(gray))

    img.convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 12


def test_16bit_gray_png_and_tiff(tmp_path):
    ramp = (np.arange(64 * 40, dtype=np.uint32).reshape(40, 64) * 25).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp).save(tmp_path / "g16.tif")
    for name in ("g16.png", "g16.tif"):
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (40, 64, 3)
        np.testing.assert_array_equal(out[:, :, 0], np.rint(ramp / 257.0).astype(np.uint8))


def test_16bit_colour_png(tmp_path):
    import cv2

    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, size=(20, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])
    out = load_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, np.rint(rgb16 / 257.0).astype(np.uint8))


def test_exif_orientation_applied(tmp_path, rgb):
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "o.jpg")
    assert out.shape == (rgb.shape[1], rgb.shape[0], 3)


@pytest.mark.parametrize("content,problem", [
    (b"", "empty (0 bytes)"),
    (b"this is a text file, not a picture\n" * 5, "not a recognised image format"),
])
def test_empty_and_non_image(tmp_path, content, problem):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_truncated_jpeg_and_png(tmp_path, rgb):
    for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png")):
        buf = io.BytesIO()
        Image.fromarray(np.tile(rgb, (4, 4, 1))).save(buf, fmt)
        data = buf.getvalue()
        path = tmp_path / f"trunc{suffix}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        assert "truncated or corrupt" in str(err.value) and str(path) in str(err.value)


def test_corrupt_header(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = b"\xff" * 8  # absurd width/height in IHDR
    path = tmp_path / "hdr.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_pixel_cap(tmp_path):
    Image.new("RGB", (400, 300)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError) as err:
        load_image(tmp_path / "big.png", max_pixels=100_000)
    assert "120,000 pixels exceeds the cap of 100,000" in str(err.value)
    assert load_image(tmp_path / "big.png", max_pixels=120_000).shape == (300, 400, 3)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


def test_decode_bytes_names_source():
    with pytest.raises(ImageLoadError, match="upload.bin: not a recognised image format"):
        decode_image(b"GIF89a-not-really", "upload.bin")


def test_load_mask_conventions(tmp_path):
    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:7] = 255
    m[7, 7] = 100  # below 128: not tampered
    Image.fromarray(m).save(tmp_path / "m.png")
    got = load_mask(tmp_path / "m.png")
    assert got.dtype == bool and got.sum() == 12
    colour = np.zeros((10, 12, 3), dtype=np.uint8)
    colour[1:3, 1:3, 0] = 255  # red region counts
    Image.fromarray(colour).save(tmp_path / "c.png")
    assert load_mask(tmp_path / "c.png").sum() == 4
    Image.fromarray(m > 0).save(tmp_path / "b.png")
    assert load_mask(tmp_path / "b.png").sum() == 13


def test_list_images_files_dirs_globs(tmp_path, rgb):
    (tmp_path / "d").mkdir()
    for name in ("d/a.png", "d/b.jpg", "c.png"):
        Image.fromarray(rgb).save(tmp_path / name)
    (tmp_path / "d" / "notes.txt").write_text("x")
    files, problems = list_images([str(tmp_path / "d"), str(tmp_path / "*.png"), str(tmp_path / "d" / "a.png"),
                                   str(tmp_path / "missing.png"), str(tmp_path / "*.gif")])
    assert [f.name for f in files] == ["a.png", "b.jpg", "c.png"]
    assert len(problems) == 2 and "missing.png" in problems[0] and "matched no files" in problems[1]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_prob_png_16bit_round_trip(tmp_path):
    prob = np.linspace(0, 1, 200, dtype=np.float32).reshape(10, 20)
    save_png(tmp_path / "x.prob.png", np.rint(prob * 65535).astype(np.uint16))
    back = read_prob_png(tmp_path / "x.prob.png")
    assert np.abs(back - prob).max() < 1e-5


def test_one_mask_reader_for_predict_scripts_and_datasets(tmp_path):
    """0/1-valued masks (as some benchmarks store them) are tampered where 1, for every reader."""
    from manipseg.eval.datasets import read_mask

    m = np.zeros((6, 8), dtype=np.uint8)
    m[1:3, 2:5] = 1
    Image.fromarray(m).save(tmp_path / "01.png")
    assert load_mask(tmp_path / "01.png").sum() == 6
    assert np.array_equal(load_mask(tmp_path / "01.png"), read_mask(tmp_path / "01.png", "white"))
