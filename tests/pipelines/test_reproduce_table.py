"""pipelines.reproduce_table: rows and CPU sizes, commands, units, and a tiny Table 3 end to end (train,
evaluate, a "missing data" row, reuse of the finished run)."""

import json
import math
import os

import pytest

from pipelines import reproduce_table as rt
from tflatent import config as config_lib

TINY = ["model.embedding_size=8", "model.hidden_size=8", "train.epochs=1", "train.steps_per_epoch=2",
        "data.train_limit=8", "data.eval_limit=6", "train.verbose=0"]


def without_run_name(config):
    d = config.to_dict()
    d["train"].pop("run_name")
    return d


def test_cpu_overrides_turn_a_paper_config_into_its_small_config():
    overrides = rt.cpu_overrides("ptb")
    derived = config_lib.load(os.path.join(rt.CONFIG_DIR, "ptb_af_af.yaml"), overrides)
    small = config_lib.load(os.path.join(rt.CONFIG_DIR, "ptb_af_af_small.yaml"))
    assert without_run_name(derived) == without_run_name(small)


def test_a_row_without_a_small_config_keeps_its_ablation_and_gets_the_small_sizes():
    config_path, overrides = rt.resolve_config("ptb", "ablation_affine_no_hidden_flow", "cpu")
    assert config_path.endswith("ptb_ablation_affine_no_hidden_flow.yaml") and overrides
    config = config_lib.load(config_path, overrides)
    small = config_lib.load(os.path.join(rt.CONFIG_DIR, "ptb_af_af_small.yaml"))
    assert (config.model.transform, config.model.hidden_flow) == ("affine", "none")
    assert (config.model.hidden_size, config.model.z_size, config.train.epochs) == \
        (small.model.hidden_size, small.model.z_size, small.train.epochs)
    assert rt.resolve_config("jsb_chorales", "af_scf", "cpu") == (
        os.path.join(rt.CONFIG_DIR, "jsb_chorales_af_scf_small.yaml"), [])
    assert rt.resolve_config("ptb", "af_only", "paper") == (os.path.join(rt.CONFIG_DIR, "ptb_af_only.yaml"), [])


def test_every_row_of_every_table_has_a_config_and_the_papers_figure():
    for table, datasets in rt.TABLE_DATASETS.items():
        for scale in rt.SCALES:
            rows = rt.make_rows(table, scale, datasets, rt.TABLE_MODELS[table], "runs", [])
            assert len(rows) == len(datasets) * len(rt.TABLE_MODELS[table])
            for row in rows:
                config_lib.load(row.config, row.overrides)
                assert row.paper["nll"] > 0
    assert rt.paper_figures(3, "jsb_chorales", "af_af")["nll"] == 6.53
    assert rt.paper_figures(1, "ptb", "iaf_scf") == {"nll": 1.63, "recon": 0.21, "kl": 1.55}


def test_figures_are_bits_for_text_and_nats_per_frame_for_music():
    record = {"nll": 1.0, "bpc": 1.0 / math.log(2), "recon": 0.5, "kl": 0.25}
    assert rt.figures(1, record) == pytest.approx({"nll": 1.0 / math.log(2), "recon": 0.5 / math.log(2),
                                                   "kl": 0.25 / math.log(2)})
    assert rt.figures(3, {"nll": 7.0, "nats_per_frame": 7.0})["nll"] == 7.0


def test_dry_run_prints_the_train_and_evaluate_commands(capsys):
    assert rt.main(["--table", "2", "--scale", "cpu", "--dry-run", "--out", "somewhere", "--samples", "5",
                    "--set", "train.epochs=2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    assert "ptb_af_af_small.yaml" in lines[0] and "somewhere/runs/ptb_af_af_small" in lines[0]
    assert "--set model.hidden_size=128" in lines[2] and lines[2].endswith(
        "--set train.epochs=2 --run-dir somewhere/runs/ptb_ablation_affine")
    assert lines[1].endswith("--run somewhere/runs/ptb_af_af_small --split test --samples 5")


def test_bad_arguments_are_clear_errors(capsys):
    with pytest.raises(SystemExit):
        rt.main(["--table", "3", "--datasets", "ptb"])
    assert "Table 3 has jsb_chorales" in capsys.readouterr().err
    assert rt.main(["--table", "1", "--dry-run", "--set", "model.hiden_size=8"]) == 2
    assert "did you mean 'hidden_size'" in capsys.readouterr().err


def test_table3_end_to_end_with_a_missing_data_set_and_reuse(tmp_path, data_dir, tfds_dir, monkeypatch):
    out = tmp_path / "table3"
    argv = ["--table", "3", "--datasets", "jsb_chorales", "piano_midi", "--models", "lstm", "--out", str(out),
            "--set", f"data.data_dir={data_dir}", "--set", f"data.tfds_dir={tfds_dir}"]
    for override in TINY:
        argv += ["--set", override]
    assert rt.main(argv) == 0
    result = json.loads((out / "table3.json").read_text())
    jsb, piano = result["rows"]
    assert (jsb["dataset"], jsb["status"], piano["status"]) == ("jsb_chorales", "done", "missing data")
    assert "piano_midi" in piano["message"]
    assert 0 < jsb["ours"]["nll"] < 100 and jsb["paper"]["nll"] == 8.17
    evaluation = json.loads((out / "runs" / "jsb_chorales_lstm_small" / "evaluation_test.json").read_text())
    assert jsb["ours"]["nll"] == evaluation["nats_per_frame"]
    table = (out / "table3.md").read_text()
    assert "| LSTM | " in table and "8.17" in table and "missing data" in table
    assert jsb["epochs"] == 1 and jsb["config_values"]["model"]["hidden_size"] == 8
    assert [p["epoch"] for p in jsb["curve"]] == [0] and jsb["curve"][0]["val_nll"] > 0
    assert jsb["curve"][0]["seconds"] > 0 and (out / "curves_jsb_chorales.png").stat().st_size > 0

    def no_more_commands(command):
        raise AssertionError(f"a finished run was run again: {command}")

    monkeypatch.setattr(rt, "run_command", no_more_commands)
    assert rt.main(argv) == 0
    assert json.loads((out / "table3.json").read_text())["rows"][0]["ours"] == jsb["ours"]


def test_training_time_counts_sessions_that_were_killed_before_writing_a_summary():
    curve = [{"epoch": 0, "seconds": 50.0}, {"epoch": 1, "seconds": 400.0}]  # two sessions' epochs
    assert rt.training_seconds({"total_seconds": 120.0}, curve) == 400.0  # the last session only
    assert rt.training_seconds({"total_seconds": 430.0}, curve) == 430.0  # every session, start-up included
    assert rt.training_seconds({}, [{"epoch": 0, "seconds": None}]) is None
