"""pipelines.generation_speed: the crossover and confidence interval, the measuring loop on a stand-in
model, and a tiny run end to end (JSON and PNG)."""

import json

import numpy as np
import pytest
import scipy.stats

from pipelines import generation_speed as gs

TINY = ["model.embedding_size=8", "model.hidden_size=8", "model.z_size=4", "model.prior_rnn_units=8",
        "model.hidden_flow_units=8", "model.hidden_flow_layers=1", "model.attention_units=8", "model.attention_heads=2",
        "model.attention_feed_forward_units=8", "model.attention_layers=1"]


def test_crossover_is_where_the_candidate_becomes_faster_for_good():
    lengths = [10, 20, 40, 80]
    found = gs.crossover(lengths, [1.0, 1.0, 1.0, 1.0], [2.0, 1.5, 0.5, 0.25])
    assert (found["last_slower_length"], found["first_faster_length"]) == (20, 40)
    # log ratio log 1.5 at 20 and log 0.5 at 40: zero at 20 + 20 · log 1.5 / (log 1.5 − log 0.5)
    assert found["interpolated_length"] == pytest.approx(20 + 20 * np.log(1.5) / (np.log(1.5) - np.log(0.5)))
    assert gs.crossover(lengths, [1.0] * 4, [0.5, 2.0, 0.5, 2.0])["first_faster_length"] is None
    always = gs.crossover(lengths, [1.0] * 4, [0.5] * 4)
    assert (always["first_faster_length"], always["last_slower_length"]) == (10, None)
    assert "never overtakes" in gs.crossover_text("text", 1, gs.crossover(lengths, [1.0] * 4, [2.0] * 4), 80)


def test_confidence_interval_is_the_student_t_half_width():
    times = [1.0, 2.0, 3.0, 6.0]
    expected = scipy.stats.t.ppf(0.975, 3) * np.std(times, ddof=1) / 2.0
    assert gs.confidence_interval(times) == pytest.approx(expected)
    assert gs.confidence_interval([0.5]) == 0.0


class StandInModel:
    """Records its generate calls and returns zeros at once."""

    def __init__(self):
        self.calls = []

    def generate(self, lengths, seed):
        self.calls.append((len(lengths), int(lengths[0]), seed))
        return np.zeros([len(lengths), int(lengths[0])], np.int32), lengths


def test_measure_times_every_point_after_a_warm_up_and_skips_past_the_limit():
    model = StandInModel()
    records, skipped = gs.measure(model, [2, 4, 8], [1, 3], reps=2, max_call_seconds=10.0)
    assert [(r["batch"], r["length"]) for r in records] == [(1, 2), (1, 4), (1, 8), (3, 2), (3, 4), (3, 8)]
    assert model.calls[:3] == [(1, 2, 0), (1, 2, 1), (1, 2, 2)]  # the warm-up, then seeds 1..reps
    assert all(len(r["times"]) == 2 and r["mean_seconds"] == pytest.approx(np.mean(r["times"])) for r in records)
    assert skipped == []
    model = StandInModel()
    records, skipped = gs.measure(model, [2, 4, 8], [1, 3], reps=2, max_call_seconds=-1.0)
    assert [(r["batch"], r["length"]) for r in records] == [(1, 2), (3, 2)]
    assert skipped == [{"batch": 1, "lengths": [4, 8]}, {"batch": 3, "lengths": [4, 8]}]


def test_compare_with_baseline_per_task_and_batch():
    results = [{"task": "music", "batch": 1, "model": m, "length": t, "mean_seconds": s}
               for m, times in (("lstm", [1.0, 2.0]), ("iaf_scf", [2.0, 1.0]), ("af_af", [9.0, 9.0]))
               for t, s in zip((5, 50), times)]
    crossovers, notes = gs.compare_with_baseline(results)
    assert crossovers["music"]["1"]["first_faster_length"] == 50
    assert crossovers["music"]["1"]["speedup_at_longest"] == 2.0
    assert notes == ["music, batch 1: IAF / SCF overtakes the LSTM baseline at T ≈ 28 "
                     "(slower at T = 5, faster from T = 50 on)"]


def test_tiny_run_writes_json_and_plot(tmp_path, data_dir, tfds_dir, capsys):
    argv = ["--tasks", "music", "--models", "lstm", "iaf_scf", "iaf_scf_attention", "--lengths", "2", "5",
            "--batches", "2", "--reps", "2", "--out", str(tmp_path), "--set", f"data.data_dir={data_dir}",
            "--set", f"data.tfds_dir={tfds_dir}"]
    for override in TINY:
        argv += ["--set", override]
    summary = gs.main(argv)
    written = json.loads((tmp_path / "generation_speed.json").read_text())
    assert written["results"] == summary["results"] and len(summary["results"]) == 6
    assert {(r["model"], r["length"]) for r in summary["results"]} == {
        ("lstm", 2), ("lstm", 5), ("iaf_scf", 2), ("iaf_scf", 5), ("iaf_scf_attention", 2), ("iaf_scf_attention", 5)}
    assert summary["sizes"]["music"]["iaf_scf_attention"]["parameters"] != summary["sizes"]["music"]["iaf_scf"][
        "parameters"]
    assert all(r["mean_seconds"] > 0 and r["batch"] == 2 for r in summary["results"])
    assert summary["device"]["kind"] in ("CPU", "GPU") and summary["untrained_weights"]
    assert "2" in summary["crossover_iaf_scf_vs_lstm"]["music"]
    assert (tmp_path / "generation_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "music, batch 2: IAF / SCF" in capsys.readouterr().out
