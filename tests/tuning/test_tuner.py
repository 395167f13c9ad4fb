"""``python -m tflatent.tune`` on a tiny model and a few real JSB chorales: results, resuming, errors."""

import csv
import json
import os

import keras
import pytest

from tflatent import config as config_lib
from tflatent.training import fit as fit_lib
from tflatent.training.run_dir import diff
from tflatent.tuning import tuner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The real JSB small config, shrunk: 10 training and 8 validation chorales, one-layer LSTMs of 8-16
# units, z of 4, one hidden-flow layer, one epoch of one step, the IS NLL with 2 samples.
TINY_CONFIG = """\
extends: {base}
data: {{data_dir: {data_dir}, tfds_dir: {tfds_dir}, train_limit: 10, eval_limit: 8}}
model: {{embedding_size: 16, hidden_size: 12, z_size: 4, prior_rnn_units: 12, q_rnn_layers: 1, gen_rnn_layers: 1,
         prior_rnn_layers: 1, hidden_flow_layers: 1, hidden_flow_units: 8, position_encoding: sinusoidal,
         position_encoding_size: 8}}
train: {{epochs: 1, steps_per_epoch: 1, nll_every: 1, nll_samples: 2, nll_chunk: 2, initial_kl_zero: 0,
         kl_rampup_time: 1, verbose: 0}}
"""
TINY_SPACE = """\
tuner: random
max_trials: 3
model.hidden_size: {int: {min: 8, max: 16, step: 4}}
model.transform: {choice: [nlsq, affine]}
train.learning_rate: {float: {min: 1.0e-3, max: 1.0e-2, sampling: log}}
model.embedding_size: {fixed: 8}
"""


