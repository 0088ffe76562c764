"""Fast checks of the benchmark harness (the full run is `python -m benchmarks`)."""

import json

import numpy as np
import pytest
import torch
import torchvision

from benchmarks import harness, scenarios
from benchmarks import run as bench
from benchmarks.harness import Key
from shapcam_widgets.cam import ShapCAM


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_captum_plays_the_same_game(resnet):
    """With the logit value the game is additive: every ordering gives phi exactly, so
    captum's estimate must equal ours if the wrapper, baseline and target are the same."""
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    for baseline in ("zero", "mean"):
        explainer = ShapCAM(resnet, "layer4", device="cpu")
        options = {"value": "logit", "baseline": baseline}
        ours = explainer.attribute(image, 3, n_samples=2, **options)
        captum = scenarios.captum_runner(explainer, image, 3, n_samples=2, ppe=16, **options)(0)
        np.testing.assert_allclose(captum, ours.phi.ravel(), rtol=0, atol=1e-5)


def test_exact_toy_games_and_markdown(tmp_path):
    settings = scenarios.Settings(exact_players=(6, 8), repeats=2)
    report = harness.Report(torch.device("cpu"))
    scenarios.exact_games(report, settings, torch.device("cpu"))
    assert [e["players"] for e in report.entries] == [6, 8]
    entry = report.entries[-1]
    assert entry["samples"] == 256 and entry["seconds"] > 0 and entry["peak_mib"] >= 0
    required = {"name", "layer", "players", "samples", "seconds", "peer", "ratio_vs_peer"}
    assert required | {"mse", "device"} <= set(entry)
    meta = {
        "date": "today",
        "total_seconds": 1.0,
        "machine": "test",
        "device": "cpu",
        "torch": torch.__version__,
        "repeats": 2,
        "reference_orderings": 16,
        "last_stage": {
            "target": 1,
            "reference_max_stderr": 0.0,
            "captum_ppe": 1,
            "captum_ppe_seconds_m2": {1: 0.1},
        },
    }
    rows = [{"target": "toy", "measured": "1", "met": True}]
    text = bench.markdown(meta, report.entries, rows)
    assert "| exact enumeration n=8 | 256 |" in text and "| toy | 1 | yes |" in text


def test_ratio_is_peer_over_entry():
    report = harness.Report(torch.device("cpu"))
    slow = harness.Timing(2.0, [2.0], [], 0)
    fast = harness.Timing(0.5, [0.5], [], 0)
    report.add(Key("slow", "L"), "slow", 4, 8, slow)
    entry = report.add(Key("fast", "L"), "fast", 4, 8, fast, peer=Key("slow", "L"))
    assert entry["ratio_vs_peer"] == 4.0


def test_entries_are_found_by_key_and_name_their_peer():
    """The display name is for people: the same name at two keys stays two entries, and
    the written peer is the peer entry's name."""
    report = harness.Report(torch.device("cpu"))
    timing = harness.Timing(1.0, [1.0], [], 0)
    first = report.add(Key("shapcam", "L", 8, "fast"), "ours", 4, 8, timing)
    second = report.add(Key("shapcam", "L", 8, "general"), "ours", 4, 8, timing)
    assert report.find(Key("shapcam", "L", 8, "fast")) is first
    assert report.find(Key("shapcam", "L", 8, "general")) is second
    assert report.find(Key("shapcam", "L", 16, "fast")) is None
    other = report.add(
        Key("GradCAM", "L"), "GradCAM", 4, None, timing, peer=Key("shapcam", "L", 8, "general")
    )
    assert other["peer"] == "ours" and "key" not in other
    with pytest.raises(ValueError, match="two entries"):
        report.add(Key("GradCAM", "L"), "GradCAM again", 4, None, timing)


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """The GPU check's smoke test: every scenario, the cost model m (n - 1) + 2."""
    from benchmarks import gpu_check
    from shapcam_widgets.evaluation.data import resolve_root

    if not (resolve_root() / "LOC_val_solution.csv").exists():
        pytest.skip("the ImageNet subset is not here")
    out = tmp_path / "gpu.json"
    report = gpu_check.main(["--smoke-test", "--images", "2", "--out", str(out)])
    assert [e["name"] for e in report["scenarios"]] == [s[0] for s in gpu_check.SCENARIOS]
    players = [e["n_players"] for e in report["scenarios"]]
    assert players == [49, 49, 196, 49, 49]
    for entry in report["scenarios"]:
        assert entry["evaluations_per_image"] == 2 + 2 * (entry["n_players"] - 1)
        assert entry["evaluations_per_second"] > 0 and entry["ratio_to_raw_forward"] > 0
    assert [e["path"] for e in report["scenarios"]] == ["general"] * 3 + ["fast", "local"]
    assert all(e["cpu_seconds_per_image"] > 0 for e in report["scenarios"])
    assert report["host"]["cores"] >= 1 and report["host"]["cpu"]
    assert len(report["images"]) == 2 and out.exists()


