"""Evaluation: data reader, metrics (cross-checked with pytorch-grad-cam), methods,
runner (records, resume, lock, data fingerprint), the command line, and 2-process gloo
sharding. Tiny models keep it fast."""

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from shapcam_widgets import ShapCAM, ShapCAMError
from shapcam_widgets.evaluation import (
    EvaluationConfig,
    ImageNetLOC,
    evaluate,
    gallery,
    make_method,
    metrics,
)
from shapcam_widgets.evaluation import runner as runner_module
from shapcam_widgets.evaluation.__main__ import main as evaluate_main
from shapcam_widgets.evaluation.data import ENV_VAR
from shapcam_widgets.evaluation.methods import parse_methods
from shapcam_widgets.evaluation.records import records_path
from shapcam_widgets.models import Preprocess

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "imagenet-val-subset"
N_CLASSES = 10
SIZE = 32
ALL_METHODS = (
    "shapcam",
    "shapcam_logit",
    "cam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "layercam",
    "center",
    "random",
)


class TinyNet(nn.Module):
    """conv stem -> "stage" (16 x 8 x 8 at 32 px) -> 1x1 head + ReLU -> GAP -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 24, 1)
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(24, N_CLASSES)

    def forward(self, x):
        x = self.act(self.head(self.stage(self.stem(x))))
        return self.classifier(self.global_pool(x).flatten(1))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        model.classifier.weight.mul_(4)
    return model


def make_loc(root: Path, n: int = 6, size=(48, 40)) -> Path:
    """A tiny ImageNet LOC folder: n images (the 3rd corrupt, the 4th missing) and one
    malformed CSV row after them."""
    (root / "val").mkdir(parents=True)
    synsets = [f"n{index:08d}" for index in range(N_CLASSES)]
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{s} class number {i}\n" for i, s in enumerate(synsets))
    )
    rng = np.random.default_rng(0)
    rows = ["ImageId,PredictionString"]
    for i in range(n):
        image_id = f"ILSVRC2012_val_{i + 1:08d}"
        width, height = size
        label = synsets[i % N_CLASSES]
        boxes = f"{label} 10 8 30 36" + (f" {label} 0 0 12 10" if i == 0 else "")
        rows.append(f"{image_id},{boxes}")
        path = root / "val" / f"{image_id}.JPEG"
        if i == 2:
            path.write_bytes(b"not a jpeg at all")
        elif i != 3:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=95)
    rows.append("ILSVRC2012_val_99999999,n00000001 1 2 3")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------- data


def test_reader_on_synthetic_folder(tmp_path, monkeypatch):
    root = make_loc(tmp_path / "loc")
    data = ImageNetLOC(root)
    assert [s.image_id for s in data][:2] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    assert len(data) == 6 and len(data.invalid) == 1
    assert data.samples[1].label == 1 and data.samples[1].synset == "n00000001"
    assert data.samples[0].boxes == ((10, 8, 30, 36), (0, 0, 12, 10))
    assert data.load(data.samples[0]).size == (48, 40)
    with pytest.raises(ShapCAMError, match="cannot decode"):
        data.load(data.samples[2])
    with pytest.raises(ShapCAMError, match="missing"):
        data.load(data.samples[3])
    assert [s.image_id for s in ImageNetLOC(root, limit=2)] == [
        "ILSVRC2012_val_00000001",
        "ILSVRC2012_val_00000002",
    ]
    monkeypatch.setenv(ENV_VAR, str(root))
    assert ImageNetLOC(limit=1).root == root
    with pytest.raises(ShapCAMError, match="does not exist"):
        ImageNetLOC(tmp_path / "nowhere")


def test_reader_names_csv_lines_and_drops_duplicate_rows(tmp_path):
    """Issue 10 (3): a repeated ImageId is read once; rows left out say their line."""
    root = make_loc(tmp_path / "loc")
    csv = root / "LOC_val_solution.csv"
    csv.write_text(csv.read_text() + "ILSVRC2012_val_00000002,n00000005 0 0 4 4\n")
    data = ImageNetLOC(root)
    assert len(data) == 6 and data.samples[1].synset == "n00000001"
    assert data.duplicates == [
        ("ILSVRC2012_val_00000002", "LOC_val_solution.csv line 9: the ImageId of line 3 again")
    ]
    assert data.invalid == [
        (
            "ILSVRC2012_val_99999999",
            "LOC_val_solution.csv line 8: PredictionString is not a list of 'synset x1 y1 x2 y2'",
        )
    ]


def test_reader_refuses_a_folder_without_images(tmp_path):
    """Issue 10 (3): no val/ (nor the Kaggle layout), or none of the CSV's images in it."""
    root = make_loc(tmp_path / "loc")
    shutil.rmtree(root / "val")
    with pytest.raises(ShapCAMError, match=r"no image folder: looked for val/ and ILSVRC/Data"):
        ImageNetLOC(root)
    (root / "val").mkdir()
    with pytest.raises(ShapCAMError, match=r"no image of the 6 valid rows .* is in"):
        ImageNetLOC(root)


