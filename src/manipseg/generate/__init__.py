"""Synthetic manipulation engine: authentic images in, forgeries with pixel-exact masks out.

``make_sample(kind, seed, pool)`` is the core; :class:`SyntheticDataset` streams the same samples to a
``torch`` DataLoader; ``manipseg generate`` writes them to disk (locally or on Ray).
"""
from .config import GenConfig, PostConfig
from .core import KINDS, Sample, make_sample, self_blend
from .dataset import SyntheticDataset, derive_seed
from .pool import ImagePool, ObjectSet, SourceError
from .regions import elastic_deform, face_hull_mask, random_blob, random_ellipse, random_polygon, sample_region

__all__ = ["GenConfig", "PostConfig", "KINDS", "Sample", "make_sample", "self_blend", "SyntheticDataset", "derive_seed",
           "ImagePool", "ObjectSet", "SourceError", "elastic_deform", "face_hull_mask", "random_blob",
           "random_ellipse", "random_polygon", "sample_region"]
