"""Segmentation networks of GSR-Net (Zhou et al., AAAI 2020, §3.2) and a compact CPU variant.

Both networks share the same outline:

* an encoder (DeepLab VGG-16 with batch norm, or a compact high-resolution CNN),
* a multi-scale context module on the stride-8 features (ASPP, dropout 0.5),
* a **boundary branch**: intermediate features of several stages are bilinearly up-sampled, concatenated and
  passed through a 1x1 convolution that predicts the manipulated boundary (2 classes),
* a **segmentation branch**: the up-sampled context features concatenated with the boundary features
  predict the manipulated interior (2 classes). Only this output is used at inference.

``boundary_branch=False`` drops the boundary head and its coupling (the paper's plain "DL" rows).
``guided_residual=True`` adds AdapGRnet's manipulation trace extractor (|p - guided_filter(p)| per channel)
as a second input stream, fused with the RGB stream by channel attention.

Inputs are float ``[B, 3, H, W]`` tensors already passed through :func:`normalise`; any ``H, W`` works
(the network pads to a multiple of its stride and crops back). Outputs are logits at input resolution.

Implementation note: "resample, concatenate, 1x1 conv" equals "1x1 conv per level, resample, sum"
(bilinear / average resampling and a 1x1 convolution are both linear and the resampling weights sum to one),
so the boundary branch is computed the cheap way, without materialising the high-resolution concatenation.
"""
from __future__ import annotations

import copy
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import guided_blur
from torch import nn

from ..names import Registry
from .dct import CHANNELS
from .pretrained import VGG16_LAYERS, load_packaged_vgg16

#: the segmentation network architectures (filled below, where they are defined)
ARCHITECTURES = Registry("network architecture", cutoff=0.5)


