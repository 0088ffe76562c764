"""Shap-CAM on real CNNs: the CAM identity, efficiency, layers, baselines, bad input."""

import copy
import threading
import time

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from shapcam_widgets import ShapCAM, ShapCAMError
from shapcam_widgets.cam import LayerGame, choose_device
from shapcam_widgets.cam.layers import PASS_THROUGH, SplitNetwork


def class_activation_map(model, x, target):
    """Zhou et al.'s CAM at ResNet's layer4: W_target . a_ij for every cell (h x w)."""
    captured = []
    hook = model.layer4.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(x)
    hook.remove()
    return torch.einsum("c,chw->hw", model.fc.weight[target], captured[0][0]).detach().double()


@pytest.mark.parametrize("exact", [False, True])
def test_cam_identity_on_resnet18(resnet18, exact):
    """Linear head + logit value + zero baseline: phi = CAM / n (the book's CAM identity)."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    target = 7
    block = 2 if exact else 1  # 4 x 4 = 16 blocks keep exact enumeration small
    explainer = ShapCAM(resnet18, "layer4")
    result = explainer.attribute(
        x, target, value="logit", baseline="zero", block_size=block, n_samples=4, exact=exact
    )
    cam = class_activation_map(resnet18, x, target)
    expected = torch.nn.functional.pad(cam, (0, 1, 0, 1)).reshape(4, 2, 4, 2).sum(dim=(1, 3))
    expected = (expected if exact else cam) / 49
    np.testing.assert_allclose(result.phi, expected.numpy(), rtol=0, atol=1e-5)


def test_efficiency_and_full_value_on_lite0(lite0, chelsea):
    model, preprocess = lite0
    x = preprocess(chelsea)
    result = ShapCAM(model, "blocks.6").attribute(x, n_samples=8, seed=0)
    probability = model(x).softmax(dim=1)[0, result.target].item()
    assert result.v_full == pytest.approx(probability, abs=1e-5)
    assert result.phi.sum() == pytest.approx(result.v_full - result.v_empty, abs=1e-9)
    assert result.phi.shape == result.stderr.shape == (7, 7)
    assert (result.stderr > 0).all()


def test_chelsea_is_a_cat_and_the_map_points_at_it(lite0, chelsea):
    model, preprocess = lite0
    result = ShapCAM(model, "blocks.6").attribute(preprocess(chelsea), n_samples=16, seed=0)
    assert result.target in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    heat = result.upsample(chelsea.shape[:2])
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    # The face fills the photo (300 x 451 px), so "the cat" alone says little. The band of
    # its eyes, read off the photo: left eye x 135-220, right eye x 295-360, both within
    # y 85-190; the box spans them: 230 x 105 px, 18 % of the image.
    assert 85 <= row <= 190 and 130 <= col <= 360


def test_same_seed_same_map(resnet18):
    x = torch.randn(1, 3, 64, 64)
    explainer = ShapCAM(resnet18, "layer3")
    first = explainer.attribute(x, 3, n_samples=6, seed=5)
    assert np.array_equal(first.phi, explainer.attribute(x, 3, n_samples=6, seed=5).phi)
    assert not np.array_equal(first.phi, explainer.attribute(x, 3, n_samples=6, seed=6).phi)


def resnet_layer3(model, x):
    """ResNet's layer3 activation, computed module by module."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer3(model.layer2(model.layer1(x)))


def resnet_after_layer3(model, activation):
    """ResNet's logits from a layer3 activation: layer4, average pool, fc."""
    return model.fc(torch.flatten(model.avgpool(model.layer4(activation)), 1))


