"""Speed and accuracy benchmarks of Shap-CAM against captum and pytorch-grad-cam.

Run with ``python -m benchmarks`` (writes benchmarks/results.json and results.md).
"""