def test_reader_kaggle_layout(tmp_path):
    root = make_loc(tmp_path / "loc")
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    kaggle.mkdir(parents=True)
    (root / "val").rename(kaggle / "val")
    data = ImageNetLOC(root)
    assert data.load(data.samples[0]).size == (48, 40)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ImageNet subset not present")
def test_reader_on_shared_subset():
    data = ImageNetLOC(SHARED)
    assert len(data) == 1000 and not data.invalid
    assert sum(len(s.boxes) for s in data) == 1500
    first = data.samples[0]
    assert first.image_id == "ILSVRC2012_val_00000347" and len(first.boxes) == 8
    assert data.synsets[first.label] == first.synset == "n02951358"
    assert data.load(first).size == (227, 227)


# ---------------------------------------------------------------- metrics


def test_confidence_change_equals_pytorch_grad_cam():
    from pytorch_grad_cam.metrics.cam_mult_image import (
        CamMultImageConfidenceChange,
        DropInConfidence,
        IncreaseInConfidence,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = tiny_model()
    rng = np.random.default_rng(1)
    gradcam = make_method("gradcam", model, "stage", input_size=SIZE)
    increases = set()
    for trial in range(12):
        x = torch.from_numpy(rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32))
        target = trial % N_CLASSES
        raw = gradcam(x, target, 0) if trial % 2 else rng.normal(size=(SIZE, SIZE))
        saliency = metrics.scale_map(raw)
        y, o = metrics.confidence_change(model, x, saliency, target)
        args = (x, saliency[None], [ClassifierOutputSoftmaxTarget(target)], model)
        diff = CamMultImageConfidenceChange()(*args)[0]
        drop = DropInConfidence()(*args)[0]
        up = IncreaseInConfidence()(*args)[0]
        assert abs((o - y) - diff) < 1e-6
        assert abs(metrics.average_drop(y, o) / 100 * y - drop) < 1e-6
        assert metrics.increase(y, o) / 100 == up
        increases.add(float(up))
    assert increases == {0.0, 1.0}


def test_confidence_change_equals_pytorch_grad_cam_on_lite0():
    """The same check on EfficientNet-Lite0, a real photo and real Grad-CAM maps."""
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from skimage import data as photos

    from shapcam_widgets import load_model

    model, preprocess = load_model("efficientnet_lite0")
    x = preprocess(photos.chelsea())
    target = int(model(x).argmax())
    for name in ("gradcam", "center"):
        saliency = metrics.scale_map(make_method(name, model, "blocks.6")(x, target, 0))
        y, o = metrics.confidence_change(model, x, saliency, target)
        args = (x, saliency[None], [ClassifierOutputSoftmaxTarget(target)], model)
        assert abs(metrics.average_drop(y, o) / 100 * y - DropInConfidence()(*args)[0]) < 1e-6
        assert metrics.increase(y, o) / 100 == IncreaseInConfidence()(*args)[0]


class LeftHalfModel(nn.Module):
    """p(class 0) = mean of the input over its left half (inputs in [0, 1])."""

    def forward(self, x):
        p = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3)).clamp(1e-7, 1 - 1e-7)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


