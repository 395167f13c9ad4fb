"""The run directory: layout, config consistency across sessions, finding checkpoints."""

import os

import keras
import pytest

from tflatent import config as config_lib
from tflatent.errors import CheckpointError
from tflatent.training import checkpoint_files
from tflatent.training.checkpoint_files import Generations
from tflatent.training.run_dir import RunDir, checkpoint_epoch, diff


def small_config(**train):
    config = config_lib.Config()
    config.model.hidden_size = 16
    config.train.run_name = "r"
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def test_prepare_writes_the_layout_and_a_reloadable_config(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert not run.exists()
    assert run.prepare(small_config()) == []
    for path in (run.logs_dir, run.checkpoints_dir, run.tensorboard_dir):
        assert os.path.isdir(path)
    assert run.load_config() == small_config()
    assert RunDir.for_config(small_config(output_dir="out", run_name="x")).path == os.path.join("out", "x")


def test_a_run_keeps_its_model_and_data_but_train_settings_may_change(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.prepare(small_config())
    Generations(run.backup_dir).save(dense_model(), 1, {})
    assert run.prepare(small_config(epochs=200)) == ["train.epochs: 100 -> 200"]
    assert run.load_config().train.epochs == 200
    other = small_config()
    other.model.z_size = 8
    other.model.hidden_flow_units = 8
    with pytest.raises(config_lib.ConfigError, match=r"different model or data set \(model\.z_size: 50 -> 8; "
                                                     r"model\.hidden_flow_units: 100 -> 8\).*another --run-dir"):
        run.prepare(other)
    assert diff(small_config(), small_config()) == []


def dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoints_are_found_by_name_with_clear_errors(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.prepare(small_config())
    with pytest.raises(CheckpointError, match="has no usable checkpoint"):
        run.checkpoint("best")
    with pytest.raises(CheckpointError, match="does not exist; use 'best', 'latest'"):
        run.checkpoint(str(tmp_path / "nope.weights.h5"))
    model = dense_model()
    Generations(run.backup_dir).save(model, 7, {})
    latest = os.path.join(run.backup_dir, "epoch-0007.weights.h5")
    assert run.checkpoint("best") == run.checkpoint("latest") == latest  # no best yet
    assert run.completed_epochs() == 7 and checkpoint_epoch(latest) == 7
    checkpoint_files.save(model, run.best_path, {"epoch": 5, "monitor": "val_nll", "value": 1.0})
    assert run.checkpoint("best") == run.best_path and run.checkpoint("latest") == latest
    assert checkpoint_epoch(run.best_path) == 5
    stray = str(tmp_path / "stray.weights.h5")
    model.save_weights(stray)
    with pytest.raises(CheckpointError, match="cannot tell which epoch"):
        checkpoint_epoch(stray)
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        RunDir(str(tmp_path / "empty")).load_config()


def test_a_truncated_checkpoint_is_skipped_for_the_previous_good_one_with_a_warning(tmp_path, capsys):
    run = RunDir(str(tmp_path / "run"))
    model = dense_model()
    generations = Generations(run.backup_dir)
    for epoch in (1, 2, 3):
        generations.save(model, epoch, {})
    assert generations.epochs() == [3, 2]  # the newest two are kept
    newest = generations.path(3)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    assert run.completed_epochs() == 2 and run.checkpoint("latest") == generations.path(2)
    checkpoint_files.save(model, run.best_path, {"epoch": 3, "monitor": "val_nll", "value": 1.0})
    with open(run.best_path, "r+b") as f:
        f.truncate(100)
    assert run.checkpoint("best") == generations.path(2)
    assert "skipping the best checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="is 100 bytes where its record says"):
        checkpoint_files.load(dense_model(), run.best_path)


def test_a_run_without_checkpoints_may_change_its_model_or_data(tmp_path):
    """A run that failed before its first epoch ended must not block the corrected command."""
    run = RunDir(str(tmp_path / "run"))
    run.prepare(small_config())
    other = small_config()
    other.model.z_size = 8
    assert run.check(other) == ["model.z_size: 50 -> 8"]
