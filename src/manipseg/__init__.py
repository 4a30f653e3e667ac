"""manipseg: find where a photo was manipulated (GSR-Net and friends on the CPU)."""
from .contract import ContractError, Detector, Prediction
from .io import ImageLoadError, load_image
from .registry import UnknownDetectorError, create, load_detector, names, register

__version__ = "0.1.0"

__all__ = [
    "ContractError", "Detector", "Prediction", "ImageLoadError", "load_image", "UnknownDetectorError",
    "create", "load_detector", "names", "register", "__version__",
]