class MeanModel(nn.Module):
    def forward(self, x):
        p = x.mean(dim=(1, 2, 3)).clamp(1e-7, 1 - 1e-7)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_deletion_insertion_known_answers():
    model, x = LeftHalfModel(), torch.ones(1, 3, 16, 16)
    good = np.zeros((16, 16))
    good[:, :8] = 1
    zeros = torch.zeros_like(x)
    deletion = [metrics.auc(*metrics.deletion_curve(model, x, m, 0, 16)) for m in (good, 1 - good)]
    insertion = [
        metrics.auc(*metrics.insertion_curve(model, x, m, 0, 16, substrate=zeros))
        for m in (good, 1 - good)
    ]
    np.testing.assert_allclose(deletion, [0.25, 0.75], atol=1e-5)
    np.testing.assert_allclose(insertion, [0.75, 0.25], atol=1e-5)
    # a step that does not divide the image: the fraction axis ends at exactly 1
    fractions, scores = metrics.deletion_curve(MeanModel(), x, np.random.rand(16, 16), 0, 100)
    np.testing.assert_allclose(fractions, [0, 100 / 256, 200 / 256, 1])
    assert metrics.auc(fractions, scores) == pytest.approx(0.5, abs=1e-5)
    # insertion starts from RISE's blur of the image and ends at the image
    picture = torch.rand(1, 3, 16, 16)
    _, scores = metrics.insertion_curve(model, picture, good, 0)
    assert len(scores) == 3  # 8 rows per step: 0, 128, 256 pixels
    assert scores[0] == pytest.approx(
        metrics.probabilities(model, metrics.rise_blur(picture), 0)[0]
    )
    assert scores[-1] == pytest.approx(metrics.probabilities(model, picture, 0)[0])


def test_boxes_scaled_to_the_map():
    mask = metrics.box_mask([(0, 0, 113, 227)], (227, 227), (224, 224))
    assert mask[:, :112].all() and not mask[:, 112:].any()
    mask = metrics.box_mask([(0, 0, 10, 10), (20, 20, 39, 39)], (40, 40), (20, 20))
    assert mask[:5, :5].all() and mask[10:, 10:].all() and not mask[6:9].any()


def test_scale_map_and_pointing_games():
    assert not metrics.scale_map(np.full((4, 4), 3.0)).any()
    assert not metrics.scale_map(-np.ones((4, 4))).any()
    scaled = metrics.scale_map(np.random.default_rng(0).normal(size=(8, 8)))
    assert scaled.min() == 0 and scaled.max() == 1 and scaled.dtype == np.float32
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    saliency = np.zeros((10, 10))
    saliency[3, 3], saliency[8, 8] = 1.0, 0.5
    assert metrics.pointing_game(saliency, mask) == 1.0
    assert metrics.energy_pointing_game(saliency, mask) == pytest.approx(1 / 1.5)
    assert metrics.energy_pointing_game(np.zeros((10, 10)), mask) == 0.0
    low, high = metrics.bootstrap_ci(np.arange(100.0), 500, seed=0)
    assert low < 49.5 < high and high - low < 15


def test_trivial_baselines_behave():
    x = torch.zeros(1, 3, 64, 64)
    centre = metrics.scale_map(make_method("center", None, "stage")(x, 0, 0))
    assert centre.max() == 1 and np.unravel_index(centre.argmax(), centre.shape) in {
        (31, 31),
        (31, 32),
        (32, 31),
        (32, 32),
    }
    centred_box = metrics.box_mask([(16, 16, 48, 48)], (64, 64), (64, 64))
    corner_box = metrics.box_mask([(0, 0, 12, 12)], (64, 64), (64, 64))
    assert metrics.pointing_game(centre, centred_box) == 1.0
    assert metrics.pointing_game(centre, corner_box) == 0.0
    assert metrics.energy_pointing_game(centre, centred_box) > 2 * centred_box.mean()
    # random maps: different per seed, reproducible, energy share about the box's area
    random_map = make_method("random", tiny_model(), "stage", input_size=SIZE)
    x = torch.zeros(1, 3, SIZE, SIZE)
    np.testing.assert_array_equal(random_map(x, 0, 3), random_map(x, 0, 3))
    assert not np.array_equal(random_map(x, 0, 3), random_map(x, 0, 4))
    box = metrics.box_mask([(0, 0, 16, 32)], (32, 32), (32, 32))
    shares = [
        metrics.energy_pointing_game(metrics.scale_map(random_map(x, 0, s)), box)
        for s in range(200)
    ]
    assert np.mean(shares) == pytest.approx(box.mean(), abs=0.03)


