"""GSR-Net detectors: a trained segmentation network behind the predictor contract.

Inference (paper §4.1): the whole image is instance-normalised (each channel to zero mean, unit std), then
the network runs fully convolutionally. Images above ``max_pixels`` are processed in overlapping tiles
(``tile`` pixels square, ``overlap`` pixels shared) whose probabilities are blended with a window that
ignores the outer quarter of each overlap (context cut by the tile edge) and cross-fades over the next half,
so a 12-megapixel photo needs a few hundred MB, not tens of GB.
On CPUs with native bf16 the network runs under bf16 autocast with channels_last tensors.

``prob`` is the softmax probability of the "manipulated" class of the segmentation head;
``extras["boundary"]`` the boundary head's probability (when the network has one and ``boundary`` is on,
the default);
``score`` is the mean of the highest 1 % of ``prob`` values (at least one pixel): a manipulated region
covering at least 1 % of the image drives it to its probability, while isolated false positives barely do.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import cv2
import numpy as np

from ..contract import ContractError, Detector, Prediction, check_image, load_config_file
from .tiling import image_score, normalisation, normalise_array, tiled_maps

if TYPE_CHECKING:
    import torch

    from .nets import SegNet

from ..header import WeightsError, read_header, read_info
from ..paths import bundled, shipped
from .dct import dct_features, jpeg_history
from .runtime import RuntimeChoiceError, choose, without_torch


class GSRDetector(Detector):
    """A GSR-Net segmentation network (``gsr-vgg16`` or ``compact``) with trained weights."""

    name: ClassVar[str] = "gsr"
    summary: ClassVar[str] = "GSR-Net segmentation network with trained weights (any architecture)."
    arch: ClassVar[str | None] = None
    #: default tile side; images above tile^2 pixels are tiled (memory grows with the tile area)
    default_tile: ClassVar[int] = 1024
    #: default tile overlap; a quarter of it is discarded at inner tile edges (should exceed the receptive field's
    #: effective reach)
    default_overlap: ClassVar[int] = 128
    #: working size: a photo whose shorter side is below ``default_min_side`` is analysed up-sampled to it (the
    #: networks were trained on native-pixel windows of photos about 480-640 px high), one whose shorter side is
    #: above ``default_max_side`` down-sampled to it (None: no bound). Chosen on MISD without loss on NoSo
    #: (docs/real-forgeries.md, "Working size"); the shipped calibrations were measured at these settings.
    default_min_side: ClassVar[int | None] = 512
    default_max_side: ClassVar[int | None] = None

    def __init__(self, device: str = "cpu", weights: str | os.PathLike | None = None, model: SegNet | None = None,
                 threshold: float | None = None, tile: int | None = None, overlap: int | None = None, max_pixels: int | None = None,
                 bf16: bool = True, boundary: bool = True, runtime: str = "auto", min_side: int | None = None,
                 max_side: int | None = None, **config: Any) -> None:
        tile = int(tile) if tile is not None else self.default_tile
        overlap = int(overlap) if overlap is not None else self.default_overlap
        super().__init__(device=device, weights=str(weights) if weights is not None else None, tile=tile,
                         overlap=overlap, max_pixels=max_pixels, bf16=bf16, boundary=boundary, runtime=runtime,
                         min_side=min_side, max_side=max_side, **config)
        if config:
            raise ContractError(f"unknown option(s) for detector {self.name!r}: {', '.join(sorted(config))}; known: "
                                "weights, threshold, tile, overlap, max_pixels, bf16, boundary, runtime, min_side, max_side")
        #: images whose shorter side is below ``min_side`` are up-sampled (bicubic) to it before the network and
        #: the maps brought back (area); above ``max_side`` down-sampled (area) and the maps brought back (linear).
        #: None: the class default; 0: no bound (every image at its own pixels).
        self.min_side = self._side("min_side", min_side, self.default_min_side)
        self.max_side = self._side("max_side", max_side, self.default_max_side)
        if self.min_side and self.max_side and self.min_side > self.max_side:
            raise ContractError(f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})")
        if tile % 8 or tile < 64:
            raise ContractError(f"tile size must be a multiple of 8 and at least 64 pixels, got {tile}")
        if not 0 <= overlap < tile // 2:
            raise ContractError(f"overlap must be in [0, tile/2), got {overlap} for tile {tile}")

        self.tile, self.overlap = int(tile), int(overlap)
        self.max_pixels = int(max_pixels) if max_pixels is not None else self.tile * self.tile
        self.boundary = bool(boundary)  # also return the boundary head's map (extras["boundary"])
        self.model, self.torch_device, self._onnx, self.runtime, self.use_bf16 = None, None, None, "torch", False
        if model is None and weights is None:
            raise ContractError(f"detector {self.name!r} needs trained weights: pass weights=PATH.safetensors "
                                "(see `manipseg train --help`)")
        try:
            fast = without_torch(runtime, weights, device, bool(bf16)) if model is None else None
        except RuntimeChoiceError as exc:
            raise ContractError(str(exc)) from exc
        if fast is not None:  # ONNX Runtime already chosen on this machine: torch is not needed at all

            info = {**read_info(weights), "path": str(weights)}
            self._check_arch(info.get("arch"), weights)
            self._onnx = fast
            self.runtime = "int8" if fast.metadata.get("precision") == "int8" else "onnx"
        else:
            info = self._build_torch(device, weights, model, bool(bf16), runtime)
        self.info = info
        if threshold is None and self.runtime == "int8" and "threshold" in self._onnx.metadata:
            threshold = float(self._onnx.metadata["threshold"])  # the int8 network's own (scripts/quantize_int8.py)
        self.threshold = float(threshold if threshold is not None else info.get("threshold", self.threshold))

    @staticmethod
    def _side(option: str, value: int | None, default: int | None) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or value >= 8):
            raise ContractError(f"{option} must be a whole number of pixels >= 8, 0 for no bound, or None for the "
                                f"detector's default, got {value!r}")
        return value or None

    def working_scale(self, height: int, width: int) -> float:
        """The factor the network's input is resized by for a ``height`` x ``width`` image (1.0: native)."""
        short = min(height, width)
        if self.min_side and short < self.min_side:
            return self.min_side / short
        if self.max_side and short > self.max_side:
            return self.max_side / short
        return 1.0

    def _check_arch(self, arch: str | None, weights) -> None:
        if self.arch is not None and arch != self.arch:
            source = f"weights {weights}" if weights is not None else "the given model"
            raise ContractError(f"{source} hold a {arch!r} network but detector {self.name!r} expects "
                                f"{self.arch!r}; load the weights file by path (--model PATH) instead")

    def _build_torch(self, device: str, weights, model, bf16: bool, runtime: str) -> dict[str, Any]:
        """The torch network (folded, channels_last on the CPU) and the runtime measured for it."""
        import torch

        from ..device import bf16_faster, bf16_supported, resolve_device
        from .nets import fold_batchnorm

        self.torch_device = resolve_device(device)
        info: dict[str, Any] = {}
        if model is None:
            from .weights import network_from_weights

            model, info = network_from_weights(weights)
        self._check_arch(model.arch, weights)
        self.use_bf16 = bf16 and bf16_supported(self.torch_device.type) and bf16_faster(self.torch_device.type)
        self.model = fold_batchnorm(model).to(self.torch_device)
        if self.torch_device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        sha = None
        if weights is not None:
            try:
                sha = read_header(weights).get("sha256")
            except WeightsError:
                sha = None
        try:
            self.runtime, self._onnx = choose(runtime, self.model, self.torch_device, weights, sha, bf16, self.use_bf16)
        except RuntimeChoiceError as exc:
            raise ContractError(str(exc)) from exc
        if self.runtime == "onnx":
            self.use_bf16 = False  # ONNX Runtime runs the network in fp32
        return info

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str = "cpu", **config: Any) -> "GSRDetector":
        """The detector class matching the architecture stored in ``path``."""

        try:
            arch = read_info(path).get("arch")
        except WeightsError:
            arch = None  # loading the weights reports what is wrong with the file
        target = _ARCH_CLASSES.get(arch, GSRDetector) if cls is GSRDetector else cls
        return target(device=device, weights=path, **config)

    @classmethod
    def from_config(cls, config: "Mapping[str, Any] | str | os.PathLike", device: str = "cpu") -> "GSRDetector":
        """Options from a mapping or a JSON/YAML file (e.g. ``{name: gsr-compact, min_side: 0}``); without
        ``weights`` the file bundled for this detector's name is used."""
        if isinstance(config, (str, os.PathLike)):
            config = load_config_file(Path(config))
        config = dict(config)
        if config.get("weights") is None and config.get("model") is None and cls.arch is not None:
            config["weights"] = cls._bundled_weights()
        return super().from_config(config, device=device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "cpu") -> "GSRDetector":
        """Weights from ``path``, or the file shipped with manipseg for this detector's name."""
        return cls.from_weights(cls._bundled_weights() if path is None else path, device=device)

    @classmethod
    def _bundled_weights(cls) -> Path:
        """The weights file shipped for this detector's name, or a ContractError saying what to do."""
        path = bundled(f"{cls.name}.safetensors")
        if path is None:
            raise ContractError(
                f"no trained weights are bundled for detector {cls.name!r} (looked for "
                f"{shipped(f'{cls.name}.safetensors')}). Train a model with `manipseg train CONFIG.yaml` and pass the "
                "resulting .safetensors file as --model PATH (or GSRDetector.from_weights(PATH)).")
        return path

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if cls.name and bundled(f"{cls.name}.safetensors") is not None:
            return True, ""
        return False, f"no trained weights are bundled for {cls.name!r}; train them and pass the file as a model path"

    @classmethod
    def default_threshold(cls) -> float:
        path = bundled(f"{cls.name}.safetensors")
        if path is not None:
            try:
                return float(read_info(path).get("threshold", cls.threshold))
            except WeightsError:
                return float(cls.threshold)
        return float(cls.threshold)

    # -- prediction ---------------------------------------------------------------------------------------
    def predict_working(self, image: np.ndarray) -> Prediction:
        """The segmentation map at the network's view (:meth:`view`), not brought back to the image's size,
        and the image score of that map; no boundary map. What a fusion that works below the image's
        resolution needs (:class:`~manipseg.models.fused.FusedDetector` on large photos)."""
        t0 = time.perf_counter()
        view, factor = self.view(check_image(image))
        seg, _, n_tiles = self.predict_maps(view)
        seg = np.clip(seg, 0.0, 1.0)
        extras = {"tiles": n_tiles, "bf16": self.use_bf16, "runtime": self.runtime, "working_scale": factor,
                  "seconds": time.perf_counter() - t0}
        return Prediction(prob=seg, score=image_score(seg), extras=extras).validate(*seg.shape)

    def _predict(self, image: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        image, factor = self.view(image)
        seg, boundary, n_tiles = self.predict_maps(image)
        if factor != 1.0:
            back = cv2.INTER_AREA if factor > 1.0 else cv2.INTER_LINEAR
            seg = np.clip(cv2.resize(seg, (w, h), interpolation=back), 0.0, 1.0)
            boundary = None if boundary is None else np.clip(cv2.resize(boundary, (w, h), interpolation=back), 0.0, 1.0)
        extras: dict[str, Any] = {"tiles": n_tiles, "bf16": self.use_bf16, "runtime": self.runtime,
                                  "working_scale": factor, "seconds": time.perf_counter() - t0}
        if boundary is not None:
            extras["boundary"] = boundary
        return Prediction(prob=seg, score=image_score(seg), extras=extras)

    def view(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """What the network looks at: ``image`` resized to the working size (bicubic up, area down), and the
        factor (1.0: the image itself). Objects are brought nearer the sizes the network was trained on."""
        h, w = image.shape[:2]
        factor = self.working_scale(h, w)
        if factor != 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if factor > 1.0 else cv2.INTER_AREA)
        return image, factor

    def predict_maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Segmentation and boundary probability maps (float32 HxW) and the number of tiles used."""
        # Normalise with whole-image statistics so tiles see exactly what the untiled network would.
        if self._onnx is not None:  # the graph normalises the uint8 pixels itself
            onnx = self._onnx
            scale, offset = normalisation(image)

            def run(tile: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, np.ndarray | None]:
                seg, bnd = onnx.run(tile, scale, offset)
                return seg, (bnd if self.boundary else None)

            return tiled_maps(image, run, self.tile, self.overlap, self.max_pixels)
        import torch

        x = normalise_array(image)  # float32 H x W x 3

        history = None
        if getattr(self.model, "dct_stream", False):
            history = jpeg_history(image)  # tiles are measured against the whole image's JPEG history

        def run_torch(tile: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, np.ndarray | None]:
            t = torch.from_numpy(tile).permute(2, 0, 1).unsqueeze(0)  # channels_last view of the HWC tile
            h, w = tile.shape[:2]
            dct = self._dct(image[y0:y0 + h, x0:x0 + w], x0, y0, history)
            return self._run(t, dct)

        with torch.inference_mode():
            return tiled_maps(x, run_torch, self.tile, self.overlap, self.max_pixels)

    @staticmethod
    def _dct(tile: np.ndarray, x0: int, y0: int, history) -> "torch.Tensor | None":
        """The DCT-stream input of a tile at (x0, y0) of the image whose JPEG history is ``history``."""
        if history is None:
            return None
        import torch

        (dx, dy), steps = history
        feats = dct_features(np.ascontiguousarray(tile), grid=((dx - x0) % 8, (dy - y0) % 8), steps=steps)
        return torch.from_numpy(feats)[None]

    def _run(self, x: "torch.Tensor", dct: "torch.Tensor | None" = None) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        from ..device import autocast

        x = x.to(self.torch_device)
        if self.torch_device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        size = tuple(x.shape[-2:])
        if dct is not None:
            dct = dct.to(self.torch_device)
        with autocast(self.torch_device, self.use_bf16):
            seg, bnd, padded = self.model.head_logits(x, dct) if dct is not None else self.model.head_logits(x)
        seg = self._class1(seg, padded, size)
        if bnd is not None and self.boundary:
            return seg, self._class1(bnd, padded, size)
        return seg, None

    def _class1(self, logits: "torch.Tensor", padded: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Softmax probability of class 1 at input resolution. Up-sampling is linear, so up-sampling the
        logit difference (one channel) and taking its sigmoid equals the softmax of the up-sampled logits."""
        import torch

        diff = (logits[:, 1:2].float() - logits[:, 0:1].float())
        return torch.sigmoid(self.model.to_input(diff, padded, size))[0, 0].cpu().numpy()


class GSRCompactDetector(GSRDetector):
    name = "gsr-compact"
    summary = "GSR-Net scheme with the compact CPU network (boundary branch, SRM stem); trained weights bundled."
    arch = "compact"
    default_tile = 2048


class GSRVGG16Detector(GSRDetector):
    name = "gsr-vgg16"
    summary = ("GSR-Net (Zhou et al. 2020): DeepLab VGG-16 + ASPP + boundary branch from the HED init; weights "
               "bundled (the most accurate on real splices, slow).")
    arch = "gsr-vgg16"
    default_overlap = 384  # ASPP dilation 24 at stride 8 alone reaches 192 px


_ARCH_CLASSES: dict[str, type[GSRDetector]] = {"compact": GSRCompactDetector, "gsr-vgg16": GSRVGG16Detector}
