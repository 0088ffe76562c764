"""Shap-CAM on top of the game-theory core."""

from .game import BASELINES, VALUES, LayerGame
from .layers import SplitNetwork, spatial_layers
from .result import ShapCAMResult
from .shapcam import ShapCAM, choose_device

__all__ = [
    "BASELINES",
    "VALUES",
    "LayerGame",
    "ShapCAM",
    "ShapCAMResult",
    "SplitNetwork",
    "choose_device",
    "spatial_layers",
]
