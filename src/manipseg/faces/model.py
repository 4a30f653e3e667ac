"""AdapGRnet (Guo et al., "Exposing Deepfake Face Forgeries with Guided Residuals", arXiv 2205.00753),
sized for a laptop CPU, plus a localisation head trained from SBI masks.

- MTE: guided residual ``|p - q|``, ``q`` the self-guided filter of the input (no parameters), computed
  per channel with OpenCV box filters (:func:`mte`, 50x faster here than the same filter in torch; it
  equals :func:`manipseg.models.nets.guided_residual`) once per image, before the network.
- Two ResNet-18-style backbones without the FC layer, one on RGB, one on the guided residual (widths and
  blocks per stage are configurable; the default is a quarter-width, one-block-per-stage ResNet).
- AFM: per stream, channel self-attention ``softmax(f f^T) f`` (C x C map, DANet-style with a learned
  residual gain), a classifier per stream, then stream weights ``alpha_k = c_k / (c_1 + c_2)`` where ``c_k``
  is stream k's softmax confidence (its largest class probability), so ``alpha_1 + alpha_2 = 1``; the
  fused feature ``alpha_1 f_rgb + alpha_2 f_gr`` feeds the fusion classifier.
- Loss: cross-entropy on each stream and on the fusion, plus BCE of the localisation heatmap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.nets import guided_residual



@dataclass
class FaceNetConfig:
    size: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    stem_pool: bool = True        # ResNet's stem max-pool (off: 4x the compute, 2x the resolution)
    gf_radius: int = 2
    gf_eps: float = 1e-3          # in squared [0, 1] intensity units
    loc_weight: float = 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["blocks"] = list(self.widths), list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FaceNetConfig":
        d = dict(d)
        for k in ("widths", "blocks"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def mte(image: np.ndarray, radius: int = 2, eps: float = 1e-3) -> np.ndarray:
    """Manipulation trace extractor on an (H, W, C) uint8 or [0, 1] float image: ``|p - q|`` with ``q`` the
    self-guided filter of ``p`` per channel (:func:`manipseg.models.nets.guided_residual`); float32 (H, W, C)."""
    p = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None]
    return guided_residual(x, radius=radius, eps=eps)[0].permute(1, 2, 0).numpy()


def to_tensors(crops: list[np.ndarray], cfg: "FaceNetConfig", channels_last: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (S, S, 3) crops -> (RGB in [0, 1], guided residual), both ``[B, 3, S, S]`` float32."""
    rgb = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    res = torch.from_numpy(np.stack([mte(c, cfg.gf_radius, cfg.gf_eps) for c in crops])).permute(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return rgb.contiguous(memory_format=fmt), res.contiguous(memory_format=fmt)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class ResNetBackbone(nn.Module):
    """ResNet-18 layout (stem, four stages of basic blocks, strides 1-2-2-2) without pooling/FC.
    Returns the stage-3 (stride 16) and stage-4 (stride 32) feature maps."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], cin: int = 3, pool: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1) if pool else nn.Identity())
        stages, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(c, w, 1 if i == 0 else 2)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[-2], feats[-1]


class ChannelSelfAttention(nn.Module):
    """``f' = gamma * reshape(softmax(f f^T) f) + f`` with the C x C attention map (AFM, per stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        b, c = f.shape[:2]
        flat = f.float().reshape(b, c, -1)
        return torch.softmax(flat @ flat.transpose(1, 2), dim=-1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        att = self.attention(f)
        out = (att @ f.float().reshape(b, c, -1)).reshape(b, c, h, w)
        return (self.gamma * out + f.float()).to(f.dtype)


class AttentionFusion(nn.Module):
    """AFM: channel self-attention per stream, a classifier per stream, confidence-weighted fusion."""

    def __init__(self, channels: int, classes: int = 2) -> None:
        super().__init__()
        self.att_rgb, self.att_gr = ChannelSelfAttention(), ChannelSelfAttention()
        self.fc_rgb, self.fc_gr = nn.Linear(channels, classes), nn.Linear(channels, classes)
        self.fc_fused = nn.Linear(channels, classes)

    @staticmethod
    def stream_weights(logits_rgb: torch.Tensor, logits_gr: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` weights from the streams' softmax confidences; each row sums to 1."""
        conf = torch.stack([torch.softmax(logits_rgb.float(), 1).amax(1), torch.softmax(logits_gr.float(), 1).amax(1)], 1)
        return conf / conf.sum(1, keepdim=True)

    def forward(self, f_rgb: torch.Tensor, f_gr: torch.Tensor) -> dict[str, torch.Tensor]:
        a_rgb, a_gr = self.att_rgb(f_rgb), self.att_gr(f_gr)
        v_rgb, v_gr = a_rgb.float().mean((2, 3)), a_gr.float().mean((2, 3))
        logits_rgb, logits_gr = self.fc_rgb(v_rgb), self.fc_gr(v_gr)
        alpha = self.stream_weights(logits_rgb, logits_gr)
        fused = alpha[:, :1] * v_rgb + alpha[:, 1:] * v_gr
        return {"logits_rgb": logits_rgb, "logits_gr": logits_gr, "logits": self.fc_fused(fused), "alpha": alpha}


class AdapGRNet(nn.Module):
    """Inputs: ``[B, 3, H, W]`` float RGB in [0, 1] and its MTE residual (:func:`to_tensors`). Output dict: ``logits`` (fusion), ``logits_rgb``,
    ``logits_gr``, ``alpha`` and ``loc`` (localisation logits at 1/16 resolution)."""

    def __init__(self, cfg: FaceNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FaceNetConfig()
        w, b = self.cfg.widths, self.cfg.blocks
        self.rgb = ResNetBackbone(w, b, pool=self.cfg.stem_pool)
        self.gr = ResNetBackbone(w, b, pool=self.cfg.stem_pool)
        self.gr_norm = nn.BatchNorm2d(3)  # residuals are tiny: let the network learn their scale
        self.afm = AttentionFusion(w[-1])
        c3, c4 = w[-2], w[-1]
        self.loc = nn.Sequential(nn.Conv2d(2 * (c3 + c4), c3, 3, padding=1, bias=False), nn.BatchNorm2d(c3),
                                 nn.ReLU(inplace=True), nn.Conv2d(c3, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x01: torch.Tensor, residual: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb_in = (x01 - 0.5) / 0.25
        gr_in = self.gr_norm(residual)
        r3, r4 = self.rgb(rgb_in)
        g3, g4 = self.gr(gr_in)
        out = self.afm(r4, g4)
        up = lambda t: F.interpolate(t, size=r3.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        out["loc"] = self.loc(torch.cat([r3, g3, up(r4), up(g4)], 1)).float()
        return out


def fake_probability(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.softmax(out["logits"].float(), 1)[:, 1]


def heatmap(out: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Localisation probabilities upsampled to ``size x size``: ``[B, size, size]``."""
    return torch.sigmoid(F.interpolate(out["loc"], size=(size, size), mode="bilinear", align_corners=False))[:, 0]


def losses(out: dict[str, torch.Tensor], labels: torch.Tensor, masks: torch.Tensor, loc_weight: float = 1.0
           ) -> dict[str, torch.Tensor]:
    """CE on the RGB stream, the residual stream and the fusion, plus BCE of the heatmap against ``masks``
    (``[B, H, W]`` in [0, 1], area-downsampled to the heatmap's resolution)."""
    ce = {k: F.cross_entropy(out[k].float(), labels) for k in ("logits_rgb", "logits_gr", "logits")}
    target = F.adaptive_avg_pool2d(masks[:, None].float(), out["loc"].shape[-2:])
    loc = F.binary_cross_entropy_with_logits(out["loc"], target)
    total = ce["logits_rgb"] + ce["logits_gr"] + ce["logits"] + loc_weight * loc
    return {"total": total, "ce_rgb": ce["logits_rgb"], "ce_gr": ce["logits_gr"], "ce_fused": ce["logits"], "loc": loc}