# -- shared pieces -----------------------------------------------------------------------------------------
def normalise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image instance normalisation (paper §4.1): each image and channel to zero mean, unit std.

    ``x`` is float ``[B, C, H, W]`` on any scale (0-255 or 0-1 give the same result). A constant channel maps
    to zeros. Used identically in training and inference.
    """
    if x.ndim != 4:
        raise ValueError(f"normalise expects a [B, C, H, W] tensor, got shape {tuple(x.shape)}")
    x = x.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp_min(eps)


def normalise_image(image: np.ndarray, eps: float = 1e-5) -> torch.Tensor:
    """:func:`normalise` of one ``H x W x C`` uint8 (or float) image, as a ``[1, C, H, W]`` float32 tensor in
    channels_last layout (a view of the HWC array).

    The same result as ``normalise(torch.from_numpy(image).permute(2, 0, 1)[None])`` (up to float rounding), in
    one pass over the pixels: the statistics come from OpenCV in double precision, then ``x * scale + offset``.
    """
    from .tiling import normalise_array

    return torch.from_numpy(normalise_array(image, eps)).permute(2, 0, 1).unsqueeze(0)


def guided_residual(x: torch.Tensor, radius: int = 2, eps: float = 0.1) -> torch.Tensor:
    """AdapGRnet's manipulation trace extractor: ``|p - guided_filter(p)|`` with each channel as its own guide.

    The guided filter (He et al.) keeps edges and image content and flattens the rest, so the residual holds
    the fine high-frequency traces. ``eps`` is in squared input units; on :func:`normalise`-d input (unit std
    per channel) 0.1 keeps edges whose local std exceeds about a third of the image's std. The notes do not
    give AdapGRnet's radius/eps; radius 2 (5x5 window) and eps 0.1 are our choice. No learnable parameters.
    """
    b, c, h, w = x.shape
    p = x.float().reshape(b * c, 1, h, w)
    border = "reflect" if min(h, w) > radius else "replicate"
    q = guided_blur(p, p, 2 * radius + 1, eps, border_type=border)
    return (p - q).abs().reshape(b, c, h, w)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ChannelAttentionFusion(nn.Module):
    """Fuse an RGB stream and a residual stream: concatenate, squeeze-and-excitation channel attention
    (global pooling -> MLP -> sigmoid weights per channel of the concatenation), then a 1x1 projection.

    The attention lets the network weigh the spatial (RGB) and residual streams per channel, the role of
    AdapGRnet's attention fusion module.
    """

    def __init__(self, c_rgb: int, c_res: int, c_out: int, reduction: int = 4) -> None:
        super().__init__()
        c = c_rgb + c_res
        hidden = max(c // reduction, 8)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, c, 1), nn.Sigmoid()
        )
        self.project = conv_bn_relu(c, c_out, k=1)

    def forward(self, rgb: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        x = torch.cat([rgb, res], dim=1)
        return self.project(x * self.gate(x))


class SideFusion(nn.Module):
    """Boundary features = BN-ReLU(1x1 conv(concat(up(f_1), ..., up(f_n)))), computed per level then summed.

    Levels finer than the head resolution are average-pooled to it instead of up-sampled."""

    def __init__(self, in_channels: list[int], c_out: int) -> None:
        super().__init__()
        self.sides = nn.ModuleList(nn.Conv2d(c, c_out, 1, bias=(i == 0)) for i, c in enumerate(in_channels))
        self.post = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        out = None
        for side, f in zip(self.sides, feats):
            y = side(f)
            if y.shape[-2] > size[0]:  # a finer level: average down (sizes are exact multiples here)
                y = F.avg_pool2d(y, y.shape[-2] // size[0])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.post(out)


class TwoHeads(nn.Module):
    """Boundary head and segmentation head with the boundary-to-segmentation coupling of GSR-Net."""

    def __init__(self, side_channels: list[int], context_channels: int, head_channels: int,
                 boundary_channels: int, boundary_branch: bool) -> None:
        super().__init__()
        self.boundary_branch = boundary_branch
        if boundary_branch:
            self.side = SideFusion(side_channels, boundary_channels)
            self.boundary_cls = nn.Conv2d(boundary_channels, 2, 1)
        self.context_reduce = conv_bn_relu(context_channels, head_channels, k=1)
        cin = head_channels + (boundary_channels if boundary_branch else 0)
        self.seg_fuse = conv_bn_relu(cin, head_channels, k=3)
        self.seg_cls = nn.Conv2d(head_channels, 2, 1)

    def forward(self, sides: list[torch.Tensor], context: torch.Tensor, size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx = F.interpolate(self.context_reduce(context), size=size, mode="bilinear", align_corners=False)
        if self.boundary_branch:
            bfeat = self.side(sides, size)
            boundary = self.boundary_cls(bfeat)
            ctx = torch.cat([ctx, bfeat], dim=1)
        else:
            boundary = None
        return self.seg_cls(self.seg_fuse(ctx)), boundary


class SegNet(nn.Module):
    """Common wrapper: padding to the stride, the optional residual stream, heads, crop and up-sampling."""

    stride: int = 8
    head_stride: int = 2

    def __init__(self, arch: str, arch_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)

    heads: TwoHeads

    #: the network takes the JPEG-trace maps of :mod:`manipseg.models.dct` as a second input
    dct_stream: bool = False

    def features(self, x: torch.Tensor, dct: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Side features for the boundary branch (finest first) and the stride-8 context features."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, dct: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        h, w = x.shape[-2:]
        seg, boundary, padded = self.head_logits(x, dct)
        out = {"seg": self.to_input(seg, padded, (h, w)), "boundary": None}
        if boundary is not None:
            out["boundary"] = self.to_input(boundary, padded, (h, w))
        return out

    def pad_to_stride(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded at the bottom and right to multiples of the stride (reflected; replicated when the
        input is too small to reflect)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x

    def head_logits(self, x: torch.Tensor, dct: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        """Segmentation and boundary logits at the heads' resolution, and the padded input size.

        ``dct``: the ``[B, CHANNELS, ceil(H/8), ceil(W/8)]`` JPEG-trace maps of the *unnormalised* images
        (:func:`manipseg.models.dct.dct_batch`), required by networks built with ``dct_stream`` and ignored
        by the others. ``forward`` up-samples the logits with :meth:`to_input`; inference may up-sample less
        (one channel, see ``GSRDetector``)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] tensor, got shape {tuple(x.shape)}")
        if self.dct_stream:
            want = (x.shape[0], CHANNELS, -(-x.shape[-2] // 8), -(-x.shape[-1] // 8))
            if dct is None or tuple(dct.shape) != want:
                raise ValueError(f"this network has a DCT stream: pass dct= of shape {want} "
                                 f"(manipseg.models.dct.dct_batch of the uint8 images), got "
                                 f"{None if dct is None else tuple(dct.shape)}")
        else:
            dct = None
        x = self.pad_to_stride(x)
        hp, wp = x.shape[-2:]
        sides, context = self.features(x, dct) if dct is not None else self.features(x)
        seg, boundary = self.heads(sides, context, (hp // self.head_stride, wp // self.head_stride))
        return seg, boundary, (hp, wp)

    @staticmethod
    def to_input(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Head-resolution maps bilinearly up-sampled to the padded input, cropped to the input ``size``."""
        if tuple(logits.shape[-2:]) != tuple(padded):
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., :size[0], :size[1]]


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -- GSR-Net: DeepLab VGG-16 (BN) + ASPP ---------------------------------------------------------------


class VGGConv(nn.Module):
    """conv3x3 -> BN -> ReLU with the VGG layer name kept on the module for weight mapping."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class ASPP(nn.Module):
    """DeepLab-v2 ASPP: parallel 3x3 convs with dilations (6, 12, 18, 24), each followed by a 1x1 conv,
    ReLU and dropout (the fc6/fc7 of DeepLab-LargeFOV); branch outputs are summed into context features."""

    def __init__(self, cin: int, width: int, rates: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cin, width, 3, padding=r, dilation=r), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            )
            for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class GSRVGG16(SegNet):
    """GSR-Net's segmentation network: DeepLab VGG-16 with batch norm, output stride 8 (pool4/pool5 with
    stride 1, conv5 dilated by 2), ASPP, boundary branch over the 128-, 256- and 512-channel stages
    (conv2_2, conv3_3, conv4_3 and conv5_3), heads at stride 2.

    ``init="hed"`` or ``"craft"`` initialises the backbone from packaged ImageNet-derived VGG-16 weights
    (:mod:`manipseg.models.pretrained`); the default is random (from scratch).
    """

    def __init__(self, boundary_branch: bool = True, guided_residual: bool = False, dropout: float = 0.5,
                 aspp_width: int = 1024, aspp_rates: tuple[int, ...] = (6, 12, 18, 24), head_channels: int = 64,
                 boundary_channels: int = 64, gr_radius: int = 2, gr_eps: float = 0.1, init: str | None = None) -> None:
        super().__init__("gsr-vgg16", dict(boundary_branch=boundary_branch, guided_residual=guided_residual,
                                           dropout=dropout, aspp_width=aspp_width, aspp_rates=tuple(aspp_rates),
                                           head_channels=head_channels, boundary_channels=boundary_channels,
                                           gr_radius=gr_radius, gr_eps=gr_eps))
        self.use_gr = guided_residual
        self.gr_radius, self.gr_eps = gr_radius, gr_eps
        self.vgg = nn.ModuleDict({name: VGGConv(cin, cout, d) for name, cin, cout, d in VGG16_LAYERS})
        if guided_residual:
            self.res_stem = conv_bn_relu(3, 64)
            self.fusion = ChannelAttentionFusion(64, 64, 64)
        self.aspp = ASPP(512, aspp_width, tuple(aspp_rates), dropout)
        self.heads = TwoHeads([128, 256, 512, 512], aspp_width, head_channels, boundary_channels, boundary_branch)
        _init_weights(self)
        self.init_report: dict[str, list[str]] | None = None
        if init is not None:  # construction-time only, so not recorded in arch_kwargs
            self.init_report = load_packaged_vgg16(self, init)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        v = self.vgg
        f = v["conv1_1"](x)
        if self.use_gr:
            f = self.fusion(f, self.res_stem(guided_residual(x, self.gr_radius, self.gr_eps).to(f.dtype)))
        f = v["conv1_2"](f)
        f = F.max_pool2d(f, 3, 2, 1)
        c2 = v["conv2_2"](v["conv2_1"](f))
        f = F.max_pool2d(c2, 3, 2, 1)
        c3 = v["conv3_3"](v["conv3_2"](v["conv3_1"](f)))
        f = F.max_pool2d(c3, 3, 2, 1)
        c4 = v["conv4_3"](v["conv4_2"](v["conv4_1"](f)))
        f = F.max_pool2d(c4, 3, 1, 1)
        c5 = v["conv5_3"](v["conv5_2"](v["conv5_1"](f)))
        f = F.max_pool2d(c5, 3, 1, 1)
        return [c2, c3, c4, c5], self.aspp(f)


# -- compact CPU network ----------------------------------------------------------------------------------
def _srm_kernels() -> torch.Tensor:
    """Three fixed SRM high-pass kernels (Fridrich & Kodovsky 2012), as used by RGB-N (Zhou et al. 2018)."""
    k1 = torch.tensor([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]) / 4.0
    k2 = torch.tensor([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2],
                       [-1, 2, -2, 2, -1]]) / 12.0
    k3 = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]) / 2.0
    return torch.stack([k1, k2, k3]).float()


class SRMStemConv(nn.Module):
    """First convolution over RGB *and* fixed SRM high-pass residuals of each channel, as one 7x7 conv.

    Conceptually ``conv3x3(concat(x, SRM(x)))`` with learned weights ``w_rgb`` (on the colour channels) and
    ``w_srm`` (on the 3x3 = 9 SRM residual maps); since SRM filtering is linear, the two are composed into a
    single 7x7 kernel at every forward pass, so the 12-channel full-resolution intermediate never exists.
    (At the image border this equals applying the SRM filters to the zero-padded image.)
    """

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.w_rgb = nn.Parameter(torch.empty(cout, 3, 3, 3))
        # [out * colour, srm kernel, 3, 3]: 4-D so that .to(memory_format=torch.channels_last) works
        self.w_srm = nn.Parameter(torch.empty(cout * 3, 3, 3, 3))
        nn.init.kaiming_normal_(self.w_rgb, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():
            self.w_srm.copy_(nn.init.kaiming_normal_(torch.empty(cout, 9, 3, 3), mode="fan_out").view(cout * 3, 3, 3, 3))
        self.register_buffer("srm", _srm_kernels().flip(-1, -2).unsqueeze(0), persistent=False)  # [1, 3, 5, 5]

    def effective_weight(self) -> torch.Tensor:
        """The composed [cout, 3, 7, 7] kernel: w_rgb (centred) + sum_k w_srm[:, :, k] (*) srm_k."""
        c = self.cout
        srm_part = F.conv2d(F.pad(self.w_srm, (4, 4, 4, 4)), self.srm.to(self.w_srm.dtype))
        return srm_part.view(c, 3, 7, 7) + F.pad(self.w_rgb, (2, 2, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), padding=3)

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the composed kernel (for inference)."""
        conv = nn.Conv2d(3, self.cout, 7, padding=3, bias=False).to(self.w_rgb.device)
        with torch.no_grad():
            conv.weight.copy_(self.effective_weight())
        return conv.train(self.training)


class ConvBlock(nn.Module):
    """3x3 conv + BN + ReLU (optionally strided or dilated), with an identity shortcut when shapes match.

    Plain dense 3x3 convolutions rather than depthwise-separable ones: on CPUs with AMX/oneDNN a dense conv
    of 64-128 channels runs several times closer to peak than a depthwise one, so it is faster per useful
    FLOP (measured: depthwise-separable blocks made the training step ~1.7x slower than these dense ones,
    which have 4x more parameters)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin, cout, k=3, stride=stride, dilation=dilation)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if not self.residual:
            return y
        if torch.is_grad_enabled() or y.dtype != x.dtype:  # ReLU keeps y for its backward: no in-place update
            return x + y
        return y.add_(x)  # inference: no new full-size tensor


class ASPPLite(nn.Module):
    """Small multi-scale context: a 1x1 conv and 3x3 convs at dilations (2, 4, 8),
    concatenated, projected by a 1x1 conv, dropout. No image-level pooling branch: its global statistics
    would differ between 256-pixel training crops and large (tiled) test images."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, k=1)] + [conv_bn_relu(cin, cout, dilation=r) for r in rates])
        self.project = nn.Sequential(conv_bn_relu(cout * (len(rates) + 1), cout, k=1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class CompactNet(SegNet):
    """Compact manipulation segmenter for the CPU.

    Design: manipulation traces are high-frequency, so the first layers run at full resolution with no
    early pooling: a 3x3 conv over the RGB channels and fixed SRM high-pass residuals of each channel (plus
    the optional guided-residual stream, fused by channel attention). The encoder then
    halves the resolution three times (stride 8) with dense 3x3 conv blocks (residual where shapes allow),
    dilations at stride 8 instead of more down-sampling, and an ASPP-lite context module. The boundary
    branch fuses the stride-2, -4 and -8 stages; the segmentation head sees the context and boundary features.
    Both heads work at stride 4 (their logits are bilinearly up-sampled), which keeps the training step cheap.
    """

    head_stride = 4

    def __init__(self, boundary_branch: bool = True, guided_residual: bool = False, dropout: float = 0.5,
                 width: int = 16, full_res_layers: int = 1, aspp_rates: tuple[int, ...] = (2, 4, 8),
                 head_channels: int = 32, boundary_channels: int = 32, gr_radius: int = 2, gr_eps: float = 0.1,
                 dct_stream: bool = False, dct_channels: int = 32) -> None:
        kwargs = dict(boundary_branch=boundary_branch, guided_residual=guided_residual,
                      dropout=dropout, width=width, full_res_layers=full_res_layers, aspp_rates=tuple(aspp_rates),
                      head_channels=head_channels, boundary_channels=boundary_channels, gr_radius=gr_radius, gr_eps=gr_eps)
        if dct_stream:  # recorded only when on, so weights files of networks without it are unchanged
            kwargs.update(dct_stream=True, dct_channels=dct_channels)
        super().__init__("compact", kwargs)
        w = width
        self.use_gr = guided_residual
        self.gr_radius, self.gr_eps = gr_radius, gr_eps
        self.stem = nn.Sequential(SRMStemConv(w), nn.BatchNorm2d(w), nn.ReLU(inplace=True))            # full res
        if guided_residual:
            self.gr_stem = conv_bn_relu(3, w // 2)
            self.fusion = ChannelAttentionFusion(w, w // 2, w)
        self.full = nn.Sequential(*[ConvBlock(w, w) for _ in range(full_res_layers)])                     # full res
        self.stage2 = nn.Sequential(ConvBlock(w, 2 * w, stride=2), ConvBlock(2 * w, 2 * w))                # /2
        self.stage3 = nn.Sequential(ConvBlock(2 * w, 4 * w, stride=2), ConvBlock(4 * w, 4 * w))            # /4
        self.stage4 = nn.Sequential(ConvBlock(4 * w, 8 * w, stride=2), ConvBlock(8 * w, 8 * w, dilation=2),
                                    ConvBlock(8 * w, 8 * w, dilation=4))                                  # /8
        self.context = ASPPLite(8 * w, 4 * w, tuple(aspp_rates), dropout)
        self.heads = TwoHeads([2 * w, 4 * w, 8 * w], 4 * w, head_channels, boundary_channels, boundary_branch)
        self.dct_stream = bool(dct_stream)
        if dct_stream:
            # the JPEG-trace maps (stride 8) -> features, concatenated with stage 4 and projected back to its
            # width; the projection starts as [identity | 0], so a network initialised from weights without the
            # stream computes exactly what it did until the stream has learned something
            self.dct_stem = nn.Sequential(conv_bn_relu(CHANNELS, dct_channels, k=1), conv_bn_relu(dct_channels, dct_channels))
            self.dct_fuse = nn.Sequential(nn.Conv2d(8 * w + dct_channels, 8 * w, 1), nn.ReLU(inplace=True))
        _init_weights(self)
        if dct_stream:
            with torch.no_grad():
                fuse = self.dct_fuse[0]
                fuse.weight.zero_()
                fuse.weight[:, :8 * w, 0, 0] = torch.eye(8 * w)
                fuse.bias.zero_()

    def features(self, x: torch.Tensor, dct: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        f = self.stem(x)
        if self.use_gr:
            gr = self.gr_stem(guided_residual(x, self.gr_radius, self.gr_eps).to(x.dtype))
            f = self.fusion(f, gr.to(f.dtype))
        s2 = self.stage2(self.full(f))
        s3 = self.stage3(s2)
        s4 = self.stage4(s3)
        if self.dct_stream:
            d = self.dct_stem(dct.to(s4.dtype))
            s4 = self.dct_fuse(torch.cat([s4, d], dim=1))
        return [s2, s3, s4], self.context(s4)


_POINTWISE_CONV = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None


class ConvReLU(nn.Module):
    """Inference-only convolution + ReLU; on the CPU one oneDNN primitive with a fused ReLU post-op
    (a separate bf16 ReLU pass costs about as much as the convolution itself). Follows CPU autocast."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if _POINTWISE_CONV is None or x.device.type != "cpu" or c.padding_mode != "zeros" or torch.is_grad_enabled():
            return F.relu(c(x))
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        bias = c.bias.to(dtype) if c.bias is not None else None
        return _POINTWISE_CONV(x.to(dtype), c.weight.to(dtype), bias, list(c.padding), list(c.stride),
                               list(c.dilation), c.groups, "relu", [None], "")


def _fuse_sequence(layers: list[nn.Module]) -> list[nn.Module]:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, SRMStemConv):
            m = m.to_conv()
        if isinstance(m, nn.Conv2d):
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                m = fuse_conv_bn_eval(m, layers[i + 1])
                i += 1
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                m = ConvReLU(m)
                i += 1
        elif isinstance(m, nn.Dropout2d):  # identity in eval mode
            i += 1
            continue
        out.append(m)
        i += 1
    return out


