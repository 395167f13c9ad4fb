"""benchmarks/gpu.py: its CPU smoke run (--quick) gives the JSON it documents. No timing is asserted."""

import itertools
import json

import pytest
from benchmark_helpers import load_benchmark


def load_script():
    return load_benchmark("gpu", "gpu_benchmark")


@pytest.mark.slow
def test_quick_run_covers_every_pair_of_model_implementation_and_precision(data_dir, tfds_dir, tmp_path, capsys):
    script = load_script()
    output = tmp_path / "gpu.json"
    report = script.main(["--quick", "--data-dir", str(data_dir), "--tfds-dir", str(tfds_dir),
                          "--output", str(output)])
    assert json.loads(capsys.readouterr().out) == report == json.loads(output.read_text())
    results = report["results"]
    grid = script.runs(quick=False)
    assert len(grid) == len(script.CONFIGS) * len(script.LSTM_IMPLS) * 2
    half = script.runs(quick=True)
    assert len(results) == len(half) == len(grid) // 2 and set(half) < set(grid)
    for axes in itertools.combinations(range(3), 2):  # any two of model, implementation, precision: crossed
        assert {tuple(run[a] for a in axes) for run in half} == {tuple(run[a] for a in axes) for run in grid}
    assert [(r["model"], r["lstm_impl"]) for r in results] == [run[:2] for run in half]
    measured = [r for r in results if "skipped" not in r]
    assert {(r["model"], r["precision"]) for r in measured} == {
        (name, precision) for name in script.CONFIGS for precision in ("float32", "mixed_bfloat16")}
    for r in measured:
        assert r["train"]["seconds"] > 0 and r["nll"]["seconds"] > 0 and r["nll"]["samples"] == 4
    if not report["lstm_impl_in_config"]:  # a build without the cuDNN switch says so
        assert all(r["lstm_impl"] == "cudnn" for r in results if "skipped" in r)
