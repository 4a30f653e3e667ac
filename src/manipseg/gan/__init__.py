"""GSR-Net's learned generation stage: the GAN blender G(K, M) with its PatchGAN D (paper §3.1) and a
SEIGAN-style learned inpainter — networks, losses, weights files. Their training lives in :mod:`manipseg.train`
(``gan_pretrain``: standalone, ``gan_joint``: with the segmenter, ``gan_evaluate``, ``gan_fig4``), their use as
generation kinds (``gan``, ``inpaint-gan``) in :mod:`manipseg.generate.learned`. Command line:
``python -m manipseg.gan --help``."""
from .losses import Weights, edge_mask, generator_loss, laplacian, loss_bg, loss_edge, loss_grad
from .model import (Blender, BlenderGAN, GanSettings, GeneratorWeightsError, Inpainter, InpainterGAN,
                    load_blender, load_generator_file, save_generator)
from .nets import PatchDiscriminator, UNetGenerator

__all__ = ["Weights", "edge_mask", "generator_loss", "laplacian", "loss_bg", "loss_edge", "loss_grad", "Blender",
           "BlenderGAN", "GanSettings", "GeneratorWeightsError", "Inpainter", "InpainterGAN", "load_blender",
           "load_generator_file", "save_generator", "PatchDiscriminator", "UNetGenerator"]
