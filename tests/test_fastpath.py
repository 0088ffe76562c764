"""The structured fast path (the book's Method notes) and the general path's options."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from shapcam_widgets import ShapCAMError
from shapcam_widgets.cam import BASELINES, VALUES, ShapCAM, choose_device, shapcam
from shapcam_widgets.cam.fastpath import FastLayerGame
from shapcam_widgets.cam.structure import find_position_wise_head


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def lite0():
    from shapcam_widgets.models import load_model

    model, preprocess = load_model("efficientnet_lite0")
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    return model, preprocess(picture)


def pair(model, layer):
    """(auto explainer, general explainer) of one layer."""
    return ShapCAM(model, layer, device="cpu"), ShapCAM(model, layer, device="cpu", path="general")


def assert_agree(fast, general, tol=1e-5):
    assert fast.path == "fast" and general.path == "general"
    assert fast.n_orderings == general.n_orderings
    assert fast.n_evaluations == general.n_evaluations
    assert fast.method == general.method
    np.testing.assert_allclose(fast.phi, general.phi, rtol=0, atol=tol)
    np.testing.assert_allclose(fast.stderr, general.stderr, rtol=0, atol=tol)
    assert fast.v_full == pytest.approx(general.v_full, abs=tol)
    assert fast.v_empty == pytest.approx(general.v_empty, abs=tol)


# --- detection -------------------------------------------------------------------------


def test_detects_lite0_last_stage(lite0):
    model, _ = lite0
    for layer in ("blocks.6", "conv_head", "bn2"):
        explainer = ShapCAM(model, layer, device="cpu")
        assert explainer.head is not None, layer
        assert explainer.fast_path_reason == ""


def test_lite0_head_is_conv_head_bn2_pool_linear(lite0):
    model, _ = lite0
    head = ShapCAM(model, "blocks.6", device="cpu").head
    assert head.nodes == (
        "conv_head",
        "bn2",
        "global_pool_pool",
        "global_pool_flatten",
        "classifier",
    )
    assert head.classifier is model.classifier


def test_lite0_stage_5_is_general(lite0):
    model, _ = lite0
    explainer = ShapCAM(model, "blocks.5", device="cpu")
    assert explainer.head is None
    assert "conv_dw" in explainer.fast_path_reason and "mixes cells" in explainer.fast_path_reason
    with pytest.raises(ShapCAMError, match="no fast path"):
        ShapCAM(model, "blocks.5", device="cpu", path="fast")


def test_detects_resnet_layer4_not_layer3(resnet):
    assert ShapCAM(resnet, "layer4", device="cpu").head is not None
    explainer = ShapCAM(resnet, "layer3", device="cpu")
    assert explainer.head is None and "not a chain" in explainer.fast_path_reason
    # inside the last block a skip connection reads from before the layer
    inner = ShapCAM(resnet, "layer4.1.bn2", device="cpu")
    assert inner.head is None and "skip" in inner.fast_path_reason


def test_training_mode_batch_norm_is_not_position_wise():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    explainer = ShapCAM(model, "0", device="cpu")
    assert explainer.head is not None
    for module in explainer.network.tail_module.modules():
        module.train()
    head, reason = find_position_wise_head(explainer.network)
    assert head is None and "mixes cells" in reason


def test_non_linear_after_pool_is_not_fast():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    explainer = ShapCAM(model, "0", device="cpu")
    assert explainer.head is None and "follows the pool" in explainer.fast_path_reason


def test_rejects_unknown_path(resnet):
    with pytest.raises(ShapCAMError, match="unknown path"):
        ShapCAM(resnet, "layer4", device="cpu", path="quick")


# --- agreement with the general path, same orderings ---------------------------------------


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("baseline", BASELINES)
def test_fast_agrees_with_general_resnet(resnet, image, value, baseline):
    fast, general = pair(resnet, "layer4")
    options = {"value": value, "baseline": baseline}
    for antithetic in (True, False):
        a = fast.attribute(image, n_samples=6, seed=7, antithetic=antithetic, **options)
        b = general.attribute(image, n_samples=6, seed=7, antithetic=antithetic, **options)
        assert_agree(a, b)
        assert abs(a.phi).max() > 1e-3  # the game is not trivial
    # another target, and exact enumeration (16 players at 128 px)
    assert_agree(
        fast.attribute(image, 8, exact=True, **options),
        general.attribute(image, 8, exact=True, **options),
    )


def test_fast_agrees_with_general_for_a_callable_target(resnet, image):
    """A callable on the logits (here a log-probability) runs on the fast path's logits."""
    fast, general = pair(resnet, "layer4")
    a, b = (
        e.attribute(image, lambda z: z.log_softmax(0)[3], n_samples=6, seed=2)
        for e in (fast, general)
    )
    assert_agree(a, b)
    assert a.value == "callable" and abs(a.phi).max() > 1e-3


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("baseline", BASELINES)
def test_fast_agrees_with_general_lite0(lite0, value, baseline):
    model, x = lite0
    fast, general = pair(model, "blocks.6")
    a, b = (
        e.attribute(x, value=value, baseline=baseline, n_samples=4, seed=3) for e in (fast, general)
    )
    assert_agree(a, b)
    assert abs(a.phi).max() > 1e-4