@pytest.fixture
def tiny(tmp_path, data_dir, tfds_dir):
    """(config path, space path, search directory) of the tiny search."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(base=os.path.join(REPO, "configs", "jsb_chorales_af_af_small.yaml"),
                                         data_dir=data_dir, tfds_dir=tfds_dir))
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    return str(config), str(space), str(tmp_path / "search")


def args(tiny, *extra):
    config, space, directory = tiny
    return ["--config", config, "--space", space, "--dir", directory, *extra]


def trials_json(directory):
    with open(os.path.join(directory, "trials.json")) as f:
        return json.load(f)


def history(run):
    with open(os.path.join(run, "logs", "history.csv")) as f:
        return list(csv.DictReader(f))


def test_a_random_search_writes_every_trial_and_the_best_config(tiny, capsys):
    config_path, space_path, directory = tiny
    assert tuner.main(args(tiny)) == 0
    out = capsys.readouterr().out
    assert "objective val_nll (importance-sampled validation NLL" in out

    record = trials_json(directory)
    trials = record["trials"]
    assert [t["trial_id"] for t in trials] == ["0", "1", "2"]
    assert all(t["status"] == "COMPLETED" for t in trials)
    fields = ["model.hidden_size", "model.transform", "train.learning_rate"]
    assert len({tuple(t["values"][f] for f in fields) for t in trials}) == 3
    for t in trials:  # each trial trained the config it reports, and its score is its best epoch's val_nll
        (run,) = t["runs"]
        trained = config_lib.load(os.path.join(run, "config.yaml"))
        assert [trained.model.hidden_size, trained.model.transform, trained.train.learning_rate] == [
            t["values"][f] for f in fields]
        assert trained.model.embedding_size == 8  # the fixed value
        assert t["val_nll"] == min(float(row["val_nll"]) for row in history(run))

    best = min(trials, key=lambda t: t["val_nll"])
    assert record["best_trial"] == best["trial_id"]
    assert best["val_nll"] == min(t["val_nll"] for t in trials)
    base = config_lib.load(config_path)
    tuned = config_lib.load(os.path.join(directory, "best_config.yaml"))
    changed = {change.split(":")[0] for change in diff(base, tuned)}
    assert changed <= set(fields) | {"model.embedding_size", "train.run_name"}
    assert tuned.train.run_name == "tiny_tuned"  # its own run directory, not the base config's
    assert [tuned.model.hidden_size, tuned.model.transform, tuned.train.learning_rate] == [
        best["values"][f] for f in fields]

    table = out[out.index("3 of 3 trial(s) completed"):].splitlines()
    assert table[1].split() == ["trial", "val_nll"] + fields
    assert table[3].split()[0] == best["trial_id"]  # best first
    assert f"best trial {best['trial_id']}: val_nll = {best['val_nll']:.6g}" in out
    with open(os.path.join(directory, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial_id"], float(r["val_nll"])) for r in rows] == [(t["trial_id"], t["val_nll"]) for t in trials]


class InterruptSecondEpoch(keras.callbacks.Callback):
    """Ctrl-C at the start of the second epoch, after the first epoch's backup."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_search_resumes_and_runs_no_finished_trial_again(tiny, monkeypatch, capsys):
    directory = tiny[2]
    command = args(tiny, "--trials", "2", "--set", "train.epochs=2", "--set", "train.nll_every=2")
    fit, calls = fit_lib.fit, []

    def recorded_fit(config, run, model, bundle, inputs, initial_epoch, chief, epochs=None, callbacks=()):
        calls.append((os.path.relpath(run.path, directory), initial_epoch))
        if interrupt and len(calls) == 2:
            callbacks = [*callbacks, InterruptSecondEpoch()]
        return fit(config, run, model, bundle, inputs, initial_epoch, chief, epochs=epochs, callbacks=callbacks)

    monkeypatch.setattr(fit_lib, "fit", recorded_fit)
    interrupt = True
    assert tuner.main(command) == 130  # interrupted in trial 1's second epoch
    assert "re-run the same command to continue" in capsys.readouterr().err
    statuses = {}
    for trial in ("0", "1"):
        with open(os.path.join(directory, "tuner", f"trial_{trial}", "trial.json")) as f:
            statuses[trial] = json.load(f)["status"]
    assert statuses == {"0": "COMPLETED", "1": "RUNNING"}
    first = os.path.join(directory, "tuner", "trial_0")
    saved = os.path.getmtime(os.path.join(first, "checkpoint.weights.h5"))

    calls.clear()
    interrupt = False
    assert tuner.main(command) == 0
    # Only the interrupted trial ran again, from its backup after the first epoch.
    assert calls == [(os.path.join("tuner", "trial_1", "execution0"), 1)]
    assert [row["epoch"] for row in history(os.path.join(directory, "tuner", "trial_1", "execution0"))] == ["0", "1"]
    assert [row["epoch"] for row in history(os.path.join(first, "execution0"))] == ["0", "1"]
    assert os.path.getmtime(os.path.join(first, "checkpoint.weights.h5")) == saved
    with open(os.path.join(directory, "tuner", "oracle.json")) as f:
        assert json.load(f)["run_times"] == {"0": 1, "1": 1}
    assert [t["status"] for t in trials_json(directory)["trials"]] == ["COMPLETED", "COMPLETED"]

    # A spent time budget starts no new trial; the finished ones are reloaded, reported, not re-run.
    calls.clear()
    capsys.readouterr()
    assert tuner.main(command + ["--trials", "3", "--time-budget", "0"]) == 0
    out = capsys.readouterr().out
    assert "time budget of 0 s spent" in out and "2 of 2 trial(s) completed" in out
    assert calls == [] and sorted(os.listdir(os.path.join(directory, "tuner"))) == [
        "oracle.json", "trial_0", "trial_1", "tuner0.json"]


def test_the_tuner_comes_from_the_flag_or_the_space(tiny, capsys):
    assert tuner.main(args(tiny, "--time-budget", "0")) == 1
    assert "random search over model.hidden_size, model.transform, train.learning_rate" in capsys.readouterr().out
    assert tuner.main(args(tiny, "--dir", tiny[2] + "-bayesian", "--tuner", "bayesian", "--time-budget", "0")) == 1
    assert "bayesian search over" in capsys.readouterr().out
    assert tuner.main(args(tiny, "--dir", tiny[2] + "-hyperband", "--tuner", "hyperband", "--trials", "5",
                          "--time-budget", "0")) == 1
    assert "hyperband search over model.hidden_size, model.transform, train.learning_rate" in (
        capsys.readouterr().out)
    assert tuner.main(args(tiny, "--tuner", "hyperband", "--time-budget", "0")) == 2  # not the random search's dir
    assert "holds another search (tuner: 'random' -> 'hyperband')" in capsys.readouterr().err


