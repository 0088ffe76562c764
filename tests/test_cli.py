"""The shapcam command line, end to end."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from shapcam_widgets.cli import main


@pytest.fixture(scope="module")
def chelsea_file(tmp_path_factory, chelsea):
    path = tmp_path_factory.mktemp("images") / "chelsea.png"
    Image.fromarray(chelsea).save(path)
    return path


def test_explain_end_to_end(chelsea_file, tmp_path):
    out, record_path = tmp_path / "overlay.png", tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "shapcam_widgets.cli",
        "explain",
        str(chelsea_file),
        "--out",
        str(out),
        "--json",
        str(record_path),
        "--samples",
        "8",
        "--seed",
        "3",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "cat" in finished.stdout
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
    with Image.open(out) as overlay:
        assert overlay.size[0] > 100


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--layer", "nope"], "unknown layer 'nope'. Spatial layers"),
        (["--layer", "classifier"], "not N x C x h x w"),
        (["--target", "1000"], "class 1000 is out of range"),
        (["--target", "cat"], "--target must be 'top' or a class index"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--device", "tpu"], "valid: auto, cpu, cuda"),
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


def test_unreadable_image_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert main(["explain", str(broken), "--out", str(tmp_path / "o.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "x.png", "--value", "margin"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
