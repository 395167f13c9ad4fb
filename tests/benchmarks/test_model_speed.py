"""benchmarks/model_speed.py: its smoke run (--quick: tiny models, one timed call) gives the JSON it documents.

No timing is asserted: speed figures are the benchmark's output, not a test.
"""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_speed.py"
RESULT_KEYS = {"job", "section", "config", "size", "parameters", "name", "batch", "seconds", "seconds_min",
               "seconds_max", "cpu_seconds", "first_call_seconds", "warmups", "repetitions", "peak_rss_gb",
               "peak_rss_scope", "load_average_before", "load_average_after", "reference", "time_ratio",
               "speedup", "rss_ratio"}


def load_script():
    spec = importlib.util.spec_from_file_location("model_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_section(data_dir, tfds_dir, tmp_path, capsys):
    output = tmp_path / "speed.json"
    report = load_script().main(["--quick", "--match", "ptb_af_af", "--data-dir", str(data_dir),
                                 "--tfds-dir", str(tfds_dir), "--output", str(output)])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == report == json.loads(output.read_text())
    assert "configuration" in captured.err  # the table
    assert {"benchmark", "command", "machine", "quick", "total_seconds", "results"} <= set(report)
    results = report["results"]
    assert not [r for r in results if "error" in r], results
    assert {r["section"] for r in results} == {"train", "nll", "generate"}
    for r in results:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        assert r["seconds"] > 0 and r["peak_rss_gb"] > 0 and r["repetitions"] == 1
        assert set(r["reference"]) == {"seconds", "throughput", "peak_rss_gb"}
    train, = [r for r in results if r["section"] == "train"]
    assert train["batch"] == "15x20 equal" and train["elbo_samples"] == 2
    assert train["throughput"] == train["tokens"] / train["seconds"] == 300 / train["seconds"]
    assert train["unit"] == "chars/s"
    assert [r["length"] for r in results if r["section"] == "generate"] == [4]


def test_batches_are_picked_as_the_reference_did(ptb_bundle):
    module = load_script()
    Case = module.Case
    (x, lengths), = module.pick_batches(ptb_bundle, Case("equal", 100, 1.0), 15, quick=False)
    assert x.shape == (15, 100) and set(lengths.numpy()) == {100}
    (x, lengths), = module.pick_batches(ptb_bundle, Case("bucketed", 102, 1.0), 15, quick=False)
    assert x.shape[1] == max(lengths.numpy()) and len(set(lengths.numpy())) > 1
    assert round(float(lengths.numpy().mean())) == 102
    (x, lengths), = module.pick_batches(ptb_bundle, Case("longest", None, 1.0), 15, quick=False)
    assert max(lengths.numpy()) == 288 and min(lengths.numpy()) == sorted(ptb_bundle.lengths("train"))[-15]
    assert module.describe([(x, lengths)]).startswith("15x288 bucketed")


def test_every_reference_figure_has_a_job():
    module = load_script()
    jobs = module.jobs()
    cases = [case for job in jobs for case in job.cases]
    assert len(cases) == 24  # the rows of textflow-cpu-figures.md's training and NLL tables
    assert {job.config for job in jobs if job.section == "generate"} == set(module.GENERATION_REFERENCE)
    assert all(case.reference_seconds > 0 for case in cases)
