"""Tiny trained runs for the export and serving tests: real data, two training steps, tiny sizes."""

from __future__ import annotations

import os

from tflatent import train

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
TINY = {"model.embedding_size": 16, "model.z_size": 4, "model.hidden_size": 12, "model.prior_rnn_units": 12,
        "model.q_rnn_layers": 1, "model.gen_rnn_layers": 1, "model.prior_rnn_layers": 1, "model.lstm_layers": 1,
        "model.hidden_flow_layers": 2, "model.hidden_flow_units": 8, "model.position_encoding": "sinusoidal",
        "model.position_encoding_size": 8}


def train_tiny(path, config_name: str, data_dir, tfds_dir, overrides=None) -> str:
    """Trains ``configs/<config_name>.yaml`` at a tiny size (and ``overrides``, {field: value}) for two steps
    into the run directory ``path``."""
    settings = {**TINY, **(overrides or {}), "train.epochs": 1, "train.steps_per_epoch": 2, "train.nll_every": 0,
                "train.verbose": 0, "data.data_dir": str(data_dir), "data.tfds_dir": str(tfds_dir),
                "data.eval_limit": 8}
    argv = ["--config", os.path.join(CONFIGS, config_name + ".yaml"), "--run-dir", str(path)]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    assert train.main(argv) == 0
    return str(path)