def test_fast_agrees_with_blocks_of_cells(lite0):
    model, x = lite0
    fast, general = pair(model, "blocks.6")
    a, b = (e.attribute(x, block_size=2, n_samples=4, seed=1) for e in (fast, general))
    assert a.phi.shape == (4, 4)  # 7 x 7 cells (preprocess resizes to 224) in 2 x 2 blocks
    assert_agree(a, b)


def test_fast_sampling_keeps_efficiency_and_tol(resnet, image):
    explainer = ShapCAM(resnet, "layer4", device="cpu")
    # tol: half the largest standard error after 64 orderings, reached near 4 x 64
    tol = float(explainer.attribute(image, n_samples=64).stderr.max()) / 2
    calls = []
    result = explainer.attribute(
        image, n_samples=4000, tol=tol, progress=lambda done, total: calls.append(done)
    )
    assert result.path == "fast"
    assert result.phi.sum() == pytest.approx(result.v_full - result.v_empty, abs=1e-9)
    assert calls and calls[-1] == result.n_orderings
    assert 64 < result.n_orderings < 4000  # stopped early, and not before it had to
    assert result.stderr.max() < tol


def test_pruned_softmax_equals_full_softmax(resnet, image):
    explainer = ShapCAM(resnet, "layer4", device="cpu")
    fast = FastLayerGame(explainer.game(image, 2), explainer.head)
    coalitions = torch.rand(50, fast.n_players, generator=torch.Generator().manual_seed(0)) < 0.5
    full = fast.logits(coalitions).softmax(dim=1)[:, 2]
    torch.testing.assert_close(fast(coalitions), full, rtol=1e-12, atol=1e-15)


# --- the CAM identity: linear head, logit value, zero baseline --------------------------------


@pytest.mark.parametrize("path", ["auto", "general"])
def test_logit_zero_is_cam_over_n(resnet, image, path):
    explainer = ShapCAM(resnet, "layer4", device="cpu", path=path)
    result = explainer.attribute(image, value="logit", baseline="zero", n_samples=4, seed=0)
    assert result.path == ("fast" if path == "auto" else "general")
    with torch.no_grad():
        features = resnet.layer4(
            resnet.layer3(
                resnet.layer2(
                    resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(image)))))
                )
            )
        )[0]
        cam = torch.einsum("c,chw->hw", resnet.fc.weight[result.target], features).double()
    n = features.shape[1] * features.shape[2]
    np.testing.assert_allclose(result.phi, cam.numpy() / n, rtol=0, atol=1e-5)
    assert np.abs(result.stderr).max() < 1e-5  # an additive game: every ordering agrees


# --- fallback when the structure check fails ----------------------------------------------


