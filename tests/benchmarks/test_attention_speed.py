"""benchmarks/attention_speed.py: its smoke run (--quick: tiny models, one call of each) gives the JSON it
documents, baseline and candidate measured side by side. No timing is asserted."""

import json
import os

from benchmark_helpers import BENCHMARKS, load_benchmark

REPO_CONFIGS = BENCHMARKS.parent / "configs"


def load_script():
    return load_benchmark("attention_speed")


def test_quick_run_of_the_jsb_training_pair(data_dir, tfds_dir, tmp_path, capsys):
    output = tmp_path / "attention.json"
    report = load_script().main(["--quick", "--match", "train_jsb_af_af", "--data-dir", str(data_dir),
                                 "--tfds-dir", str(tfds_dir), "--output", str(output)])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == report == json.loads(output.read_text())
    assert "speedup" in captured.err  # the table
    assert report["benchmark"] == "attention_speed" and report["machine"]["cpu"] and report["quick"]
    result, = report["results"]
    assert "error" not in result, result
    assert result["name"] == "train_jsb_af_af/equal57" and result["batch"].startswith("5x")
    baseline, candidate = result["baseline"], result["candidate"]
    assert baseline["networks"] == {"inference": "lstm", "emission": "lstm", "prior": "lstm"}
    assert candidate["networks"] == {"inference": "transformer", "emission": "transformer", "prior": "transformer"}
    # Each side on the batch as its config pads it: the attention configs to a multiple of 16 steps.
    steps = int(result["batch"].split("x")[1].split()[0])  # "5x6 equal"
    assert baseline["padded_steps"] == steps and candidate["padded_steps"] % 16 == 0
    assert candidate["padded_steps"] >= steps
    for side in (baseline, candidate):
        assert side["seconds"] > 0 and side["cpu_seconds"] >= 0 and side["repetitions"] == 1
    assert result["speedup"] == baseline["seconds"] / candidate["seconds"]
    assert result["goal_speedup"] == 2.0 and result["goal_met"] == (result["speedup"] >= 2.0)
    assert result["peak_rss_gb"] > 0 and len(result["load_average_before"]) == 3


def test_every_pair_has_one_name_and_a_goal_case_or_none():
    module = load_script()
    pairs = module.pairs()
    assert len({pair.name for pair in pairs}) == len(pairs) == 8
    for pair in pairs:
        cases = [f"T{n}" for n in pair.lengths] if pair.section == "generate" else [pair.case.name]
        assert pair.goal_case in cases if pair.goal is not None else pair.goal_case is None
        for side in (pair.baseline, pair.candidate):
            assert (REPO_CONFIGS / f"{side.config}.yaml").is_file()



def test_a_training_pair_times_each_side_in_its_own_processes_with_its_own_threads(data_dir, tfds_dir):
    """Training pairs run each side in processes of its own, so that each trains with the threads per op
    tflatent.train chooses for its config: the LSTM model one per op per two cores, attention everywhere
    TensorFlow's default (0). One process holding both would give both the first side's setting."""
    module = load_script()
    argv = ["--quick", "--reps", "2", "--warmups", "1", "--rounds", "1", "--data-dir", str(data_dir),
            "--tfds-dir", str(tfds_dir)]
    pair = next(p for p in module.pairs() if p.name == "train_jsb_af_af")  # the cheaper training pair
    result, = module.run_pair_by_side(pair, argv, module.parse_args(argv))
    baseline, candidate = result["baseline"], result["candidate"]
    assert baseline["intra_op_threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert candidate["intra_op_threads"] == 0
    for side in (baseline, candidate):
        assert side["processes"] == 1 and side["repetitions"] == 2 and side["seconds"] > 0
        assert side["seconds_min"] <= side["seconds"] <= side["seconds_max"] and side["peak_rss_gb"] > 0
    assert candidate["padded_steps"] % 16 == 0 and result["peak_rss_scope"] == "the larger side's process"
    assert result["speedup"] == baseline["seconds"] / candidate["seconds"] and result["goal_speedup"] == 2.0
