"""The run directory: layout, config consistency across sessions, finding checkpoints."""

import json
import os

import pytest

from tflatent import config as config_lib
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
    assert run.prepare(small_config(epochs=200)) == ["train.epochs: 100 -> 200"]
    assert run.load_config().train.epochs == 200
    other = small_config()
    other.model.z_size = 8
    other.model.hidden_flow_units = 8
    with pytest.raises(config_lib.ConfigError, match=r"different model or data set \(model\.z_size: 50 -> 8; "
                                                     r"model\.hidden_flow_units: 100 -> 8\).*another --run-dir"):
        run.prepare(other)
    assert diff(small_config(), small_config()) == []


def test_checkpoints_are_found_by_name_with_clear_errors(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.prepare(small_config())
    with pytest.raises(FileNotFoundError, match="has no checkpoint yet"):
        run.checkpoint("best")
    with pytest.raises(FileNotFoundError, match="does not exist; use 'best', 'latest'"):
        run.checkpoint(str(tmp_path / "nope.weights.h5"))
    os.makedirs(run.backup_dir)
    open(run.backup_weights_path, "w").close()
    with open(os.path.join(run.backup_dir, "training_metadata.json"), "w") as f:
        json.dump({"epoch": 7, "batch": 0}, f)
    assert run.checkpoint("best") == run.checkpoint("latest") == run.backup_weights_path  # no best yet
    assert run.completed_epochs() == 7 and checkpoint_epoch(run.backup_weights_path) == 7
    open(run.best_path, "w").close()
    with open(run.best_path + ".json", "w") as f:
        json.dump({"epoch": 5, "monitor": "val_nll", "value": 1.0}, f)
    assert run.checkpoint("best") == run.best_path and run.checkpoint("latest") == run.backup_weights_path
    assert checkpoint_epoch(run.best_path) == 5
    stray = str(tmp_path / "stray.weights.h5")
    open(stray, "w").close()
    with pytest.raises(FileNotFoundError, match="cannot tell which epoch"):
        checkpoint_epoch(stray)
    with pytest.raises(FileNotFoundError, match="is not a run directory"):
        RunDir(str(tmp_path / "empty")).load_config()
