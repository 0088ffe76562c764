"""The local path: same orderings and estimates as the general path, found from the graph."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from shapcam_widgets import ShapCAM, ShapCAMError
from shapcam_widgets.cam.structure import find_local_tail


class LocalTailNet(nn.Module):
    """stem -> "layer" (8 x 6 x 6) -> 1x1 expand + BN + ReLU -> ``spatial`` (3x3 by default)
    -> BN + ReLU -> 1x1 project -> GAP -> linear."""

    def __init__(self, spatial: nn.Module | None = None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.layer = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.spatial = spatial or nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.after = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU6(), nn.Conv2d(16, 12, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.after(self.spatial(self.expand(self.layer(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def _net(spatial=None) -> nn.Module:
    torch.manual_seed(0)
    model = LocalTailNet(spatial)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


IMAGE = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
SPATIAL = {
    "3x3 depthwise": None,
    "dilated 3x3 (radius 2)": nn.Conv2d(16, 16, 3, padding=2, dilation=2),
    "two 3x3 (radius 2)": nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
    ),
    "reflect-padded 5x5": nn.Conv2d(16, 16, 5, padding=2, padding_mode="reflect"),
}


@pytest.mark.parametrize("spatial", list(SPATIAL))
@pytest.mark.parametrize(
    ("value", "baseline", "block_size"),
    [("prob", "zero", 1), ("logit", "mean", 2), ("prob", "blur", 1)],
)
def test_local_equals_general(spatial, value, baseline, block_size):
    model = _net(SPATIAL[spatial])
    results = {}
    for path in ("general", "local"):
        explainer = ShapCAM(model, "layer", path=path)
        results[path] = explainer.attribute(
            IMAGE, 3, value=value, baseline=baseline, block_size=block_size, n_samples=6, seed=2
        )
        assert results[path].path == path
    general, local = results["general"], results["local"]
    np.testing.assert_allclose(local.phi, general.phi, atol=1e-6)
    np.testing.assert_allclose(local.stderr, general.stderr, atol=1e-6)
    assert local.n_evaluations == general.n_evaluations
    assert local.phi.sum() == pytest.approx(local.v_full - local.v_empty, abs=1e-6)


def test_radius_and_parts_read_from_the_graph():
    expected = {"3x3 depthwise": 1, "dilated 3x3 (radius 2)": 2, "two 3x3 (radius 2)": 2}
    for name, radius in expected.items():
        explainer = ShapCAM(_net(SPATIAL[name]), "layer")
        assert explainer.local_tail is not None and explainer.local_tail.radius == radius
        assert explainer.local_path_reason == ""
    explainer = ShapCAM(_net(), "layer")
    assert [n for n in explainer.local_tail.middle_nodes] == ["spatial"]


def test_exact_enumeration_on_the_local_plan():
    model = _net()
    exact = {
        path: ShapCAM(model, "layer", path=path).attribute(IMAGE, 1, block_size=2, exact=True)
        for path in ("general", "local")
    }
    assert exact["local"].path == "local" and exact["local"].method == exact["general"].method
    np.testing.assert_allclose(exact["local"].phi, exact["general"].phi, atol=1e-6)


def test_reasons_when_there_is_no_local_path():
    strided = _net(nn.Conv2d(16, 16, 3, stride=2, padding=1))
    explainer = ShapCAM(strided, "layer")
    assert explainer.local_tail is None and "'spatial'" in explainer.local_path_reason
    assert "stride-1" in explainer.local_path_reason
    with pytest.raises(ShapCAMError, match="no local path for layer 'layer'"):
        ShapCAM(strided, "layer", path="local")
    assert explainer.attribute(IMAGE, n_samples=2).path == "general"
    position_wise = ShapCAM(_net(), "after")
    assert "fast path applies" in position_wise.local_path_reason
    assert position_wise.attribute(IMAGE, n_samples=2).path == "fast"


def test_lite0_blocks5_is_local(lite0, chelsea):
    model, preprocess = lite0
    explainer = ShapCAM(model, "blocks.5")
    tail = explainer.local_tail
    assert tail is not None and tail.radius == 1 and tail.middle_nodes == ("blocks_6_0_conv_dw",)
    assert find_local_tail(ShapCAM(model, "blocks.4").network)[0] is None
    x = preprocess(chelsea)
    local = explainer.attribute(x, n_samples=4, seed=5)
    general = ShapCAM(model, "blocks.5", path="general").attribute(x, n_samples=4, seed=5)
    assert local.path == "local"
    np.testing.assert_allclose(local.phi, general.phi, atol=1e-5)


def test_a_wrong_structure_is_caught_by_the_check():
    """With the radius understated, the footprint misses changed cells: the check against
    the network's tail catches it, "auto" falls back to the general path, "local" refuses."""

    model = _net()
    for path in ("auto", "local"):
        explainer = ShapCAM(model, "layer", path=path)
        explainer.local_tail = dataclasses.replace(explainer.local_tail, radius=0)
        if path == "auto":
            assert explainer.attribute(IMAGE, 3, n_samples=2).path == "general"
        else:
            with pytest.raises(ShapCAMError, match="local path disagrees"):
                explainer.attribute(IMAGE, 3, n_samples=2)


