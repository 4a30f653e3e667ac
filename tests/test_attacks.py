import cv2
import numpy as np
import pytest

from manipseg.eval.attacks import AttackError, parse_attack, parse_attacks


@pytest.fixture(scope="module")
def img(astronaut):
    return astronaut[:200, :240].copy()


def test_parse_and_names():
    assert parse_attack("jpeg:70").name == "jpeg:70"
    assert parse_attack("scale:0.5").name == "scale:0.5"
    assert parse_attack(" BLUR:1.5 ").name == "blur:1.5"
    assert [a.name for a in parse_attacks(["jpeg:70", "jpeg:70.0", "noise:5"])] == ["jpeg:70", "noise:5"]


@pytest.mark.parametrize("bad,msg", [("jpg:70", "Did you mean 'jpeg'"), ("rotate:3", "Known attacks"),
                                     ("jpeg", "needs a value"), ("jpeg:abc", "not a number"),
                                     ("jpeg:0", "out of range"), ("jpeg:70.5", "out of range"),
                                     ("scale:0", "out of range"), ("noise:-1", "out of range")])
def test_bad_attacks_are_explained(bad, msg):
    with pytest.raises(AttackError, match=msg) as err:
        parse_attack(bad)
    if "Known" in msg or "Did you" in msg:
        assert all(k in str(err.value) for k in ("jpeg:", "scale:", "blur:", "noise:"))


def test_jpeg_matches_opencv_and_lowers_quality(img):
    out = parse_attack("jpeg:50").apply(img)
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 50])
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert out.dtype == np.uint8 and out.shape == img.shape and np.array_equal(out, ref)
    err50 = np.abs(out.astype(int) - img).mean()
    err90 = np.abs(parse_attack("jpeg:90").apply(img).astype(int) - img).mean()
    assert 0 < err90 < err50


def test_scale_shape_and_restore(img):
    a = parse_attack("scale:0.5")
    small = a.apply(img)
    assert small.shape == (100, 120, 3)
    prob = np.zeros((100, 120), np.float32)
    prob[:50] = 1.0
    back = a.restore(prob, img.shape[:2])
    assert back.shape == (200, 240) and back.dtype == np.float32
    assert back[:90].min() == 1.0 and back[110:].max() == 0.0
    with pytest.raises(ValueError, match="below the 8x8"):
        parse_attack("scale:0.01").apply(img)


def test_blur_matches_opencv(img):
    out = parse_attack("blur:2").apply(img)
    assert np.array_equal(out, cv2.GaussianBlur(img, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101))


def test_noise_is_seeded_by_name(img):
    a = parse_attack("noise:5")
    n1, n2, n3 = a.apply(img, "x"), a.apply(img, "x"), a.apply(img, "y")
    assert np.array_equal(n1, n2) and not np.array_equal(n1, n3)
    d = n1.astype(float) - img
    assert 4.0 < d[(img > 20) & (img < 235)].std() < 6.0