def fold_batchnorm(model: SegNet) -> SegNet:
    """An inference copy of ``model`` (eval mode): every batch norm that directly follows a convolution is
    folded into its weights and bias, and convolution + ReLU pairs become one fused :class:`ConvReLU`.
    Same outputs as ``model.eval()`` up to float rounding; not for training."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for parent in reversed(list(folded.modules())):  # children before their parents
        for name, child in list(parent.named_children()):
            if isinstance(child, VGGConv):
                setattr(parent, name, ConvReLU(fuse_conv_bn_eval(child.conv, child.bn)))
            elif isinstance(child, nn.Sequential):
                setattr(parent, name, nn.Sequential(*_fuse_sequence(list(child))))
    return folded.requires_grad_(False)


ARCHITECTURES.add("gsr-vgg16", GSRVGG16, summary="DeepLab VGG-16 + BN + ASPP + boundary branch (paper §3.2)")
ARCHITECTURES.add("compact", CompactNet, summary="the compact CPU network (SRM + RGB stem, dense stages, ASPP-lite)")
ARCHS = tuple(ARCHITECTURES.names())


def build_network(arch: str, **kw: Any) -> SegNet:
    """Build a segmentation network by name (``"gsr-vgg16"`` or ``"compact"``).

    Common keyword arguments: ``boundary_branch=True``, ``guided_residual=False``, ``dropout=0.5``; each
    architecture has a few more (widths, dilation rates). The result's ``arch_kwargs`` holds the full set
    so that :func:`manipseg.models.weights.save_weights` can record it.
    """
    builder = ARCHITECTURES.get(arch)  # unknown: UnknownNameError (a ValueError) with the closest name
    try:
        return builder(**kw)
    except TypeError as exc:
        raise ValueError(f"bad options for architecture {arch!r}: {exc}") from None
