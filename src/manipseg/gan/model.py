"""Adversarial training of the blender G(K, M) and of the inpainter G_inp, and their inference wrappers.

:class:`BlenderGAN` holds G, D and their Adam optimisers and makes one alternating update per call
(D first on the detached G(K, M), then G on Eq. 7). :class:`InpainterGAN` is the SEIGAN-style
inpainter: G_inp sees the image with the hole blanked out plus the hole mask, its output is composited
into the hole, and it learns background reconstruction (L1 against the authentic image, inside and
outside the hole) plus the same conditioned PatchGAN loss on the composite — the adversarial loss that
SEIGAN's background discriminator puts on inpainted regions. SEIGAN's VGG perceptual term is left out
(it needs ImageNet weights, which nothing here downloads).

:class:`Blender` and :class:`Inpainter` are the inference side: float images in [0, 1] in and out, any
size (reflect-padded to the U-Net's multiple), weights from a ``.safetensors`` file written by
:func:`save_generator` (fp32 tensors plus JSON metadata: role, architecture, step, training config).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..header import WeightsError, read_header
from ..models.weights import kind_of, load_weights, save_weights
from ..morphology import dilate
from ..paths import bundled
from .losses import Weights, adv_discriminator, adv_generator, generator_loss, masked_l1
from .nets import PatchDiscriminator, UNetGenerator, pad_to_multiple

ROLES = ("blender", "inpainter")


class GeneratorWeightsError(ValueError):
    """A generator weights file that is missing, unreadable or of the wrong role."""


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) * 0.5


@dataclass
class GanSettings:
    """Architecture and optimisation of one generator/discriminator pair."""

    generator: dict[str, int] = field(default_factory=lambda: {"width": 16, "depth": 5, "max_width": 128})
    discriminator: dict[str, int] = field(default_factory=lambda: {"width": 32})
    lr: float = 1e-4                  # Adam, paper §4.1
    betas: tuple[float, float] = (0.5, 0.999)
    weights: Weights = field(default_factory=Weights)
    edge_width: int = 5
    #: factor on the L1 terms of Eq. 7; 1 = pixel values in [-1, 1] as G sees them (the paper does not
    #: give the scale; 127.5 would measure them in 8-bit levels and make them dominate L_adv)
    pixel_scale: float = 1.0
    bf16: bool = False                # bf16 autocast for the convolutions (losses in fp32)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanSettings":
        d = dict(d)
        w = d.pop("weights", None) or {}
        known = set(cls.__dataclass_fields__)
        bad = [k for k in d if k not in known]
        if bad:
            raise ValueError(f"unknown GAN setting(s) {bad}; known: {sorted(known | {'weights'})}")
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(weights=Weights(**w), **d)


class _Pair:
    role = "blender"

    def __init__(self, settings: GanSettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.G = UNetGenerator(**settings.generator).to(self.device)
        self.D = PatchDiscriminator(**settings.discriminator).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=settings.lr, betas=settings.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=settings.lr, betas=settings.betas)

    def _autocast(self):
        from ..device import autocast

        return autocast(self.device, enabled=self.settings.bf16)

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def _update_d(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> float:
        self.D.train()
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            real_logits, fake_logits = self.D(real, mask), self.D(fake.detach(), mask)
        loss = adv_discriminator(real_logits.float(), fake_logits.float())
        loss.backward()
        self.opt_d.step()
        return float(loss.detach())

    def _d_for_g(self, fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for p in self.D.parameters():
            p.requires_grad_(False)
        try:
            with self._autocast():
                return self.D(fake, mask).float()
        finally:
            for p in self.D.parameters():
                p.requires_grad_(True)


class BlenderGAN(_Pair):
    """G(K, M), D(K, ·) and one alternating update per :meth:`step` (paper §3.1, §4.1)."""

    role = "blender"

    def generate(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """G(K, M) on [-1, 1] images (with autograd; fp32 output)."""
        with self._autocast():
            return self.G(image, mask).float()

    def step(self, image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
             source: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """One D update then one G update. Tensors ``[B, 3, H, W]`` in [-1, 1]: the copy-paste M, the
        authentic T and the aligned source S; ``mask`` K ``[B, 1, H, W]``. Returns the losses and the
        detached G(K, M) computed before G's update."""
        self.G.train()
        out = self.generate(image, mask)
        d_loss = self._update_d(target, out, mask)
        self.opt_g.zero_grad(set_to_none=True)
        terms = generator_loss(out, target, source, mask, self._d_for_g(out, mask), self.settings.weights,
                               self.settings.edge_width, self.settings.pixel_scale)
        terms["total"].backward()
        self.opt_g.step()
        stats = {f"g_{k}": float(v.detach()) for k, v in terms.items()}
        stats["d_loss"] = d_loss
        return stats, out.detach()


