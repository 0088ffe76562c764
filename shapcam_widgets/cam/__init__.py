"""Shap-CAM on top of the game-theory core."""

from .game import BASELINES, VALUES, LayerGame
from .layers import SplitNetwork, default_layer, spatial_layers
from .result import ShapCAMResult
from .shapcam import Explanation, ShapCAM, choose_device

__all__ = [
    "BASELINES",
    "VALUES",
    "Explanation",
    "LayerGame",
    "ShapCAM",
    "ShapCAMResult",
    "SplitNetwork",
    "choose_device",
    "default_layer",
    "spatial_layers",
]
