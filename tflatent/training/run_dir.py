"""The run directory: what one training run writes, and how to find it again.

::

    <run>/
      config.yaml                     the resolved config, every field (re-loadable with config.load)
      logs/history.csv                one row per epoch (appended to when the run resumes)
      tensorboard/                    TensorBoard event files
      checkpoints/best.weights.h5     weights + optimizer state of the best epoch by val_nll (val_loss
      checkpoints/best.weights.h5.json    when the IS NLL is off), and its record: epoch, value, logs,
                                      the file's size and SHA-256
      backup/epoch-NNNN.weights.h5    the state after epoch NNNN (weights, optimizer) and its record
      backup/epoch-NNNN.weights.h5.json   (epoch, callback states, size, SHA-256); the newest two kept
      summary.json                    the final figures, written when training ends
      evaluation_<split>.json         written by ``python -m tflatent.evaluate``

A run directory belongs to one model and one data set: once it holds a checkpoint, preparing it again
with a config that differs in ``data`` or ``model`` is an error, while ``train`` settings may change
between sessions (e.g. more epochs). Every file is written to a temporary name and renamed into place
(:mod:`tflatent.atomic_files`, :mod:`tflatent.training.checkpoint_files`); a checkpoint that does not
match its record is skipped with a warning for the previous good one. Nothing here deletes or
overwrites a checkpoint: an existing run resumes from its backup.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import keras
import tensorflow as tf

from tflatent import atomic_files, json_files
from tflatent import config as config_lib
from tflatent.errors import CheckpointError
from tflatent.models import registry
from tflatent.training import checkpoint_files, optimizers
from tflatent.training.callbacks import RunBackup

IMMUTABLE_SECTIONS = ("data", "model")


class RunDir:
    """Paths and helpers of one run directory (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self.config_path = os.path.join(path, "config.yaml")
        self.logs_dir = os.path.join(path, "logs")
        self.history_path = os.path.join(self.logs_dir, "history.csv")
        self.tensorboard_dir = os.path.join(path, "tensorboard")
        self.checkpoints_dir = os.path.join(path, "checkpoints")
        self.best_path = os.path.join(self.checkpoints_dir, "best.weights.h5")
        self.backup_dir = os.path.join(path, "backup")
        self.summary_path = os.path.join(path, "summary.json")

    @classmethod
    def for_config(cls, config: config_lib.Config) -> "RunDir":
        """``<train.output_dir>/<train.run_name>``."""
        return cls(os.path.join(config.train.output_dir, config.train.run_name or "run"))

    def exists(self) -> bool:
        return os.path.exists(self.config_path)

    def prepare(self, config: config_lib.Config) -> list[str]:
        """:meth:`check` then :meth:`write_config`; returns the fields that changed."""
        changed = self.check(config)
        self.write_config(config)
        return changed

    def check(self, config: config_lib.Config) -> list[str]:
        """The fields of ``config`` that differ from the run's ``config.yaml`` (none for a new run).

        Raises ConfigError when the directory holds checkpoints of another model or data set. A run
        without checkpoints (one that failed before its first epoch ended) may change anything.
        """
        if not self.exists():
            return []
        differences = diff(self.load_config(), config)
        fixed = [d for d in differences if d.split(".")[0] in IMMUTABLE_SECTIONS]
        if fixed and self.has_checkpoints():
            raise config_lib.ConfigError(
                f"{self.path} holds a run with a different model or data set ({'; '.join(fixed)}). "
                "Use another --run-dir (or train.run_name), or the run's own config.yaml")
        return differences

    def write_config(self, config: config_lib.Config) -> None:
        """Creates the layout and writes ``config.yaml`` (call it once the data and model are built)."""
        for directory in (self.logs_dir, self.checkpoints_dir, self.tensorboard_dir):
            os.makedirs(directory, exist_ok=True)
        atomic_files.write_text(self.config_path, config.to_yaml())

    def has_checkpoints(self) -> bool:
        return os.path.exists(self.best_path) or bool(checkpoint_files.Generations(self.backup_dir).epochs())

    def load_config(self) -> config_lib.Config:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory: it has no config.yaml (train a "
                                    "model first: python -m tflatent.train --config configs/<name>.yaml)")
        return config_lib.load(self.config_path)

    def completed_epochs(self) -> int:
        """Epochs completed according to the backup (0 for a new run)."""
        return RunBackup.completed_epochs(self.backup_dir)

    def best_checkpoint(self) -> Optional[str]:
        """The best checkpoint, or None when there is none or it does not match its record (warned)."""
        if not os.path.exists(self.best_path):
            return None
        found = checkpoint_files.problem(self.best_path)
        if found and checkpoint_files.read_record(self.best_path) is not None:
            print(f"warning: skipping the best checkpoint: {found}", file=sys.stderr)
            return None
        return self.best_path

    def latest_checkpoint(self) -> Optional[str]:
        """The most recent state: the newest whole backup, else the best checkpoint."""
        return RunBackup.latest(self.backup_dir) or self.best_checkpoint()

    def checkpoint(self, which: str = "best") -> str:
        """``best`` (falling back to ``latest`` when there is no whole best), ``latest``, or a file path."""
        if which not in ("best", "latest"):
            if not os.path.exists(which):
                raise CheckpointError(f"checkpoint {which!r} does not exist; use 'best', 'latest' or a "
                                      f"*.weights.h5 file such as {self.best_path}")
            return which
        found = self.best_checkpoint() if which == "best" else None
        found = found or self.latest_checkpoint()
        if found is None:
            raise CheckpointError(f"{self.path} has no usable checkpoint (no whole {self.best_path} and no "
                                  f"backup in {self.backup_dir}): has its first epoch finished?")
        return found

    def write_json(self, name: str, value: dict) -> str:
        return json_files.write_json(os.path.join(self.path, name), value)

    def read_json(self, name: str) -> Optional[dict]:
        return json_files.read_json(os.path.join(self.path, name))


def ensure_built(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Builds an unbuilt model by running one evaluation batch (weights must exist before loading)."""
    if not model.built:
        model.evaluate(dataset.take(1), verbose=0)
    if not model.built:
        raise ValueError(f"{type(model).__name__} is still not built after an evaluation batch: "
                         "build_model must return a built model (call its build())")


def restore_model(run: RunDir, bundle, checkpoint: str = "best",
                  build_model=registry.build_model) -> tuple[keras.Model, str]:
    """The model of ``run`` with the weights of ``checkpoint`` (see :meth:`RunDir.checkpoint`).

    Returns (model, checkpoint path). The model (``build_model(config, bundle)``, the registry's by
    default) is compiled with the run's optimizer, whose state the checkpoint also holds, and its KL
    weight (if any) is 1, as for evaluation.
    """
    config = run.load_config()
    path = run.checkpoint(checkpoint)
    model = build_model(config, bundle)
    model.compile(optimizer=optimizers.make_optimizer(config.train))
    ensure_built(model, bundle.batches("valid", False))
    model.optimizer.build(model.trainable_variables)
    checkpoint_files.load(model, path)
    if model.kl_weight is not None:
        model.kl_weight.assign(1.0)
    return model, path


def checkpoint_epoch(path: str) -> int:
    """Epochs completed when the checkpoint at ``path`` was written (from its record)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    record = checkpoint_files.read_record(path)
    if record is None:
        raise CheckpointError(f"cannot tell which epoch {path} is from: it has no {path}.json record (use a "
                              "run's checkpoints/best.weights.h5 or backup/epoch-NNNN.weights.h5)")
    return int(record["epoch"])


def diff(old: config_lib.Config, new: config_lib.Config) -> list[str]:
    """The fields that differ, as ``section.key: old -> new``."""
    out = []
    old_dict, new_dict = old.to_dict(), new.to_dict()
    for section, values in new_dict.items():
        for key, value in values.items():
            if old_dict[section][key] != value:
                out.append(f"{section}.{key}: {old_dict[section][key]!r} -> {value!r}")
    return out