def inpainter_input(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The image ([-1, 1]) with the hole set to 0 (mid-grey)."""
    return image * (1.0 - hole)


class InpainterGAN(_Pair):
    """SEIGAN-style G_inp: L1 reconstruction of the authentic image inside and outside the hole, plus
    the conditioned PatchGAN loss on the composite ``K ⊙ G_inp + (1 − K) ⊙ T``."""

    role = "inpainter"

    def composite(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            raw = self.G(inpainter_input(image, hole), hole).float()
        return hole * raw + (1.0 - hole) * image, raw

    def step(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """One D then one G update on authentic images ``image`` ([-1, 1]) with holes ``hole`` ({0, 1})."""
        self.G.train()
        out, raw = self.composite(image, hole)
        d_loss = self._update_d(image, out, hole)
        self.opt_g.zero_grad(set_to_none=True)
        hole_l1 = self.settings.pixel_scale * masked_l1(raw, image, hole > 0.5)
        valid_l1 = self.settings.pixel_scale * masked_l1(raw, image, hole <= 0.5)
        adv = adv_generator(self._d_for_g(out, hole))
        total = hole_l1 + valid_l1 + self.settings.weights.adv * adv
        total.backward()
        self.opt_g.step()
        return ({"g_total": float(total.detach()), "g_hole": float(hole_l1.detach()),
                 "g_valid": float(valid_l1.detach()), "g_adv": float(adv.detach()), "d_loss": d_loss}, out.detach())


# -- weights files -------------------------------------------------------------------------------------------
#: the architecture name of the generators in a weights file (:mod:`manipseg.models.weights`, kind ``gan-generator``)
GENERATOR_ARCH = "gan-unet"


def save_generator(path: str | os.PathLike, G: UNetGenerator, role: str, meta: dict[str, Any] | None = None) -> Path:
    """Write G's weights (fp32) and metadata to ``path`` (.safetensors) atomically, in the one weights format
    (:func:`manipseg.models.weights.save_weights`: kind ``gan-generator``, its ``role``, a checksum)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    G_fp32 = G if all(p.dtype == torch.float32 for p in G.state_dict().values()) else _fp32_copy(G)
    return save_weights(path, G_fp32, GENERATOR_ARCH, G.config, {**(meta or {}), "role": role}, kind="gan-generator")


def _fp32_copy(G: UNetGenerator) -> UNetGenerator:
    copy = UNetGenerator(**G.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in G.state_dict().items()})
    return copy


def load_generator_file(path: str | os.PathLike, role: str | None = None,
                        device: str | torch.device = "cpu") -> tuple[UNetGenerator, dict[str, Any]]:
    """A generator saved by :func:`save_generator` (eval mode) and its metadata; checks the checksum and
    ``role``. Files of the GAN's own earlier format (``manipseg-gan`` header, no checksum) are still read."""
    path = Path(path)
    if not path.is_file():
        raise GeneratorWeightsError(f"generator weights not found: {path}")
    try:
        header = read_header(path)
    except WeightsError as exc:
        raise GeneratorWeightsError(f"{path}: not a readable .safetensors file ({exc})") from None
    if header.get("format") == "manipseg-gan":
        return _load_legacy(path, header, role, device)
    try:
        tensors, info = load_weights(path)
    except WeightsError as exc:
        raise GeneratorWeightsError(str(exc)) from None
    if kind_of(info) != "gan-generator":
        raise GeneratorWeightsError(f"{path}: holds a {kind_of(info)} network, not a GAN generator; "
                                    "train one with: manipseg train configs/gan/gan_blender.yaml")
    meta = dict(info.get("training") or {})
    if role is not None and meta.get("role") != role:
        raise GeneratorWeightsError(f"{path}: holds a {meta.get('role')!r} generator, expected a {role!r} one")
    G = UNetGenerator(**info.get("arch_kwargs", {}))
    try:
        G.load_state_dict(tensors)
    except RuntimeError as exc:
        raise GeneratorWeightsError(f"{path}: weights do not match the stored architecture ({exc})") from exc
    return G.to(device).eval(), meta