@pytest.fixture(scope="module")
def layer3_explainer(resnet18):
    """One explainer (one trace) serves every value and baseline."""
    return ShapCAM(resnet18, "layer3")


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
@pytest.mark.parametrize("value", ["prob", "logit"])
def test_every_value_and_baseline(resnet18, layer3_explainer, value, baseline):
    """v(N) and v(empty) against the network run by hand on a hand-built activation; the
    blurred activation from torchvision's gaussian_blur with sigma = 5 % of 64 px."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    result = layer3_explainer.attribute(x, 2, value=value, baseline=baseline, n_samples=4)
    assert result.phi.sum() == pytest.approx(result.v_full - result.v_empty, abs=1e-9)
    assert (result.value, result.baseline) == (value, baseline)
    with torch.no_grad():
        activation = resnet_layer3(resnet18, x)
        empty = {
            "zero": torch.zeros_like(activation),
            "mean": activation.mean(dim=(2, 3), keepdim=True).expand_as(activation),
            "blur": resnet_layer3(resnet18, gaussian_blur(x, [21, 21], [3.2, 3.2])),
        }[baseline]
        logits = resnet_after_layer3(resnet18, torch.cat([activation, empty]))
    expected = logits.softmax(dim=1)[:, 2] if value == "prob" else logits[:, 2]
    assert result.v_full == pytest.approx(float(expected[0]), rel=1e-5, abs=1e-6)
    assert result.v_empty == pytest.approx(float(expected[1]), rel=1e-5, abs=1e-6)
    if baseline == "blur":
        game = layer3_explainer.game(x, 2, baseline="blur")
        torch.testing.assert_close(game.baseline, empty, rtol=1e-5, atol=1e-5)


def test_baselines_replace_absent_cells(resnet18):
    x = torch.randn(1, 3, 64, 64)
    explainer = ShapCAM(resnet18, "layer3")
    game = explainer.game(x, 0, baseline="mean")
    none = game.masked_activations(torch.zeros(1, game.n_players, dtype=torch.bool))
    mean = game.activation.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(none, mean.expand_as(none))
    everything = game.masked_activations(torch.ones(1, game.n_players, dtype=torch.bool))
    torch.testing.assert_close(everything, game.activation)


def test_blocks_group_cells(resnet18):
    x = torch.randn(1, 3, 224, 224)
    result = ShapCAM(resnet18, "layer4").attribute(x, 0, block_size=3, n_samples=4)
    assert result.phi.shape == (3, 3) and result.cells == (7, 7)
    assert result.cell_map().shape == (7, 7)
    assert result.cell_map()[6, 6] == result.phi[2, 2]
    assert result.upsample().shape == (224, 224)
    assert result.upsample((30, 40), relu=True).min() >= 0


def test_layer_given_as_module(resnet18):
    explainer = ShapCAM(resnet18, resnet18.layer4)
    assert explainer.layer == "layer4"


def test_only_the_tail_runs_per_coalition(resnet18):
    split = SplitNetwork(resnet18, "layer4.0.conv1")
    assert split.path == "fx"
    x = torch.randn(1, 3, 64, 64)
    activation, context = split.prefix(x)
    with torch.no_grad():
        torch.testing.assert_close(split.tail(activation, context), resnet18(x))


class Branchy(nn.Module):
    """A CNN whose forward has data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, branch: bool):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.head = nn.Linear(8, 5)
        self.branch = branch

    def forward(self, x):
        if self.branch and x.sum() > 1e9:
            x = x * 0
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_untraceable_models_fall_back_to_hooks_with_the_same_answer():
    x = torch.randn(1, 3, 32, 32)
    hooked = ShapCAM(Branchy(True), "features.1")
    traced = ShapCAM(Branchy(False), "features.1")
    assert (hooked.network.path, traced.network.path) == ("hook", "fx")
    first = hooked.attribute(x, 1, n_samples=4)
    np.testing.assert_allclose(first.phi, traced.attribute(x, 1, n_samples=4).phi, atol=1e-6)


def test_result_to_dict_is_json_ready(resnet18):
    import json

    result = ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 64, 64), 0, n_samples=2)
    record = json.loads(json.dumps(result.to_dict()))
    assert np.allclose(record["phi"], result.phi)
    assert record["layer"] == "layer4" and record["target"] == 0


