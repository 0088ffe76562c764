"""On a CUDA GPU, Shap-CAM gives the CPU's estimates to float rounding (marked gpu; skipped
without CUDA). The orderings are drawn on the CPU, so the same seed walks the same
orderings on both devices; only the tail's arithmetic differs."""

import numpy as np
import pytest
import torch

from shapcam_widgets import ShapCAM

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def lite0_and_cat(lite0, chelsea):
    """Full float32 on the GPU: TF32 convolutions and matmuls (PyTorch's cuDNN default)
    move v(full) by about 5e-4 on Lite0, which is rounding of another kind."""
    model, preprocess = lite0
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield model, preprocess(chelsea)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.parametrize(
    ("layer", "path"), [("blocks.5", "general"), ("blocks.5", "local"), ("blocks.6", "fast")]
)
def test_cuda_equals_cpu(lite0_and_cat, layer, path):
    model, x = lite0_and_cat
    results = {}
    for device in ("cpu", "cuda"):
        explainer = ShapCAM(model, layer, device=device, path=path)
        results[device] = explainer.attribute(
            x, value="prob", baseline="zero", n_samples=16, seed=3
        )
        assert results[device].path == path
    cpu, cuda = results["cpu"], results["cuda"]
    assert cpu.target == cuda.target
    assert cuda.v_full == pytest.approx(cpu.v_full, abs=1e-4)
    # the per-cell estimates agree to well under their standard errors
    np.testing.assert_allclose(cuda.phi, cpu.phi, atol=1e-4)
    assert float(np.abs(cuda.phi - cpu.phi).max()) < 0.01 * float(np.nanmax(cpu.stderr))


def test_auto_skips_the_local_path_on_a_gpu(lite0_and_cat):
    """On the CPU "auto" takes the local path at blocks.5; on a GPU, where it was measured
    slower than the general path (benchmarks/gpu.json), the general path, with the same
    estimates to float rounding."""
    model, x = lite0_and_cat
    results = {
        device: ShapCAM(model, "blocks.5", device=device).attribute(x, n_samples=8, seed=1)
        for device in ("cpu", "cuda")
    }
    assert (results["cpu"].path, results["cuda"].path) == ("local", "general")
    np.testing.assert_allclose(results["cuda"].phi, results["cpu"].phi, atol=1e-4)