def _load_legacy(path: Path, header: dict[str, Any], role: str | None,
                 device: str | torch.device) -> tuple[UNetGenerator, dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise GeneratorWeightsError(f"{path}: not a readable .safetensors file ({exc})") from exc
    if role is not None and header.get("role") != role:
        raise GeneratorWeightsError(f"{path}: holds a {header.get('role')!r} generator, expected a {role!r} one")
    G = UNetGenerator(**json.loads(header["generator"]))
    try:
        G.load_state_dict(tensors)
    except RuntimeError as exc:
        raise GeneratorWeightsError(f"{path}: weights do not match the stored architecture ({exc})") from exc
    meta = json.loads(header.get("meta") or "{}")
    meta["role"] = header.get("role")
    return G.to(device).eval(), meta


class _Runner:
    role = "blender"

    def __init__(self, weights: str | os.PathLike | UNetGenerator, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if isinstance(weights, UNetGenerator):
            self.G, self.meta = weights.to(self.device).eval(), {}
        else:
            self.G, self.meta = load_generator_file(weights, self.role, self.device)

    def _run(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(image, self.G.multiple)
        k, _ = pad_to_multiple(mask, self.G.multiple)
        with torch.no_grad():
            return self.G(x, k)[..., :h, :w].float()

    @staticmethod
    def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"need images [B,3,H,W] in [0,1] and masks [B,1,H,W], got {tuple(images.shape)} "
                             f"and {tuple(masks.shape)}")


class Blender(_Runner):
    """The trained G(K, M) as a callable ``(images [B,3,H,W] in [0,1], masks [B,1,H,W]) -> images``.

    ``composite_width`` > 0 keeps M outside K dilated by that many pixels (an inference-time choice, not
    the paper's: G was trained to keep the background through L_bg alone; compositing makes the
    background bit-exact so the mask stays honest). 0 returns G's whole image.
    """

    role = "blender"

    def __init__(self, weights: str | os.PathLike | UNetGenerator, device: str | torch.device = "cpu",
                 composite_width: int = 5) -> None:
        super().__init__(weights, device)
        self.composite_width = int(composite_width)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        self._check(images, masks)
        images, masks = images.to(self.device).float(), (masks.to(self.device) > 0.5).float()
        out = to_unit(self._run(to_signed(images), masks)).clamp(0.0, 1.0)
        if self.composite_width > 0:
            band = dilate(masks, 2 * self.composite_width + 1)
            out = band * out + (1.0 - band) * images
        return out


class Inpainter(_Runner):
    """The trained G_inp as ``(images [B,3,H,W] in [0,1], holes [B,1,H,W]) -> images`` with the holes
    filled (pixels outside the holes returned unchanged)."""

    role = "inpainter"

    def __call__(self, images: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        self._check(images, holes)
        images, holes = images.to(self.device).float(), (holes.to(self.device) > 0.5).float()
        x = to_signed(images)
        raw = to_unit(self._run(inpainter_input(x, holes), holes)).clamp(0.0, 1.0)
        return holes * raw + (1.0 - holes) * images


def bundled_weights(role: str) -> Path | None:
    """The generator shipped with the package (``manipseg/weights/gan-<role>.safetensors``), if present."""
    return bundled(f"gan-{role}.safetensors")


def load_blender(path: str | None = None, device: str = "cpu", composite_width: int = 5) -> Blender:
    """Factory for the training loop's G(M) hook: ``data.generator: manipseg.gan.model:load_blender`` with
    ``data.generator_args: {path: FILE.safetensors}`` (no path: the shipped blender)."""
    if path is None:
        path = bundled_weights("blender")
        if path is None:
            raise GeneratorWeightsError("no blender weights given and none shipped with this install; pass path=")
    return Blender(path, device=device, composite_width=composite_width)