def test_failed_check_falls_back_or_raises(resnet, image):
    torch.manual_seed(3)
    wrong = nn.Linear(512, 10)
    explainer = ShapCAM(resnet, "layer4", device="cpu")
    explainer.head = dataclasses.replace(explainer.head, classifier=wrong)
    result = explainer.attribute(image, n_samples=2)
    assert result.path == "general"
    assert "disagrees" in result.fast_path_reason
    assert explainer.fast_path_reason == ""  # the explainer's state is not changed per call
    explanation = explainer.explain(image)
    assert explanation.path == "general" and "disagrees" in explanation.fast_path_reason

    strict = ShapCAM(resnet, "layer4", device="cpu", path="fast")
    strict.head = dataclasses.replace(strict.head, classifier=wrong)
    with pytest.raises(ShapCAMError, match="disagrees"):
        strict.attribute(image, n_samples=2)


# --- general path: device, chunking, precision -----------------------------------------------


def test_choose_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected
    assert choose_device("cpu").type == "cpu"
    with pytest.raises(ShapCAMError, match="unknown device"):
        choose_device("tpu-of-dreams")
    if not torch.cuda.is_available():
        with pytest.raises(ShapCAMError, match="no CUDA GPU"):
            choose_device("cuda")


def test_chunking_by_memory_budget(resnet, image):
    small = ShapCAM(resnet, "layer3", device="cpu", memory_budget=1)
    large = ShapCAM(resnet, "layer3", device="cpu")
    assert small.explain(image).batch_size == 1
    per_call = large.explain(image).batch_size
    assert 1 < per_call <= 8192
    seen = []
    game = small.game(image)
    original = type(game).__call__

    def spy(self, coalitions):
        seen.append(len(coalitions))
        return original(self, coalitions)

    type(game).__call__ = spy
    try:
        a = small.attribute(image, n_samples=2, seed=4)
    finally:
        type(game).__call__ = original
    b = large.attribute(image, n_samples=2, seed=4)
    assert max(seen) == 2 and seen.count(1) >= 15  # the two ends, then one at a time
    np.testing.assert_allclose(a.phi, b.phi, rtol=0, atol=1e-6)


def test_cpu_batches_stay_cache_sized(resnet, image):
    explainer = ShapCAM(resnet, "layer3", device="cpu")
    game = explainer.game(image)
    per_sample = shapcam._tail_bytes_per_sample(game)
    cache_sized = max(shapcam.CPU_MIN_BATCH, shapcam.CPU_BATCH_BYTES // per_sample)
    assert explainer.explain(image).batch_size == min(
        cache_sized, shapcam.DEFAULT_MEMORY_BUDGET // per_sample
    )


def test_reduced_precision_agrees_or_falls_back(resnet, image, monkeypatch):
    reference = ShapCAM(resnet, "layer3", device="cpu").attribute(image, n_samples=2, seed=2)
    low = ShapCAM(resnet, "layer3", device="cpu", precision="bfloat16")
    result = low.attribute(image, n_samples=2, seed=2)
    check = result.precision_check
    assert check["precision"] == "bfloat16" and check["accepted"]
    assert 0 < check["gap"] <= shapcam.PRECISION_TOL  # bfloat16 really ran, and agrees
    assert result.path == "general"
    np.testing.assert_allclose(result.phi, reference.phi, rtol=0, atol=0.05)

    monkeypatch.setattr(shapcam, "PRECISION_TOL", 0.0)
    with pytest.warns(UserWarning, match="using float32"):
        fallback = low.attribute(image, n_samples=2, seed=2)
    assert fallback.precision_check["accepted"] is False
    np.testing.assert_allclose(fallback.phi, reference.phi, rtol=0, atol=1e-7)


def test_rejects_unknown_precision(resnet):
    with pytest.raises(ShapCAMError, match="unknown precision"):
        ShapCAM(resnet, "layer4", device="cpu", precision="int4")


def test_precision_does_not_touch_fast_path(resnet, image):
    explainer = ShapCAM(resnet, "layer4", device="cpu", precision="bfloat16")
    result = explainer.attribute(image, n_samples=2)
    assert result.path == "fast" and result.precision_check is None
