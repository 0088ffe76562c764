"""Shap-CAM on real CNNs: the CAM identity, efficiency, layers, baselines, bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from shapcam_widgets import ShapCAM, ShapCAMError
from shapcam_widgets.cam import LayerGame, choose_device
from shapcam_widgets.cam.layers import SplitNetwork


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
    """Linear head + logit value + zero baseline: phi = CAM / n (METHOD.md section 3)."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    target = 7
    block = 2 if exact else 1  # 4 x 4 = 16 blocks keep exact enumeration small
    explainer = ShapCAM(resnet18, "layer4", value="logit", baseline="zero", block_size=block)
    result = explainer.attribute(x, target, n_samples=4, exact=exact)
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
    # the cat's head in chelsea (300 x 451 px), read off the photo
    assert 30 <= row <= 300 and 90 <= col <= 380


def test_same_seed_same_map(resnet18):
    x = torch.randn(1, 3, 64, 64)
    explainer = ShapCAM(resnet18, "layer3")
    first = explainer.attribute(x, 3, n_samples=6, seed=5)
    assert np.array_equal(first.phi, explainer.attribute(x, 3, n_samples=6, seed=5).phi)
    assert not np.array_equal(first.phi, explainer.attribute(x, 3, n_samples=6, seed=6).phi)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
@pytest.mark.parametrize("value", ["prob", "logit"])
def test_every_value_and_baseline(resnet18, value, baseline):
    x = torch.randn(1, 3, 64, 64)
    result = ShapCAM(resnet18, "layer3", value=value, baseline=baseline).attribute(
        x, 2, n_samples=4
    )
    assert result.phi.sum() == pytest.approx(result.v_full - result.v_empty, abs=1e-9)
    assert (result.value, result.baseline) == (value, baseline)


def test_baselines_replace_absent_cells(resnet18):
    x = torch.randn(1, 3, 64, 64)
    explainer = ShapCAM(resnet18, "layer3", baseline="mean")
    game = explainer.game(x, 0)
    none = game.masked_activations(torch.zeros(1, game.n_players, dtype=torch.bool))
    mean = game.activation.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(none, mean.expand_as(none))
    everything = game.masked_activations(torch.ones(1, game.n_players, dtype=torch.bool))
    torch.testing.assert_close(everything, game.activation)


def test_blocks_group_cells(resnet18):
    x = torch.randn(1, 3, 224, 224)
    result = ShapCAM(resnet18, "layer4", block_size=3).attribute(x, 0, n_samples=4)
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


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 64, 64), (1, 1, 64, 64), (64, 64)])
def test_wrong_image_shape(resnet18, shape):
    with pytest.raises(ShapCAMError, match="3 x H x W"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(shape))


def test_samples_below_one(resnet18):
    with pytest.raises(ShapCAMError, match="n_samples must be >= 1"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 64, 64), n_samples=0)


def test_too_many_players_for_exact(resnet18):
    with pytest.raises(ShapCAMError, match="at most 20 players.*49"):
        ShapCAM(resnet18, "layer4").attribute(torch.randn(1, 3, 224, 224), exact=True)


@pytest.mark.parametrize(
    "option, message",
    [("value", "unknown value 'margin'; valid: prob, logit"), ("baseline", "valid: zero, mean")],
)
def test_unknown_options(resnet18, option, message):
    with pytest.raises(ShapCAMError, match=message):
        ShapCAM(resnet18, "layer4", **{option: "margin"})
    with pytest.raises(ShapCAMError, match="block_size must be >= 1"):
        ShapCAM(resnet18, "layer4", block_size=0)


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
    assert small.batch_size(small.game(x, 0)) == 1
    assert large.batch_size(large.game(x, 0)) > 1
    np.testing.assert_allclose(
        small.attribute(x, 0, n_samples=2).phi, large.attribute(x, 0, n_samples=2).phi, atol=1e-6
    )


def test_game_refuses_malformed_coalitions(resnet18):
    game: LayerGame = ShapCAM(resnet18, "layer4").game(torch.randn(1, 3, 64, 64), 0)
    with pytest.raises(ShapCAMError, match=r"bool tensor \(B, 4\)"):
        game(torch.ones(2, 5, dtype=torch.bool))