def test_cam_equals_shapcam_logit_zero_times_n():
    model = tiny_model()
    x = torch.randn(1, 3, SIZE, SIZE)
    cam = make_method("cam", model, "stage", input_size=SIZE)(x, 3, 0)
    result = ShapCAM(model, "act", device="cpu").attribute(
        x, 3, value="logit", baseline="zero", n_samples=2
    )
    np.testing.assert_allclose(result.upsample() * 64, cam, atol=1e-4)
    with pytest.raises(ShapCAMError, match="different grid"):
        make_method("cam", model, "stem", input_size=SIZE)(x, 3, 0)


def test_grad_cam_adapter_restores_the_model(capfd):
    """evaluation.gradcam: hooks released, modes and gradients as they were, ScoreCAM
    quiet, a batch with one target per image = the images one by one."""
    from shapcam_widgets.evaluation.gradcam import GRAD_CAM_CLASSES, grad_cam

    model = tiny_model().train()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    for method in GRAD_CAM_CLASSES:
        maps = grad_cam(model, "stage", method, x, [1, 4, 7])
        assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
        for i, target in enumerate((1, 4, 7)):
            alone = grad_cam(model, "stage", method, x[i : i + 1], target)[0]
            np.testing.assert_allclose(maps[i], alone, atol=1e-5)
        assert all(module.training for module in model.modules())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
    assert "it/s" not in capfd.readouterr().err  # no tqdm bar from ScoreCAM
    with pytest.raises(ShapCAMError, match="unknown layer 'nope'"):
        grad_cam(model, "nope", "gradcam", x, 0)
    with pytest.raises(ShapCAMError, match="2 targets for 3 images"):
        grad_cam(model, "stage", "gradcam", x, [0, 1])


def test_parse_methods():
    assert parse_methods("gradcam, center") == ["gradcam", "center"]
    with pytest.raises(ShapCAMError, match="unknown method"):
        parse_methods("gradcam,magic")


# ---------------------------------------------------------------- runner


def _config(**changes):
    settings = dict(
        model="tiny", layer="stage", methods=ALL_METHODS, samples=4, bootstrap=200, step=64
    )
    return EvaluationConfig(**{**settings, **changes})


def _run(data_root, out, limit=None, progress=False, **changes):
    torch.set_num_threads(1)
    return evaluate(
        tiny_model(),
        Preprocess(SIZE),
        ImageNetLOC(data_root, limit=limit),
        _config(**changes),
        out,
        progress=progress,
    )


def _records(out):
    lines = [json.loads(line) for line in records_path(Path(out)).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]