def test_estimator_study_shards_merge_and_resume(tmp_path, monkeypatch):
    """Two shards of a tiny study merge into one report; a resumed run adds a seed without
    running again what is there (each image's reference is reused, not recomputed), and
    runs again a run that failed."""
    from benchmarks import estimators
    from shapcam_widgets.evaluation.data import resolve_root

    if not (resolve_root() / "LOC_val_solution.csv").exists():
        pytest.skip("the ImageNet subset is not here")
    tiny = ["--images", "2", "--budgets", "100", "--layers", "blocks.6"]
    tiny += ["--reference-budget", "400", "--estimators", "ours plain"]
    shards = [tmp_path / f"shard-{k}.json" for k in range(2)]
    shard_seconds = []
    for k, shard in enumerate(shards):
        run = estimators.main([*tiny, "--seeds", "0", "--shard", f"{k}/2", "--out", str(shard)])
        shard_seconds.append(run["seconds"])
    # shard 0's command repeated, as older code wrote it: the merge says it once
    first_shard = json.loads(shards[0].read_text())
    shard_command = first_shard["settings"]["command"]
    first_shard["settings"]["command"] = f"{shard_command}; then {shard_command}"
    shards[0].write_text(json.dumps(first_shard))
    merged = tmp_path / "merged.json"
    report = estimators.main(["--merge", *map(str, shards), "--out", str(merged)])
    assert report["settings"]["command"] == shard_command
    (game,) = report["games"]
    assert len(game["images"]) == 2 and len(game["runs"]) == 4  # 2 images x 2 estimators
    # seconds mean the same in a run's report and a merged one: its runs' and references'
    assert min(shard_seconds) > 0 and report["seconds"] == pytest.approx(sum(shard_seconds))
    assert report["scope"]["images_done"] == {"blocks.6:1": {"100": 2}}
    assert report["settings"]["shard"] == "0/2, 1/2"
    merged_from = report["settings"]["merged_from"]
    assert [(m["file"], m["shard"]) for m in merged_from] == [
        ("shard-0.json", "0/2"),
        ("shard-1.json", "1/2"),
    ]
    # each shard's own command and machine, and the report's machine names them all
    assert ["--shard 1/2" in m["command"] for m in merged_from] == [False, True]
    assert report["machine"] == " | ".join(dict.fromkeys(m["machine"] for m in merged_from))

    def no_reference(*args):
        raise AssertionError("a resumed image's reference was computed again")

    monkeypatch.setattr(estimators, "_reference", no_reference)
    report = estimators.main([*tiny, "--seeds", "0", "1", "--resume", "--out", str(merged)])
    (game,) = report["games"]
    assert len(game["runs"]) == 8 and len(game["references"]) == 2
    assert report["settings"]["seeds"] == [0, 1]
    assert report["settings"]["shard"] == "0/1"  # this run's, not the merged report's
    assert report["seconds"] == pytest.approx(estimators.held_seconds(report["games"]))
    # a failed run is run again when resumed
    failed = next(r for r in game["runs"] if r["estimator"] == "ours plain")
    failed.pop("mse")
    failed["error"] = "ImportError: a package is missing"
    merged.write_text(json.dumps(report))
    report = estimators.main([*tiny, "--seeds", "0", "1", "--resume", "--out", str(merged)])
    (game,) = report["games"]
    assert len(game["runs"]) == 8 and all("error" not in r for r in game["runs"])
    assert len({(r["image"], r["seed"], r["estimator"]) for r in game["runs"]}) == 8
    # the command says how the report was made: the shard's run, then the resume (once)
    command = report["settings"]["command"]
    first, _, then = command.partition("; then ")
    assert "--shard 0/2" in first and then.endswith(f"--resume --out {merged}")
    assert "; then " not in then  # the same resume twice is said once
    # a command already said (a report written by older code) is not said again
    report["settings"]["command"] = f"{first}; then {first}; then {then}"
    merged.write_text(json.dumps(report))
    report = estimators.main([*tiny, "--seeds", "0", "1", "--resume", "--out", str(merged)])
    assert report["settings"]["command"] == f"{first}; then {then}"


def test_estimator_study_keeps_what_a_stopped_run_finished(tmp_path, monkeypatch):
    """A run stopped within an image (a deadline, say) has written the image's reference
    and the runs it finished; resumed, it runs only the rest."""
    from benchmarks import estimators
    from shapcam_widgets.evaluation.data import resolve_root

    if not (resolve_root() / "LOC_val_solution.csv").exists():
        pytest.skip("the ImageNet subset is not here")
    out = tmp_path / "study.json"
    tiny = ["--images", "1", "--budgets", "100", "--seeds", "0", "--layers", "blocks.6"]
    tiny += ["--reference-budget", "400", "--estimators", "ours plain", "--out", str(out)]

    def stopped(*args):
        raise KeyboardInterrupt  # not a recorded failure: the process ends here

    plain = estimators.ESTIMATORS["ours plain"]
    monkeypatch.setitem(estimators.ESTIMATORS, "ours plain", stopped)
    with pytest.raises(KeyboardInterrupt):
        estimators.main(tiny)
    report = json.loads(out.read_text())
    (game,) = report["games"]
    assert len(game["references"]) == 1 and game["images"] == []
    assert [r["estimator"] for r in game["runs"]] == [estimators.OURS]
    assert report["scope"]["images_done"] == {"blocks.6:1": {"100": 0}}

    def no_reference(*args):
        raise AssertionError("the stopped image's reference was computed again")

    monkeypatch.setitem(estimators.ESTIMATORS, "ours plain", plain)
    monkeypatch.setattr(estimators, "_reference", no_reference)
    report = estimators.main([*tiny, "--resume"])
    (game,) = report["games"]
    assert sorted(r["estimator"] for r in game["runs"]) == ["ours antithetic", "ours plain"]
    assert report["scope"]["images_done"] == {"blocks.6:1": {"100": 1}}