def test_overlay_draws_on_the_image(resnet18):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 64, 64), 0, n_samples=2)
    figure, ax = plt.subplots()
    shown = result.overlay(np.zeros((50, 60, 3), np.uint8), ax, signed=False)
    assert shown.get_array().shape == (50, 60)
    assert shown.get_cmap().name == "viridis"  # [0, 1]-style maps: the sequential map
    # opacity follows |phi|: the strongest cell at alpha, a zero cell fully transparent
    heat = np.abs(np.asarray(shown.get_array()))
    opacity = np.asarray(shown.get_alpha())
    np.testing.assert_allclose(opacity, 0.5 * heat / heat.max(), atol=1e-12)
    signed = result.overlay(np.zeros((50, 60, 3), np.uint8), ax, alpha=0.8)
    assert signed.get_cmap().name == "RdBu_r" and np.asarray(signed.get_alpha()).max() == 0.8
    plt.close(figure)


# ---- bad input: clear errors that say what is valid ----


def test_unknown_layer_lists_the_spatial_layers(resnet18):
    with pytest.raises(ShapCAMError, match=r"unknown layer 'layer9'.*layer4 \(512x7x7\)"):
        ShapCAM(resnet18, "layer9")


def test_non_spatial_layer(resnet18):
    explainer = ShapCAM(resnet18, "fc")
    with pytest.raises(ShapCAMError, match=r"'fc' outputs shape \(1, 1000\).*layer4"):
        explainer.attribute(torch.randn(1, 3, 64, 64))


def test_class_out_of_range(resnet18):
    with pytest.raises(ShapCAMError, match="class 1000 is out of range.*0 to 999"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 64, 64), 1000)


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 1, 64, 64), (64, 64), (0, 3, 64, 64)])
def test_wrong_image_shape(resnet18, shape):
    with pytest.raises(ShapCAMError, match="3 x H x W"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(shape))


def test_explain_takes_one_image(resnet18):
    with pytest.raises(ShapCAMError, match="one image of shape"):
        ShapCAM(resnet18, "layer4").explain(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_samples": 0}, "n_samples must be a whole number >= 1; got 0"),
        ({"n_samples": 1.5}, "n_samples must be a whole number >= 1; got 1.5"),
        ({"n_samples": True}, "n_samples must be a whole number >= 1; got True"),
        ({"seed": 2**70}, r"seed must be a whole number from 0 to 2\*\*64 - 1"),
        ({"seed": -1}, r"seed must be a whole number from 0 to 2\*\*64 - 1"),
        ({"seed": 1.0}, r"seed must be a whole number"),
        ({"tol": 0}, "tol must be a positive number"),
        ({"block_size": 1.5}, "block_size must be a whole number >= 1"),
        ({"target": "cat"}, "target must be a class index, None"),
        ({"target": True}, "target must be a class index, None"),
    ],
)
def test_bad_arguments_are_clear_errors(resnet18, options, message):
    with pytest.raises(ShapCAMError, match=message):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 64, 64), **options)


def test_largest_seed_is_accepted(resnet18):
    x = torch.randn(1, 3, 64, 64)
    result = ShapCAM(resnet18, "layer4").attribute(x, 0, n_samples=2, seed=2**64 - 1)
    assert result.seed == 2**64 - 1


def test_float16_model_is_refused_with_advice(resnet18):
    with pytest.raises(ShapCAMError, match=r"float16 parameters.*model\.float\(\).*float16"):
        ShapCAM(copy.deepcopy(resnet18).half(), "layer4")


def test_too_many_players_for_exact(resnet18):
    with pytest.raises(ShapCAMError, match="at most 20 players.*49"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 224, 224), exact=True)


@pytest.mark.parametrize(
    "option, message",
    [("value", "unknown value 'margin'; valid: prob, logit"), ("baseline", "valid: zero, mean")],
)
def test_unknown_options(resnet18, option, message):
    explainer = ShapCAM(resnet18, "layer4")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ShapCAMError, match=message):
        explainer.attribute(x, **{option: "margin"})
    with pytest.raises(ShapCAMError, match=message):
        explainer.explain(x, **{option: "margin"})
    with pytest.raises(ShapCAMError, match="block_size must be a whole number >= 1"):
        explainer.attribute(x, block_size=0)


class NaNHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        pooled = self.features(x).amax(dim=(2, 3))
        return self.head(pooled) / (
            pooled.sum(dim=1, keepdim=True) - pooled.sum(dim=1, keepdim=True)
        )


def test_non_finite_model_output():
    with pytest.raises(ShapCAMError, match="non-finite"):
        ShapCAM(NaNHead(), "features").attribute(torch.randn(1, 3, 16, 16), 0, n_samples=2)


def test_cuda_when_absent_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert choose_device("auto").type == "cpu"
    with pytest.raises(ShapCAMError, match="no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(ShapCAMError, match="valid: auto, cpu, cuda"):
        choose_device("tpu")


def test_memory_budget_bounds_the_batch(resnet18):
    x = torch.randn(1, 3, 64, 64)
    small = ShapCAM(resnet18, "layer3", memory_budget=1)
    large = ShapCAM(resnet18, "layer3")
    assert small.explain(x, 0).batch_size == 1
    assert large.explain(x, 0).batch_size > 1
    np.testing.assert_allclose(
        small.attribute(x, 0, n_samples=2).phi, large.attribute(x, 0, n_samples=2).phi, atol=1e-6
    )


def test_game_refuses_malformed_coalitions(resnet18):
    game: LayerGame = ShapCAM(resnet18, "layer4").game(torch.randn(1, 3, 64, 64), 0)
    with pytest.raises(ShapCAMError, match=r"bool tensor \(B, 4\)"):
        game(torch.ones(2, 5, dtype=torch.bool))


# ---- the model's mode, buffers and device are the caller's ----


def test_train_mode_gives_the_eval_map_and_leaves_the_model_alone(resnet18):
    """Defect 4: attribute() ran the model in train mode (batch statistics: v_full 0.003
    instead of 0.088 here) and changed the batch norms' running statistics."""
    model = copy.deepcopy(resnet18)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    options = {"target": 238, "block_size": 2, "n_samples": 2, "seed": 0}
    reference = ShapCAM(model.eval(), "layer3").attribute(x, **options)

    model.train()
    model.layer1.eval()  # a mixed mode, restored module by module
    modes = {name: module.training for name, module in model.named_modules()}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    explainer = ShapCAM(model, "layer3")  # traced in train mode too
    result = explainer.attribute(x, **options)
    refined = explainer.explain(x, 238, block_size=2, seed=0).refine(2)

    assert reference.v_full == pytest.approx(0.0879, abs=1e-3)
    for other in (result, refined):
        np.testing.assert_array_equal(other.phi, reference.phi)
        assert (other.v_full, other.v_empty) == (reference.v_full, reference.v_empty)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert model.training and not model.layer1.training
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_fast_path_is_found_when_built_in_train_mode(resnet18):
    model = copy.deepcopy(resnet18).train()
    explainer = ShapCAM(model, "layer4")
    assert explainer.head is not None and model.training
    assert explainer.attribute(torch.randn(1, 3, 64, 64), 0, n_samples=2).path == "fast"


def test_default_device_is_the_models_own(resnet18, monkeypatch):
    """device=None never moves the model, even where CUDA is available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    explainer = ShapCAM(resnet18, "layer4")
    assert explainer.device == torch.device("cpu")
    assert next(resnet18.parameters()).device == torch.device("cpu")


# ---- the default layer, and layers that are not a game ----


def _torchvision(name):
    def build():
        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None)

    return build


def _timm_lite0():
    import timm

    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


@pytest.mark.parametrize(
    "build, expected",
    [
        (_torchvision("resnet18"), "layer4"),
        (_torchvision("vgg11"), "features"),
        (_torchvision("densenet121"), "features"),
        (_torchvision("mobilenet_v3_small"), "features"),
        (_torchvision("efficientnet_b0"), "features"),
        (_torchvision("convnext_tiny"), "features"),
        (_timm_lite0, "bn2"),
    ],
    ids=["resnet18", "vgg11", "densenet121", "mnv3", "effnet_b0", "convnext", "lite0"],
)
def test_default_layer_is_the_last_spatial_one(build, expected):
    model = build().eval()
    explainer = ShapCAM(model)
    assert explainer.layer == expected
    # oracle: every module output, in the order the modules finish
    outputs = []
    hooks = [
        module.register_forward_hook(
            lambda module, _i, out, name=name: outputs.append((name, module, out))
        )
        for name, module in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    last = max(i for i, (name, _, _) in enumerate(outputs) if name == expected)
    chosen = outputs[last][2]
    assert chosen.dim() == 4 and chosen.shape[2] > 1 and chosen.shape[3] > 1
    for name, module, out in outputs[last + 1 :]:
        # nothing spatial and new comes after it: pools, or maps of a single cell
        new_map = out.dim() == 4 and out.shape[2] * out.shape[3] > 1
        if new_map and not isinstance(module, PASS_THROUGH):
            raise AssertionError(f"{name} outputs {tuple(out.shape)} after {expected}")
        if new_map:  # VGG's 7 x 7 adaptive pool of a 7 x 7 map: the same map
            assert torch.equal(out, chosen), name


def test_empty_layer_name_is_refused(resnet18):
    with pytest.raises(ShapCAMError, match=r"layer '' names the whole model.*'layer4'"):
        ShapCAM(resnet18, "")


def test_one_cell_layer_is_refused_naming_the_spatial_layers():
    model = _timm_lite0().eval()
    explainer = ShapCAM(model, "global_pool.pool")
    with pytest.raises(ShapCAMError, match=r"1 x 1 cell: a game needs at least 2.*blocks\.6"):
        explainer.attribute(torch.randn(1, 3, 224, 224), n_samples=2)


def test_block_size_leaving_one_player_names_the_largest_valid(resnet18):
    explainer = ShapCAM(resnet18, "layer4")  # 3 x 3 cells at 96 px
    x = torch.randn(1, 3, 96, 96)
    with pytest.raises(ShapCAMError, match="largest valid block_size is 2"):
        explainer.attribute(x, block_size=3)
    assert explainer.attribute(x, 0, block_size=2, n_samples=2).phi.shape == (2, 2)


# ---- batches and targets ----


def test_batch_shares_the_prefix_and_equals_one_by_one(resnet18):
    explainer = ShapCAM(resnet18, "layer3")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    calls = []
    hook = resnet18.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = explainer.attribute(x, [1, None, 5], n_samples=4, seed=3)
    finally:
        hook.remove()
    assert len(calls) == 1  # one forward up to the layer for the whole batch
    assert isinstance(results, list) and len(results) == 3
    for image, target, result in zip(x, [1, None, 5], results, strict=True):
        alone = explainer.attribute(image, target, n_samples=4, seed=3)
        assert result.target == alone.target
        np.testing.assert_allclose(result.phi, alone.phi, rtol=0, atol=1e-6)
    single = explainer.attribute(x[:1], 1, n_samples=4, seed=3)
    assert not isinstance(single, list)


def test_batch_with_one_target_for_all_and_progress(resnet18):
    explainer = ShapCAM(resnet18, "layer4")
    calls = []
    results = explainer.attribute(
        torch.randn(2, 3, 64, 64), 7, n_samples=4, progress=lambda d, t: calls.append((d, t))
    )
    assert [r.target for r in results] == [7, 7]
    assert calls[-1] == (8, 8) and all(total == 8 for _, total in calls)


def test_list_of_targets_of_the_wrong_length(resnet18):
    explainer = ShapCAM(resnet18, "layer4")
    with pytest.raises(ShapCAMError, match="list of 2 targets for 3 image"):
        explainer.attribute(torch.randn(3, 3, 64, 64), [1, 2])
    with pytest.raises(ShapCAMError, match="class 1000 is out of range"):
        explainer.attribute(torch.randn(2, 3, 64, 64), [1, 1000])


@pytest.mark.parametrize("layer", ["layer3", "layer4"])  # the general and the fast path
def test_grad_cam_targets_equal_the_class_index(resnet18, layer):
    """ClassifierOutputTarget(k) is class k with the logit value, ...SoftmaxTarget(k) class
    k with the probability: as targets, and as plain callables (evaluated per coalition)."""
    explainer = ShapCAM(resnet18, layer)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    for grad_cam_target, value in (
        (ClassifierOutputTarget(4), "logit"),
        (ClassifierOutputSoftmaxTarget(4), "prob"),
    ):
        by_index = explainer.attribute(x, 4, value=value, n_samples=4, seed=1)
        mapped = explainer.attribute(x, grad_cam_target, n_samples=4, seed=1)
        assert (mapped.target, mapped.value) == (4, value)
        np.testing.assert_array_equal(mapped.phi, by_index.phi)
        wrapped = explainer.attribute(
            x, lambda logits, t=grad_cam_target: t(logits), n_samples=4, seed=1
        )
        assert (wrapped.target, wrapped.value, wrapped.path) == (None, "callable", by_index.path)
        np.testing.assert_allclose(wrapped.phi, by_index.phi, rtol=1e-4, atol=1e-7)
        assert wrapped.v_full == pytest.approx(by_index.v_full, rel=1e-5)


def test_callable_targets_row_by_row_and_errors(resnet18):
    explainer = ShapCAM(resnet18, "layer3")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    margin = explainer.attribute(x, lambda z: z[4] - z[2], n_samples=4, seed=0)
    by_item = explainer.attribute(x, lambda z: float(z[4]) - float(z[2]), n_samples=4, seed=0)
    logit4 = explainer.attribute(x, 4, value="logit", n_samples=4, seed=0)
    logit2 = explainer.attribute(x, 2, value="logit", n_samples=4, seed=0)
    np.testing.assert_allclose(margin.phi, logit4.phi - logit2.phi, rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_item.phi, margin.phi, rtol=0, atol=1e-5)  # no vmap: a loop
    with pytest.raises(ShapCAMError, match="is a callable.*value='logit' conflicts"):
        explainer.attribute(x, ClassifierOutputTarget(4), value="logit")
    with pytest.raises(ShapCAMError, match=r"to a scalar.*gave shape \(1000,\)"):
        explainer.attribute(x, lambda z: z * 2, n_samples=2)


# ---- the anytime explanation ----


def test_refine_extends_and_equals_attribute(resnet18):
    explainer = ShapCAM(resnet18, "layer3")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    explanation = explainer.explain(x, 3, value="logit", baseline="mean", seed=5)
    assert explanation.n_orderings == 0 and explanation.path == "general"
    with pytest.raises(ShapCAMError, match="no orderings yet"):
        explanation.result()
    first = explanation.refine(4)
    second = explanation.refine(4)
    assert (first.n_orderings, second.n_orderings, explanation.n_orderings) == (4, 8, 8)
    assert explanation.result() is second
    expected = explainer.attribute(x, 3, value="logit", baseline="mean", n_samples=8, seed=5)
    np.testing.assert_allclose(second.phi, expected.phi, rtol=0, atol=1e-6)
    assert second.fast_path_reason == explanation.fast_path_reason != ""


def test_cancel_stops_a_refine_in_another_thread(resnet18):
    explanation = ShapCAM(resnet18, "layer3").explain(torch.randn(1, 3, 64, 64), 0, seed=1)
    finished = []
    worker = threading.Thread(target=lambda: finished.append(explanation.refine(10**6)))
    worker.start()
    time.sleep(0.5)
    cancelled_at = time.perf_counter()
    explanation.cancel()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.perf_counter() - cancelled_at < 1.0
    partial = finished[0]
    assert 0 < partial.n_orderings < 10**6 and explanation.cancelled
    assert partial.phi.sum() == pytest.approx(partial.v_full - partial.v_empty, abs=1e-9)
    assert explanation.refine(100) is partial  # no sampling after cancel
    assert explanation.n_orderings == partial.n_orderings


def test_cancel_before_any_refine(resnet18):
    explanation = ShapCAM(resnet18, "layer4").explain(torch.randn(1, 3, 64, 64), 0)
    explanation.cancel()
    with pytest.raises(ShapCAMError, match="cancelled before any ordering"):
        explanation.refine(4)