def _metrics_only(summary):
    return {
        name: {k: v for k, v in entry.items() if k != "seconds_per_image"}
        for name, entry in summary["methods"].items()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = make_loc(tmp_path_factory.mktemp("data") / "loc")
    out = tmp_path_factory.mktemp("single") / "results.json"
    threads = torch.get_num_threads()
    try:
        summary = _run(root, out)
    finally:
        torch.set_num_threads(threads)
    return root, out, summary


def test_summary_and_records(reference):
    root, out, summary = reference
    assert set(summary) >= {"model", "layer", "n_images", "target", "methods", "skipped"}
    assert summary["n_images"] == 4 and summary["n_skipped"] == 3
    assert {s["image_id"] for s in summary["skipped"]} == {
        "ILSVRC2012_val_00000003",
        "ILSVRC2012_val_00000004",
        "ILSVRC2012_val_99999999",
    }
    for entry in summary["methods"].values():
        assert set(entry) >= {
            "avg_drop", "avg_increase", "deletion_auc", "insertion_auc",
            "energy_pointing_game", "pointing_game", "seconds_per_image", "ci",
        }  # fmt: skip
        assert 0 <= entry["avg_drop"] <= 100 and 0 <= entry["avg_increase"] <= 100
        for key in ("deletion_auc", "insertion_auc", "energy_pointing_game", "pointing_game"):
            assert 0 <= entry[key] <= 1
            low, high = entry["ci"][key]
            assert low <= entry[key] <= high
    assert json.loads(out.read_text())["records"] == records_path(out).name
    assert out.with_suffix(".csv").read_text().count("\n") == 1 + len(ALL_METHODS)
    records = _records(out)
    assert "config" in records[0]
    assert sum("skipped" in r for r in records) == 2
    assert sum("method" in r for r in records) == 4 * len(ALL_METHODS)


def test_agreement_follows_the_cam_identity(reference):
    """At "stage" the tiny net's tail is position-wise up to GAP + linear, so with the logit
    and a zero baseline phi_i = CAM_i / n - W g(0) / n: a positive affine image of CAM,
    whose cell ranking is CAM's (rank correlation 1 on every image)."""
    _root, out, summary = reference
    identity = summary["agreement"]["shapcam_logit vs cam"]
    assert identity["n_images"] == 4 and identity["quartiles"][0] > 0.999
    other = summary["agreement"]["shapcam vs gradcam"]
    assert other["n_images"] + other["n_constant"] == 4 and -1 <= other["median"] <= 1
    records = [r for r in _records(out) if r.get("method") == "shapcam"]
    assert all(np.shape(r["grid"]) == (8, 8) and r["n_orderings"] == 4 for r in records)


def test_method_added_later_is_summarized_on_its_own_images(tmp_path):
    root = make_loc(tmp_path / "loc")
    out = tmp_path / "results.json"
    _run(root, out, methods=("center",))
    _run(root, out, limit=1, methods=("random",))
    summary = _run(root, out, methods=("center",))
    assert summary["methods"]["center"]["n_images"] == 4
    assert summary["methods"]["center"]["images"] == "paired"
    assert summary["methods"]["random"]["n_images"] == 1
    assert summary["methods"]["random"]["images"] == "own"


def test_block_size_and_tol_are_part_of_the_records_key(reference, tmp_path):
    assert "block_size" not in _config().key() and "tol" not in _config().key()
    key = _config(block_size=2, tol=0.01).key()
    assert key["block_size"] == 2 and key["tol"] == 0.01
    root, _out, _summary = reference
    out = tmp_path / "results.json"
    summary = _run(root, out, methods=("shapcam",), block_size=2, samples=8, tol=1e9)
    records = [r for r in _records(out) if "method" in r]
    # the grid is the layer's 8 x 8 cells whatever the players; the tiny game's 8
    # orderings fit one batch, so tol (checked between batches) cannot stop them earlier
    assert all(np.shape(r["grid"]) == (8, 8) and r["n_orderings"] == 8 for r in records)
    assert summary["settings"]["block_size"] == 2 and summary["settings"]["tol"] == 1e9
    with pytest.raises(ShapCAMError, match="--fresh"):
        _run(root, out, methods=("shapcam",), block_size=1, samples=8, tol=1e9)


def test_resume_after_interruption(reference, tmp_path):
    root, out, summary = reference
    lines = records_path(out).read_text().splitlines()
    partial = tmp_path / "results.json"
    # keep the config, the skip lines and 5 records, then a line cut in half
    records_path(partial).write_text("\n".join(lines[:8]) + "\n" + lines[8][:40])
    resumed = _run(root, partial)
    assert _metrics_only(resumed) == _metrics_only(summary)
    assert _records(partial) == _records(out)
    with pytest.raises(ShapCAMError, match="--fresh"):
        _run(root, partial, samples=6)


def _worker(rank, world, port, root, out, refusals=False):
    """One rank of a gloo run; with ``refusals``, a refusal is written to refused<rank>."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    from shapcam_widgets.evaluation import distributed

    distributed.init_from_env()
    try:
        _run(root, out)
    except ShapCAMError as error:
        if not refusals:
            raise
        Path(out).with_name(f"refused{rank}").write_text(str(error))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_equal_one(reference, tmp_path):
    root, out, summary = reference
    sharded = tmp_path / "results.json"
    mp.spawn(_worker, args=(2, _free_port(), str(root), str(sharded)), nprocs=2, join=True)
    assert not list(tmp_path.glob("*.rank*.jsonl"))
    assert _records(sharded) == _records(out)
    assert _metrics_only(json.loads(sharded.read_text())) == _metrics_only(summary)


def test_target_predicted(reference, tmp_path):
    root, _out, _summary = reference
    out = tmp_path / "results.json"
    summary = _run(root, out, methods=("center", "cam"), target="predicted")
    assert summary["target"] == "predicted" and summary["n_images"] == 4
    records = [r for r in _records(out) if "method" in r]
    assert records and all(r["target"] == r["predicted"] for r in records)


# ---------------------------------------------------------------- issue 10: reliability


def test_a_second_run_on_the_same_out_is_refused(tmp_path, monkeypatch):
    """(1) While a run writes --out, another one is refused, names the holder, and touches
    nothing; the lock goes with the run."""
    root = make_loc(tmp_path / "loc")
    out = tmp_path / "results.json"
    score_map, refusals = runner_module.score_map, []

    def score_and_start_another(*args):
        if not refusals:
            with pytest.raises(ShapCAMError) as refused:
                _run(root, out, methods=("center",), seed=1)
            refusals.append(str(refused.value))
        return score_map(*args)

    monkeypatch.setattr(runner_module, "score_map", score_and_start_another)
    summary = _run(root, out, methods=("center",))
    assert f"pid {os.getpid()} on {socket.gethostname()}" in refusals[0]
    assert "another evaluation" in refusals[0] and "another --out" in refusals[0]
    assert summary["n_images"] == 4 and summary["settings"]["seed"] == 0
    assert sum("method" in r for r in _records(out)) == 4
    assert not (tmp_path / "results.json.lock").exists()


def test_every_rank_learns_of_the_refusal(tmp_path):
    """(1) Under torchrun rank 0 holds the lock; the other ranks get its refusal."""
    from shapcam_widgets.evaluation.records import OutputLock

    root = make_loc(tmp_path / "loc")
    out = tmp_path / "results.json"
    holder = OutputLock(out)
    holder.acquire()
    try:
        mp.spawn(_worker, args=(2, _free_port(), str(root), str(out), True), nprocs=2)
    finally:
        holder.release()
    for rank in (0, 1):
        assert f"pid {os.getpid()}" in (tmp_path / f"refused{rank}").read_text()
    assert not records_path(out).exists()


def test_records_of_other_data_are_refused(tmp_path, capsys):
    """(2) The records carry the data's fingerprint: resuming with other boxes, another
    mapping or other image files is refused; --limit resumes; records from before
    fingerprints are taken, with one warning, and then fingerprinted."""
    root = make_loc(tmp_path / "loc")
    out = tmp_path / "results.json"
    _run(root, out, methods=("center",))
    moved = Path(shutil.copytree(root, tmp_path / "moved"))
    csv = moved / "LOC_val_solution.csv"
    csv.write_text(csv.read_text().replace(" 10 8 30 36", " 30 30 46 38"))
    with pytest.raises(ShapCAMError, match=r"LOC_val_solution.csv differ: pass --fresh"):
        _run(moved, out, methods=("center",))
    mapping = Path(shutil.copytree(root, tmp_path / "mapping"))
    (mapping / "LOC_synset_mapping.txt").write_text(
        (root / "LOC_synset_mapping.txt").read_text().replace("class number", "class")
    )
    with pytest.raises(ShapCAMError, match=r"LOC_synset_mapping.txt differ"):
        _run(mapping, out, methods=("center",))
    kaggle = Path(shutil.copytree(root, tmp_path / "kaggle"))
    (kaggle / "ILSVRC" / "Data" / "CLS-LOC").mkdir(parents=True)
    (kaggle / "val").rename(kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    with pytest.raises(ShapCAMError, match=r"the image files its rows name differ"):
        _run(kaggle, out, methods=("center",))
    assert _run(root, out, limit=2, methods=("center",))["n_images"] == 2
    lines = records_path(out).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["data"] == ImageNetLOC(root).fingerprint()
    del header["data"]
    records_path(out).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    capsys.readouterr()
    assert _run(root, out, methods=("center",))["n_images"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "does not say which data" in warnings[0]
    assert json.loads(records_path(out).read_text().splitlines()[0]) == {
        **header,
        "data": ImageNetLOC(root).fingerprint(),
    }


def test_duplicate_and_malformed_rows(tmp_path, capsys):
    """(3) A repeated CSV row counts once; rows left out are said on stderr with their line."""
    root = make_loc(tmp_path / "loc")
    csv = root / "LOC_val_solution.csv"
    csv.write_text(csv.read_text() + "ILSVRC2012_val_00000001,n00000000 0 0 47 39\n")
    summary = _run(root, tmp_path / "results.json", methods=("center",))
    assert summary["n_images"] == 4 and summary["methods"]["center"]["n_images"] == 4
    assert summary["duplicate_rows"] == [
        {
            "image_id": "ILSVRC2012_val_00000001",
            "reason": "LOC_val_solution.csv line 9: the ImageId of line 2 again",
        }
    ]
    err = capsys.readouterr().err
    assert "LOC_val_solution.csv line 8: PredictionString is not" in err
    assert "line 9: the ImageId of line 2 again (ILSVRC2012_val_00000001)" in err


def test_a_repaired_image_is_retried(tmp_path):
    """(3) Skipped images are retried on resume; once read, their skip record goes."""
    root = make_loc(tmp_path / "loc")
    out = tmp_path / "results.json"
    assert _run(root, out, methods=("center",))["n_images"] == 4
    repaired = "ILSVRC2012_val_00000004"
    Image.new("RGB", (48, 40), "teal").save(root / "val" / f"{repaired}.JPEG")
    summary = _run(root, out, methods=("center",))
    assert summary["n_images"] == 5 and summary["n_skipped"] == 2
    records = _records(out)
    assert not [r for r in records if r.get("image_id") == repaired and "skipped" in r]
    assert [r["method"] for r in records if r.get("image_id") == repaired] == ["center"]


def test_no_readable_image_is_an_error(tmp_path):
    """(3) A run that could read no image fails instead of summarizing 0 images."""
    root = make_loc(tmp_path / "loc")
    for path in (root / "val").iterdir():
        path.write_bytes(b"broken")
    out = tmp_path / "results.json"
    with pytest.raises(ShapCAMError, match=r"no image could be read: all 6 were skipped"):
        _run(root, out, methods=("center",))
    assert not out.exists()


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``python -m shapcam_widgets.evaluation`` on a tiny LOC folder with the tiny model:
    a function of the extra arguments returning the exit code (or a KeyboardInterrupt that
    escaped)."""
    import shapcam_widgets.models

    root = make_loc(tmp_path / "loc")
    monkeypatch.setattr(sys, "argv", ["evaluate"])
    monkeypatch.setattr(
        shapcam_widgets.models, "load_model", lambda name: (tiny_model(), Preprocess(SIZE))
    )
    base = ["--data", str(root), "--methods", "center", "--layer", "stage", "--bootstrap", "50"]

    def run(*arguments):
        torch.set_num_threads(1)
        try:
            return evaluate_main([*base, *arguments])
        except KeyboardInterrupt as error:  # what Ctrl-C must not do
            return error

    return run


def test_out_is_checked_before_any_work(cli, tmp_path, monkeypatch, capsys):
    """(5) --out naming a folder, not a .json, or under a file fails at once."""
    import shapcam_widgets.models

    def no_model(name):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(shapcam_widgets.models, "load_model", no_model)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "a-file").write_text("")
    for out, message in [
        (tmp_path / "outdir", "is a folder, not a file"),
        (tmp_path / "results.txt", "must name the summary's .json file"),
        (tmp_path / "a-file" / "results.json", "is a file, not a folder"),
    ]:
        assert cli("--out", str(out)) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_image_folder_exits_non_zero(cli, tmp_path, capsys):
    """(3) No val/ folder: an error naming the layouts looked for, not "0 images"."""
    shutil.rmtree(tmp_path / "loc" / "val")
    assert cli("--out", str(tmp_path / "results.json")) == 2
    assert "looked for val/ and ILSVRC/Data/CLS-LOC/val/" in capsys.readouterr().err


