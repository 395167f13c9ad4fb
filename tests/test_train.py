"""``python -m tflatent.train`` on the stand-in model: run directory, re-runs, --resume, NaN, SIGKILL."""

import csv
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import standin_model
import tensorflow as tf

from tflatent import evaluate, train
from tflatent.training import checkpoint_files
from tflatent.training.checkpoint_files import read_record
from tflatent.training.run_dir import RunDir

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
CONFIG = os.path.join(REPO, "configs", "jsb_chorales_af_af_small.yaml")
PARTS = standin_model.parts()  # the stand-in model and data, passed to train.main
FAST = ["--set", "train.epochs=4", "--set", "train.nll_every=2", "--set", "train.initial_kl_zero=1",
        "--set", "train.kl_rampup_time=1", "--set", "train.verbose=0"]


def history(run):
    with open(RunDir(str(run)).history_path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_its_directory_and_a_rerun_trains_no_further(tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST, **PARTS) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["epochs_completed"], summary["global_batch_size"]) == ("completed", 4, 5)
    assert summary["steps_per_epoch"] == 8  # ceil(40 sequences / 5)
    assert summary["best"]["monitor"] == "val_nll" and summary["best"]["epoch"] in (2, 4)
    rows = history(run)
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["val_nll"] != "NA" for row in rows] == [False, True, False, True]
    assert [float(row["beta"]) for row in rows] == [1e-5, 1e-5, 1.0, 1.0]  # w(i), s = r = 1
    assert os.listdir(run / "tensorboard") and (run / "config.yaml").exists()
    best_saved = os.path.getmtime(run / "checkpoints" / "best.weights.h5")

    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST, **PARTS) == 0
    assert "already finished 4 of 4 epochs" in capsys.readouterr().out
    assert os.path.getmtime(run / "checkpoints" / "best.weights.h5") == best_saved
    assert len(history(run)) == 4

    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST + ["--set", "train.epochs=5"],
                      **PARTS) == 0
    assert [row["epoch"] for row in history(run)] == ["0", "1", "2", "3", "4"]
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 5


