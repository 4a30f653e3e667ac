import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("MANIPSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared development data (../shared/data beside the checkout, or $MANIPSEG_DATA)."""
    root = _shared_data()
    if not (root / "README.md").is_file():
        pytest.skip(f"shared data not found at {root}; set MANIPSEG_DATA")
    return root


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


@pytest.fixture
def torch_one_thread():
    """Tiny nets: one intra-op thread is much faster than several on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of four public-domain photos shipped in scikit-image (PNG), for tiny training runs."""
    from skimage import data

    from manipseg.io import save_png

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        save_png(folder / f"{name}.png", getattr(data, name)())
    return folder
