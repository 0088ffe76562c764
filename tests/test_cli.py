"""The shapcam command line, end to end."""

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_models import huge_png

from shapcam_widgets import models
from shapcam_widgets.cam import ShapCAMResult
from shapcam_widgets.cli import ProgressReport, main


@pytest.fixture(scope="module")
def chelsea_file(tmp_path_factory, chelsea):
    path = tmp_path_factory.mktemp("images") / "chelsea.png"
    Image.fromarray(chelsea).save(path)
    return path


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (32, 24), "grey").save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is loaded: the error must come before."""

    def load_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_model", load_model)


def explain_command(*arguments) -> list[str]:
    return [sys.executable, "-m", "shapcam_widgets.cli", "explain", *map(str, arguments)]


def test_explain_end_to_end(chelsea_file, tmp_path):
    out, record_path = tmp_path / "overlay.png", tmp_path / "result.json"
    command = explain_command(
        chelsea_file, "--out", out, "--json", record_path, "--samples", 8, "--seed", 3
    )
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "cat" in finished.stdout
    assert "8/8" in finished.stderr and "ordering" in finished.stderr  # progress off a TTY
    assert "estimated time" not in finished.stderr
    record = json.loads(record_path.read_text())
    assert record["target_name"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert (record["model"], record["layer"]) == ("efficientnet_lite0", "blocks.6")
    assert (record["samples"], record["seed"]) == (8, 3)
    assert (record["value"], record["baseline"]) == ("prob", "zero")
    assert len(record["phi"]) == 7 and len(record["phi"][0]) == 7
    assert len(record["stderr"]) == 7 and len(record["stderr"][6]) == 7
    phi_sum = sum(map(sum, record["phi"]))
    assert phi_sum == pytest.approx(record["v_full"] - record["v_empty"], abs=1e-9)
    assert record["seconds"] > 0
    environment = record["environment"]  # what bit-identical results depend on
    assert isinstance(environment["torch_threads"], int) and environment["device"]
    assert all(environment["packages"][name] for name in ("torch", "torchvision", "timm"))
    assert "shapcam-widgets" in environment["packages"]
    with Image.open(out) as overlay:
        assert overlay.size[0] > 100


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--layer", "nope"], "unknown layer 'nope'. Spatial layers"),
        (["--layer", "classifier"], "not N x C x h x w"),
        (["--model", "vgg"], "unknown model 'vgg'"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    chelsea_file, tmp_path, capsys, arguments, message
):
    code = main(["explain", str(chelsea_file), "--out", str(tmp_path / "o.png"), *arguments])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--target=--5"], "must be 'top' or a class index 0..999; got '--5'"),
        (["--target", "-5"], "must be 'top' or a class index 0..999"),
        (["--target", "2.5"], "must be 'top' or a class index 0..999"),
        (["--target", "cat"], "must be 'top' or a class index"),
        (["--target", "1000"], "class 1000 is out of range; valid: 0..999"),
        (["--samples", "0"], "must be >= 1; got 0"),
        (["--samples", "-3"], "must be >= 1"),
        (["--samples", "many"], "must be an integer"),
        (["--seed", "-1"], "must be in 0..18446744073709551615"),
        (["--device", "tpu"], "valid: auto, cpu, cuda"),
        (["--device", "meta"], "unknown device 'meta'; valid: auto, cpu, cuda"),
        (["--layer", ""], "must be a layer name"),
        (["--value", "margin"], "invalid choice"),
    ],
)
def test_argument_errors_exit_2_before_any_work(capsys, no_model, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "x.png", "--out", "o.png", *arguments])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"error: argument {arguments[0].split('=')[0]}: " in error
    assert message in error and "Traceback" not in error


def test_unreadable_image_exits_2(tmp_path, capsys, no_model):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert main(["explain", str(broken), "--out", str(tmp_path / "o.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_too_large_image_exits_2(tmp_path, capsys, no_model):
    huge = huge_png(tmp_path / "huge.png")
    assert main(["explain", str(huge), "--out", str(tmp_path / "o.png")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("shapcam: error: image") and "too large" in error
    assert "178,956,970 pixels" in error and "Traceback" not in error


@pytest.mark.parametrize(
    "outputs, message",
    [
        (["--out", "missing/o.png"], "missing' does not exist"),
        (["--out", "o.txt"], ".txt is not an image format matplotlib writes; valid: avif, eps"),
        (["--out", "overlay"], "no extension is not an image format"),
        (["--out", "o.pgf"], "valid: "),
        (["--out", "folder.png"], "is a folder"),
        (["--out", "o.png", "--json", "missing/r.json"], "missing' does not exist"),
        (["--out", "o.png", "--json", "o.png"], "--json and --out are the same file"),
        (["--out", "small.png"], "--out 'small.png' is the input image"),
        (["--out", "sub/../small.png"], "is the input image"),
        (["--out", "o.png", "--json", "small.png"], "--json 'small.png' is the input image"),
    ],
)
def test_output_paths_are_checked_before_any_work(
    small_file, monkeypatch, capsys, no_model, outputs, message
):
    monkeypatch.chdir(small_file.parent)
    (small_file.parent / "sub").mkdir()
    (small_file.parent / "folder.png").mkdir()
    before = small_file.read_bytes()
    assert main(["explain", "small.png", *outputs]) == 2
    error = capsys.readouterr().err
    assert error.startswith("shapcam: error: ") and message in error
    assert "Traceback" not in error
    assert small_file.read_bytes() == before
    assert sorted(os.listdir(small_file.parent)) == ["folder.png", "small.png", "sub"]


def test_ctrl_c_says_interrupted_and_exits_130(small_file, tmp_path, capsys, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_model", interrupted)
    assert main(["explain", str(small_file), "--out", str(tmp_path / "o.png")]) == 130
    assert capsys.readouterr().err == "shapcam: interrupted\n"


def test_image_warnings_are_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_model", interrupted)
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 0] = 255  # red, all hidden
    Image.fromarray(pixels).save(tmp_path / "rgba.png")
    main(["explain", str(tmp_path / "rgba.png"), "--out", str(tmp_path / "o.png")])
    assert capsys.readouterr().err.splitlines() == [
        f"shapcam: warning: image '{tmp_path / 'rgba.png'}' has transparent pixels: "
        "composited on white",
        "shapcam: interrupted",
    ]


def test_a_long_run_says_its_estimated_time(capsys):
    ticks = iter([0.0, 0.5, 1.5, 3.0])
    report = ProgressReport(10**9, clock=lambda: next(ticks))
    report(100, 10**9)  # at 0.5 s: too early to estimate
    report(300, 10**9)  # at 1.5 s: 10^9 orderings take about 58 days
    report(500, 10**9)  # said once
    report.close()
    error = capsys.readouterr().err
    assert error.count("estimated time") == 1
    assert "shapcam: estimated time 1388 h 53 min for 1,000,000,000 orderings" in error
    assert "500/1000000000" in error  # the bar, on stderr


def test_a_short_run_gives_no_estimate(capsys):
    ticks = iter([0.0, 1.2])
    report = ProgressReport(4000, clock=lambda: next(ticks))
    report(2000, 4000)  # 2.4 s in all
    report.close()
    error = capsys.readouterr().err
    assert "estimated time" not in error and "2000/4000" in error


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_a_huge_run_estimates_then_stops_on_ctrl_c(small_file, tmp_path, inherited):
    """Also when the shell started it with SIGINT ignored (a background job does)."""
    command = explain_command(small_file, "--out", tmp_path / "o.png", "--samples", 10**9)
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
    )
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    error, deadline = b"", time.monotonic() + 120
    try:
        while b"estimated time" not in error and time.monotonic() < deadline:
            if selector.select(timeout=1):
                chunk = os.read(process.stderr.fileno(), 65536)
                if not chunk:
                    break
                error += chunk
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    error = (error + rest).decode()
    assert "shapcam: estimated time" in error and " h " in error
    assert process.returncode == 130 and "shapcam: interrupted" in error
    assert "Traceback" not in error
    assert not (tmp_path / "o.png").exists()


def test_overlay_of_a_large_image_is_drawn_at_most_2048_pixels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phi = np.arange(49, dtype=np.float64).reshape(7, 7)
    result = ShapCAMResult(
        phi=phi,
        stderr=np.zeros_like(phi),
        v_full=1.0,
        v_empty=0.0,
        target=0,
        layer="blocks.6",
        value="prob",
        baseline="zero",
        method="sampled",
        n_orderings=2,
        n_evaluations=100,
        seed=0,
        block_size=1,
        cells=(7, 7),
        input_size=(224, 224),
        path="fast",
        seconds=0.0,
    )
    big = Image.new("RGB", (6000, 4000), "white")
    for image, shape in [
        (big, (1365, 2048, 3)),
        (np.ones((5000, 3000), np.float32), (2048, 1229)),
        (np.zeros((100, 80, 3), np.uint8), (100, 80, 3)),  # small: drawn as it is
    ]:
        figure, ax = plt.subplots()
        shown = result.overlay(image, ax)
        assert ax.images[0].get_array().shape == shape
        assert shown.get_array().shape == shape[:2]
        plt.close(figure)
    assert (ax.images[0].get_array() == 0).all()
