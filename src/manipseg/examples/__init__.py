"""Bundled example forgeries (made by ``scripts/make_examples.py`` from CC0 photos shipped in scikit-image)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def example_paths() -> list[Path]:
    """The bundled example images (not their ground-truth masks)."""
    return sorted(p for p in HERE.glob("*.png") if not p.stem.endswith("_mask"))


def example_mask(image_path: Path) -> Path:
    return image_path.with_name(image_path.stem + "_mask.png")