def test_ctrl_c_keeps_the_records_and_says_how_to_resume(cli, tmp_path, monkeypatch, capsys):
    """(6) Ctrl-C: one line, exit 130, the records so far kept, the lock released."""
    score_map, calls = runner_module.score_map, []

    def interrupt_the_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return score_map(*args)

    monkeypatch.setattr(runner_module, "score_map", interrupt_the_third)
    out = tmp_path / "results.json"
    assert cli("--out", str(out), "--no-progress") == 130
    err = capsys.readouterr().err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    assert sum("method" in r for r in _records(out)) == 2
    assert not (tmp_path / "results.json.lock").exists()
    monkeypatch.setattr(runner_module, "score_map", score_map)
    assert cli("--out", str(out), "--no-progress") == 0
    assert json.loads(out.read_text())["n_images"] == 4


def test_estimate_and_progress_on_stderr(reference, tmp_path, monkeypatch, capsys):
    """(7) After the first image, the estimated time of a long run (also with no progress
    bar); the bar on stderr off a terminal too."""
    import shapcam_widgets.cli

    root, _out, _summary = reference
    monkeypatch.setattr(shapcam_widgets.cli, "LONG_RUN", 0.0)
    _run(root, tmp_path / "quiet.json", methods=("center",))
    err = capsys.readouterr().err
    assert re.search(r"about \d+ s for 6 images at \d+\.\d s per image", err)
    _run(root, tmp_path / "bar.json", methods=("center",), progress=True)
    err = capsys.readouterr().err
    assert "about" in err and re.search(r"evaluate: 100%.*6/6", err)