def test_a_run_directory_refuses_another_model_and_bad_configs_fail_clearly(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert train.main(["--config", CONFIG, "--run-dir", run] + FAST + ["--set", "train.epochs=1"], **PARTS) == 0
    assert train.main(["--config", CONFIG, "--run-dir", run, "--set", "model.hidden_size=64"], **PARTS) == 2
    assert "model.hidden_size: 128 -> 64" in capsys.readouterr().err
    assert train.main(["--config", CONFIG, "--set", "model.hiden_size=64"], **PARTS) == 2
    assert "did you mean 'hidden_size'" in capsys.readouterr().err
    assert train.main(["--config", CONFIG, "--run-dir", str(tmp_path / "new"), "--resume", "nope.weights.h5"],
                      **PARTS) == 2
    assert "'nope.weights.h5' does not exist" in capsys.readouterr().err


def test_the_entry_point_sets_the_threads_per_op_before_anything_else(tmp_path, caplog):
    """In this process TensorFlow already runs, so an explicit value is refused with a warning: proof that
    ``train`` asks for it (in a fresh process it takes effect: the deprecation test below passes one)."""
    tf.constant(1.0) + 1.0
    wanted = tf.config.threading.get_intra_op_parallelism_threads() + 5
    with caplog.at_level(logging.WARNING, logger="tflatent.cpu_threads"):
        assert train.main(["--config", CONFIG, "--run-dir", str(tmp_path / "run")] + FAST
                          + ["--set", "train.epochs=1", "--set", f"train.intra_op_threads={wanted}"], **PARTS) == 0
    assert [f"instead of {wanted}" in record.getMessage() for record in caplog.records] == [True]


def test_resume_starts_a_new_run_from_a_checkpoint_epoch(tmp_path, capsys):
    first = tmp_path / "first"
    assert train.main(["--config", CONFIG, "--run-dir", str(first)] + FAST, **PARTS) == 0
    best = str(first / "checkpoints" / "best.weights.h5")
    epoch = read_record(best)["epoch"]
    second = tmp_path / "second"
    lr = ["--set", "train.learning_rate=2.5e-4"]  # the new run's rate, not the checkpoint's 1e-3
    assert train.main(["--config", CONFIG, "--run-dir", str(second), "--resume", best] + FAST
                      + ["--set", "train.epochs=6"] + lr, **PARTS) == 0
    assert (f"resuming from {best} after epoch {epoch} at train.learning_rate 0.00025 (the checkpoint's rate "
            "was 0.001)") in capsys.readouterr().out
    assert [int(row["epoch"]) for row in history(second)] == list(range(epoch, 6))
    assert float(history(second)[0]["lr"]) == pytest.approx(2.5e-4)
    # A run with its own backup continues from it and says that --resume is ignored.
    assert train.main(["--config", CONFIG, "--run-dir", str(second), "--resume", best] + FAST
                      + ["--set", "train.epochs=7"] + lr, **PARTS) == 0
    assert "has its own backup at epoch 6: continuing from it and ignoring --resume" in capsys.readouterr().out
    assert [int(row["epoch"]) for row in history(second)][-1] == 6


def test_a_non_finite_loss_ends_the_run_with_its_message_in_the_summary(tmp_path, capsys):
    run = tmp_path / "run"
    nan_parts = standin_model.parts(model_kwargs={"nan_at_step": 11})  # epoch 2, batch 3
    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST, **nan_parts) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped_non_finite" and "epoch 2, batch 3" in summary["message"]
    assert summary["epochs_completed"] == 1
    assert "became nan at epoch 2, batch 3" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_epoch_when_started_again(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, os.path.join(TESTS, "standin_model.py"), "train", "--config", CONFIG,
               "--run-dir", str(run), "--set", "train.epochs=3", "--set", "train.verbose=2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "STANDIN_MODEL_KWARGS": '{"seconds_per_step": 0.25}'}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while RunDir(str(run)).completed_epochs() < 1:
        assert process.poll() is None and time.time() < deadline, "the first epoch never finished"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = RunDir(str(run)).completed_epochs()
    assert killed_at < 3 and not (run / "summary.json").exists()

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"Epoch {killed_at + 1}/3" in again.stdout and "Epoch 1/3" not in again.stdout
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3
    assert sorted({int(row["epoch"]) for row in history(run)}) == [0, 1, 2]


# ----------------------------------------------------------------------------- real faults: kills, full disks

FAULT_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def standin_command(run, epochs, script="standin_model.py", *before):
    return [sys.executable, os.path.join(TESTS, script), *before, "train", "--config", CONFIG,
            "--run-dir", str(run),
            "--set", f"train.epochs={epochs}", "--set", "train.nll_every=1", "--set", "train.verbose=0"]


def assert_whole_and_resumable(run, monkeypatch, epochs):
    """The same command finishes the run: each epoch's row once, a whole best checkpoint evaluate reads."""
    assert train.main(["--config", CONFIG, "--run-dir", str(run), "--set", f"train.epochs={epochs}",
                       "--set", "train.nll_every=1", "--set", "train.verbose=0"], **PARTS) == 0
    assert [int(row["epoch"]) for row in history(run)] == list(range(epochs))
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == epochs
    best = RunDir(str(run)).best_path
    assert checkpoint_files.problem(best) is None
    assert evaluate.main(["--run", str(run), "--samples", "2"], **PARTS) == 0


@pytest.mark.slow
@pytest.mark.parametrize("event, suffix, count", [
    ("os.rename", os.path.join("backup", "epoch-0002.weights.h5"), 1),  # after epoch 2's row and best
    ("open", os.path.join("checkpoints", ".best.weights.h5.json.tmp"), 2),  # epoch 2's best, no record
])
def test_a_kill_at_a_checkpoint_write_loses_at_most_the_epoch_in_progress(tmp_path, monkeypatch, capsys,
                                                                          event,
                                                                          suffix, count):
    run = tmp_path / "run"
    killed = subprocess.run(standin_command(run, 3, "crash_at.py", event, suffix, str(count)), cwd=REPO,
                            env=FAULT_ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert RunDir(str(run)).completed_epochs() == 1
    if event == "open":  # the best file is newer than its record: not trusted, the backup stands in
        assert RunDir(str(run)).checkpoint("best").endswith("epoch-0001.weights.h5")
        assert "skipping the best checkpoint" in capsys.readouterr().err
    assert_whole_and_resumable(run, monkeypatch, 3)


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_keeps_the_last_backup_and_the_same_command_resumes(tmp_path,
                                                                                            monkeypatch):
    """A real write failure: a file-size limit (RLIMIT_FSIZE) below the checkpoint's size makes the
    checkpoint writes of epoch 3 fail with EFBIG, as a full disk fails them with ENOSPC."""
    run = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run), "--set", "train.epochs=2",
                       "--set", "train.nll_every=1", "--set", "train.verbose=0"], **PARTS) == 0
    size = os.path.getsize(RunDir(str(run)).best_path)
    assert size > 8192  # the stand-in's checkpoint; history rows and TensorBoard files stay below the limit

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    full = subprocess.run(standin_command(run, 4), cwd=REPO, env=FAULT_ENV, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit)
    lines = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert full.returncode == 2 and len(lines) == 1, full.stderr[-3000:]
    assert "cannot write" in lines[0] and "File too large" in lines[0] and "needed" in lines[0]
    assert "Traceback" not in full.stderr
    assert RunDir(str(run)).completed_epochs() == 2
    assert checkpoint_files.problem(RunDir(str(run)).best_path) is None
    assert not [name for name in os.listdir(run / "backup") if name.endswith(".tmp")]
    assert_whole_and_resumable(run, monkeypatch, 4)