def test_bad_spaces_settings_and_directories_are_clear_errors(tiny, tmp_path, capsys):
    config_path, space_path, directory = tiny
    bad = tmp_path / "bad.yaml"
    bad.write_text("model.hiden_size: {choice: [8, 16]}\n")
    assert tuner.main(["--config", config_path, "--space", str(bad), "--dir", directory]) == 2
    assert "'model.hiden_size' is not a config field (did you mean 'model.hidden_size'?)" in capsys.readouterr().err
    bad.write_text("model.hidden_size: {int: {min: 16, max: 8}}\n")
    assert tuner.main(["--config", config_path, "--space", str(bad), "--dir", directory]) == 2
    assert "model.hidden_size: int: min = 16 exceeds max = 8" in capsys.readouterr().err

    no_nll = ["--set", "train.nll_every=0", "--set", "train.kl_rampup_time=0", "--time-budget", "0"]
    assert tuner.main(args(tiny, *no_nll)) == 1  # no trial started, none completed
    assert "objective val_loss (the validation loss at epochs with KL weight 1; train.nll_every is 0)" in (
        capsys.readouterr().out)
    assert tuner.main(args(tiny, *no_nll, "--set", "model.z_size=8")) == 2
    assert f"{directory} holds another search (model.z_size: 4 -> 8)" in capsys.readouterr().err

    other = str(tmp_path / "other")
    assert tuner.main(args(tiny, "--dir", other, "--set", "train.nll_every=2")) == 2
    assert "train.nll_every = 2 exceeds the 1 epoch(s) of a trial" in capsys.readouterr().err
    assert tuner.main(args(tiny, "--dir", other, "--set", "train.nll_every=0", "--set", "train.kl_rampup_time=2",
                          "--tuner", "hyperband")) == 2
    assert "the objective val_loss counts only epochs at KL weight 1" in capsys.readouterr().err
    assert tuner.main(args(tiny, "--dir", other, "--executions-per-trial", "0")) == 2
    assert "--executions-per-trial = 0 must be >= 1" in capsys.readouterr().err
    assert not os.path.exists(other)


def test_trials_whose_values_break_a_constraint_fail_with_the_reason_and_the_search_goes_on(tiny, tmp_path,
                                                                                            capsys):
    config_path, _, directory = tiny
    space = tmp_path / "z.yaml"
    space.write_text("model.z_size: {choice: [16, 32]}\n")  # the tiny MADE has 8 units: both are invalid
    assert tuner.main(["--config", config_path, "--space", str(space), "--dir", directory, "--trials", "3"]) == 1
    captured = capsys.readouterr()
    assert "0 of 2 trial(s) completed, 2 failed; no trial to report" in captured.out
    trials = trials_json(directory)["trials"]
    assert sorted(t["values"]["model.z_size"] for t in trials) == [16, 32]
    for t in trials:
        reason = f"model.hidden_flow_units = 8 must be >= model.z_size = {t['values']['model.z_size']}"
        assert t["status"] == "FAILED" and reason in t["message"]
        assert f"Trial {t['trial_id']} failed: " in captured.err and reason in captured.err
    assert not os.path.exists(os.path.join(directory, "best_config.yaml"))


def test_the_objective_counts_val_loss_only_at_kl_weight_one_and_ignores_missing_values(tmp_path):
    history = {"val_loss": [1.0, 2.0, 3.0, 2.5], "beta": [1e-5, 0.5, 1.0, 1.0], "val_nll": [4.0, float("nan")]}
    assert tuner.objective_value(history, "val_loss") == 2.5
    assert tuner.objective_value(history, "val_nll") == 4.0
    assert tuner.objective_value({"val_loss": [3.0]}, "val_nll") is None
    assert tuner.objective_value({"val_loss": [3.0, 2.0]}, "val_loss") == 2.0  # no KL weight: the LSTM baseline
    path = tmp_path / "history.csv"
    path.write_text("epoch,beta,val_loss,val_nll\n0,1e-05,1.0,NA\n1,1.0,2.0,5.0\n2,1.0,3.0,NA\n")
    assert tuner.read_history(str(path)) == {"beta": [1e-5, 1.0, 1.0], "val_loss": [1.0, 2.0, 3.0], "val_nll": [5.0]}
    assert tuner.objective_value(tuner.read_history(str(path)), "val_loss") == 2.0
