"""benchmarks/model_speed.py: its smoke run (--quick: tiny models, one timed call) gives the JSON it documents,
side by side with a stand-in for the authors' code harness; speed_table.py makes the README's tables of it.

No timing is asserted: speed figures are the benchmark's output, not a test.
"""

import json
import sys

import pytest
from benchmark_helpers import load_benchmark

RESULT_KEYS = {"job", "section", "config", "size", "parameters", "name", "batch", "seconds", "seconds_min",
               "seconds_max", "cpu_seconds", "first_call_seconds", "warmups", "repetitions", "peak_rss_gb",
               "peak_rss_scope", "load_average_before", "load_average_after", "reference", "speedup", "rss_ratio"}

# A stand-in for the harness's bench.py: the same command line, every case 2 s and 0.5 GB.
STAND_IN = '''
import argparse, json
parser = argparse.ArgumentParser()
for option in ("--job", "--cases", "--reps", "--warmups", "--slow-reps", "--slow-warmups", "--epoch-reps",
               "--epoch-warmups", "--data-dir"):
    parser.add_argument(option, default="")
parser.add_argument("--gen-lengths", nargs="+", default=[])
args = parser.parse_args()
cases = [f"T{n}" for n in args.gen_lengths] if args.job.startswith("generate/") else args.cases.split(",")
print(json.dumps([{"name": f"{args.job}/{case}", "seconds": 2.0, "seconds_min": 1.9, "seconds_max": 2.1,
                   "cpu_seconds": 3.9, "warmups": int(args.warmups), "repetitions": int(args.reps),
                   "peak_rss_gb": 0.5, "torch": "stand-in"} for case in cases]))
'''


def load_script(name="model_speed"):
    return load_benchmark(name)


def test_quick_run_beside_a_stand_in_harness_and_its_readme_table(data_dir, tfds_dir, tmp_path, capsys):
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "bench.py").write_text(STAND_IN)
    output = tmp_path / "speed.json"
    report = load_script().main(["--quick", "--match", "ptb_af_af", "--data-dir", str(data_dir),
                                 "--tfds-dir", str(tfds_dir), "--output", str(output), "--against-reference",
                                 "--reference-dir", str(harness), "--reference-python", sys.executable])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == report == json.loads(output.read_text())
    assert "speedup" in captured.err  # the table
    assert {"benchmark", "command", "commit", "date", "machine", "quick", "total_seconds", "results",
            "reference"} <= set(report)
    assert report["machine"]["cpu"]
    results = report["results"]
    assert not [r for r in results if "error" in r], results
    assert {r["section"] for r in results} == {"train", "nll", "generate"}
    for r in results:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        assert r["seconds"] > 0 and r["peak_rss_gb"] > 0 and r["repetitions"] == 1
        assert r["reference"]["seconds"] == 2.0 and r["reference"]["repetitions"] == 1
        assert r["speedup"] == 2.0 / r["seconds"] and r["rss_ratio"] == r["peak_rss_gb"] / 0.5
    train, = [r for r in results if r["section"] == "train"]
    assert train["name"] == "train/ptb_af_af/equal100"
    assert train["batch"] == "15x20 equal" and train["elbo_samples"] == 2
    assert train["throughput"] == train["tokens"] / train["seconds"] == 300 / train["seconds"]
    assert train["unit"] == "chars/s"
    assert [r["length"] for r in results if r["section"] == "generate"] == [4]

    readme = tmp_path / "README.md"
    readme.write_text("# head\n<!-- speed-table:begin -->\nOLD TABLE\n<!-- speed-table:end -->\ntail\n")
    load_script("speed_table").main([str(output), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("# head\n<!-- speed-table:begin -->\nRun of ") and text.endswith("end -->\ntail\n")
    assert "OLD TABLE" not in text and report["machine"]["cpu"] in text
    assert "| ptb_af_af/T4 | 1x4 | 2 | " in text  # one timed call: no min–max
    assert "| goal | met |" in text and "Speed goal met in " in text


def test_the_table_states_each_rows_goal_and_by_how_much_it_misses():
    table = load_script("speed_table")
    fast = {"name": "train/x/equal57", "seconds": 0.2, "speedup": 2.5, "peak_rss_gb": 1.5,
            "reference": {"peak_rss_gb": 0.8}}
    slow = {**fast, "speedup": 0.8, "peak_rss_gb": 1.8}
    assert (table.speed_verdict(fast), table.memory_verdict(fast)) == ("met", "met")
    assert (table.speed_verdict(slow), table.memory_verdict(slow)) == ("no: 2.50× short", "no: 0.25 GB over")
    af_af = {**fast, "name": "generate/ptb_af_af/T256", "seconds": 1.5, "speedup": 60.0}
    assert table.goal(af_af) == "≥ 2×, ≤ 1 s" and table.speed_verdict(af_af) == "no: 0.5 s over 1 s"
    assert table.speed_verdict({**fast, "speedup": None}) == "–"


def test_a_missing_harness_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(["--against-reference", "--reference-dir", str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "--reference-dir" in message


def test_batches_are_picked_as_the_reference_did(ptb_bundle):
    module = load_script()
    Case = module.Case
    (x, lengths), = module.pick_batches(ptb_bundle, Case("equal", 100), 15, quick=False)
    assert x.shape == (15, 100) and set(lengths.numpy()) == {100}
    (x, lengths), = module.pick_batches(ptb_bundle, Case("bucketed", 102), 15, quick=False)
    assert x.shape[1] == max(lengths.numpy()) and len(set(lengths.numpy())) > 1
    assert round(float(lengths.numpy().mean())) == 102
    (x, lengths), = module.pick_batches(ptb_bundle, Case("longest"), 15, quick=False)
    assert max(lengths.numpy()) == 288 and min(lengths.numpy()) == sorted(ptb_bundle.lengths("train"))[-15]
    assert module.describe([(x, lengths)]).startswith("15x288 bucketed")


def test_every_case_of_the_authors_figures_has_one_name():
    module = load_script()
    jobs = module.jobs()
    names = [f"{job.name}/{case.name}" for job in jobs for case in job.cases]
    assert len(names) == len(set(names)) == 24  # the training and NLL rows of the authors' CPU figures
    assert {job.config for job in jobs if job.section == "generate"} == set(module.GENERATION_MODELS)
    args = module.parse_args(["--cases", "equal57,T256", "--gen-lengths", "64", "256"])
    jsb, = [job for job in jobs if job.name == "train/jsb_af_af"]
    assert [case.name for case in module.selected_cases(jsb, args)] == ["equal57"]
    generate, = [job for job in jobs if job.name == "generate/ptb_iaf_scf"]
    assert module.generation_lengths(generate, args) == [256]
    assert module.reference_argv(generate, args)[-2:] == ["--gen-lengths", "256"]