def test_a_changed_learning_rate_takes_effect_on_resume(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST + ["--set", "train.epochs=1"],
                      **PARTS) == 0
    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST
                      + ["--set", "train.epochs=2", "--set", "train.learning_rate=2.5e-4"], **PARTS) == 0
    assert "train.learning_rate changed from 0.001 to 0.00025" in capsys.readouterr().out
    assert [float(row["lr"]) for row in history(run)] == pytest.approx([1e-3, 2.5e-4])


def test_a_run_that_fails_before_training_does_not_block_the_corrected_command(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"

    def failing_load(config, seed=0):
        raise FileNotFoundError("no data here")

    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST + ["--set", "model.hidden_size=64"],
                      **{**PARTS, "load_dataset": failing_load}) == 2
    assert not (run / "config.yaml").exists()
    assert train.main(["--config", CONFIG, "--run-dir", str(run)] + FAST + ["--set", "train.epochs=1"],
                      **PARTS) == 0


@pytest.mark.parametrize("damage", ["truncated", "pitch"])
def test_a_damaged_data_file_is_one_line_naming_it_and_exit_2(tmp_path, data_dir, capsys, damage):
    source = tmp_path / "data"
    source.mkdir()
    if damage == "truncated":
        original = (data_dir / "music" / "JSB_Chorales.mat").read_bytes()
        (source / "JSB_Chorales.mat").write_bytes(original[:4000])
        expected = "JSB_Chorales.mat cannot be read as a MATLAB .mat file"
    else:
        import pickle
        with open(source / "jsb_chorales.pkl", "wb") as f:
            pickle.dump({"train": [[(60, 130)]], "valid": [[(60,)]], "test": [[(60,)]]}, f)
        expected = "has pitch 130"
    code = train.main(["--config", CONFIG, "--run-dir", str(tmp_path / "run"),
                       "--set", f"data.data_dir={source}",
                       "--set", f"data.tfds_dir={tmp_path / 'tfds'}", "--set", "train.verbose=0"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and expected in errors[0], err[-3000:]
    assert "Traceback" not in err and not (tmp_path / "run" / "config.yaml").exists()


def test_a_training_run_prints_no_deprecation_warning_of_tensorflows_own(data_dir, tfds_dir, tmp_path):
    """A real (tiny) PTB AF/AF run, one-hot positions (the CPU's sparse product), a step, validation and the
    IS NLL, in a fresh process (TensorFlow logs each deprecation once per process), Python warnings on."""
    tiny = ["model.hidden_size=8", "model.embedding_size=8", "model.z_size=4", "model.prior_rnn_units=8",
            "model.hidden_flow_units=8", "data.train_limit=4", "data.eval_limit=4", "data.batch_size=4",
            "data.eval_batch_size=4", "train.epochs=1", "train.nll_every=1", "train.nll_samples=2",
            "train.nll_chunk=2", "train.elbo_samples=1", "train.verbose=0", f"data.data_dir={data_dir}",
            f"data.tfds_dir={tfds_dir}", "train.intra_op_threads=1"]
    command = [sys.executable, "-W", "default", "-m", "tflatent.train", "--config",
               os.path.join(REPO, "configs", "ptb_af_af.yaml"), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command + [arg for item in tiny for arg in ("--set", item)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    own = [line for line in output.splitlines()
           if "deprecat" in line.lower() and ("tensorflow/python" in line or "(from tensorflow." in line)]
    assert not own, "\n".join(own)
    assert "already runs in this process" not in output  # the thread setting came before the runtime
