"""shapcam-widgets: Shapley-value class activation maps (Shap-CAM) for CNNs."""

from .cam import ShapCAM, ShapCAMResult, spatial_layers
from .errors import ShapCAMError
from .games import exact_shapley, sample_shapley
from .models import Preprocess, imagenet_classes, load_image, load_model

__all__ = [
    "Preprocess",
    "ShapCAM",
    "ShapCAMError",
    "ShapCAMResult",
    "exact_shapley",
    "imagenet_classes",
    "load_image",
    "load_model",
    "sample_shapley",
    "spatial_layers",
]
