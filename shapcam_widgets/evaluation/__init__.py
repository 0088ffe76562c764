"""Evaluation of saliency maps on ImageNet: faithfulness and localization metrics.

data: the ImageNet LOC layout; metrics: Average Drop, Increase in Confidence,
Deletion/Insertion (RISE), (energy) pointing game, bootstrap intervals; methods: map
makers (Shap-CAM, CAM, pytorch-grad-cam's CAMs, trivial baselines); gradcam: the one
adapter around pytorch-grad-cam (also the explorer's); runner: the loop over
the images; records: per-image records, resume, the lock on the output; summary: means,
intervals, results.json; distributed: sharding with torchrun; cli: ``shapcam evaluate``.
"""

from .cli import add_evaluate_parser, run_evaluate
from .data import ImageNetLOC, Sample
from .methods import METHODS, make_method
from .runner import EvaluationConfig, evaluate

__all__ = [
    "METHODS",
    "EvaluationConfig",
    "ImageNetLOC",
    "Sample",
    "add_evaluate_parser",
    "evaluate",
    "make_method",
    "run_evaluate",
]
