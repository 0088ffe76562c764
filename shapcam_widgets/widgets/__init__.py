"""Interactive Shap-CAM explorer (ipywidgets) for JupyterLab, Voila and the book.

Needs ``ipywidgets`` (and ``grad-cam`` for the comparison panel).
"""

from .engine import Settings
from .explorer import ShapCAMExplorer

__all__ = ["ShapCAMExplorer", "Settings"]