# ---------------------------------------------------------------- galleries


def test_gallery_cases_are_ranked_by_insertion_minus_deletion():
    records = {
        (f"img{i}", "m"): {"insertion_auc": score, "deletion_auc": 0.0}
        for i, score in enumerate([0.5, -0.3, 0.9, 0.1, 0.7, -0.8, 0.2])
    }
    cases = gallery.pick_cases(records, "m", k=2)
    assert cases["best"] == ["img2", "img4"]
    assert cases["worst"] == ["img1", "img5"]
    # sorted: 0.9 0.7 0.5 0.2 0.1 -0.3 -0.8; the two around the median (index 3)
    assert cases["typical"] == ["img0", "img6"]


def test_saved_galleries_recompute_the_records_and_refuse_other_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "load_model", lambda name: (tiny_model(), Preprocess(SIZE)))
    root = make_loc(tmp_path / "loc", n=8)
    out = tmp_path / "run" / "results.json"
    out.parent.mkdir()
    _run(root, out, methods=("gradcam", "center"))
    written = gallery.save_galleries(out.parent, root, methods=("gradcam", "center"), k=1)
    assert [path.name for path in written] == ["gradcam.jpg", "center.jpg"]
    assert all(Image.open(path).size == (1000, 420) for path in written)
    summary, records = gallery.load_run(out.parent)
    case = gallery.recompute_cases(summary, records, "gradcam", ImageNetLOC(root), k=1)
    assert [c.kind for c in case] == ["best", "typical", "worst"] and all(c.matches for c in case)
    # a record that the recomputed map does not reproduce: refused, nothing overwritten
    lines = records_path(out).read_text().splitlines()
    worst = next(c.image_id for c in case if c.kind == "worst")
    edited = []
    for line in lines:
        record = json.loads(line)
        if record.get("image_id") == worst and record.get("method") == "gradcam":
            record["energy_pointing_game"] += 0.1
        edited.append(json.dumps(record))
    records_path(out).write_text("\n".join(edited) + "\n")
    with pytest.raises(ShapCAMError, match=f"gradcam maps of {worst} do not score as"):
        gallery.save_galleries(out.parent, root, methods=("gradcam",), k=1)