def test_the_check_runs_once_per_grid_and_block_size(monkeypatch):
    """Locality is the tail's and the players': later images on the same grid and block
    size skip the check; a new block size (other footprints) is checked again, and a
    failed check is never remembered."""
    from shapcam_widgets.cam import localpath

    calls = []
    check = localpath.LocalLayerGame.check
    monkeypatch.setattr(
        localpath.LocalLayerGame, "check", lambda game: calls.append(1) or check(game)
    )
    explainer = ShapCAM(_net(), "layer", path="local")
    other = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    for image in (IMAGE, other):
        assert explainer.attribute(image, 3, n_samples=2).path == "local"
    assert len(calls) == 1
    explainer.attribute(IMAGE, 3, n_samples=2, block_size=2)
    assert len(calls) == 2

    wrong = ShapCAM(_net(), "layer", path="auto")
    wrong.local_tail = dataclasses.replace(wrong.local_tail, radius=0)
    for _ in range(2):  # checked, and refused, every time
        assert wrong.attribute(IMAGE, 3, n_samples=2).path == "general"
    assert len(calls) == 4


@pytest.mark.parametrize(("spatial", "block_size", "tabled"), [
    ("3x3 depthwise", 1, True),
    ("two 3x3 (radius 2)", 2, True),  # not affine: the middle runs on the whole map
    ("dilated 3x3 (radius 2)", 1, False),  # 2^25 patterns per cell: no table
])  # fmt: skip
def test_walks_with_and_without_the_pattern_table_value_every_coalition(
    spatial, block_size, tabled
):
    """Each cell's last-part output is looked up by the pattern of players present around
    it where the table fits; walked twice (the second time from the table), every
    coalition along 6 orderings has the general path's value."""
    from shapcam_widgets.cam.localpath import LocalLayerGame

    explainer = ShapCAM(_net(SPATIAL[spatial]), "layer", path="local")
    game = explainer.game(IMAGE, 3, block_size=block_size)
    local = LocalLayerGame(game, explainer.local_tail, 64)
    assert (local.table is not None) == tabled
    n = game.n_players
    orders = torch.rand(6, n, generator=torch.Generator().manual_seed(0)).argsort(dim=1)
    ranks = torch.empty_like(orders).scatter_(1, orders, torch.arange(n).expand(6, n))
    masks = ranks[:, None, :] < torch.arange(1, n)[None, :, None]  # (6, n - 1, n)
    general = local(masks.flatten(0, 1)).double().view(6, n - 1)
    for _ in range(2):
        np.testing.assert_allclose(local.walk(orders), general, atol=1e-6)
    if tabled:  # patterns met again were looked up: fewer rows than cells visited
        visits = int(local.footprint_counts[orders[:, :-1]].sum())
        cells = game.cells[0] * game.cells[1]
        assert local.table.n_rows - cells < visits


@pytest.mark.parametrize("benchmark", [True, False])
def test_a_walk_runs_without_cudnn_benchmarking_and_restores_the_setting(benchmark, monkeypatch):
    """The last part runs on a column of another length at nearly every step: with
    ``cudnn.benchmark`` on, cuDNN would time its algorithms on each new length. A walk
    turns it off for its own calls and gives the user's setting back, also on an error."""
    from shapcam_widgets.cam.localpath import LocalLayerGame

    explainer = ShapCAM(_net(), "layer", path="local")
    game = explainer.game(IMAGE, 3)
    local = LocalLayerGame(game, explainer.local_tail, 64)
    seen = []
    last = local.tail.last
    local.tail = dataclasses.replace(
        local.tail, last=lambda x: seen.append(torch.backends.cudnn.benchmark) or last(x)
    )
    orders = torch.rand(2, game.n_players, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", benchmark)
    local.walk(orders.argsort(dim=1))
    assert seen and not any(seen)
    assert torch.backends.cudnn.benchmark is benchmark
    with pytest.raises(IndexError):
        local.walk(torch.zeros(2, game.n_players + 5, dtype=torch.long) + 10**6)
    assert torch.backends.cudnn.benchmark is benchmark
