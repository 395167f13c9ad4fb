"""Keras callbacks for the reference's training schedule (``docs/reference.md`` §4.3–4.4, §5.1).

* :class:`KLAnnealing` sets the KL weight ``model.kl_weight`` before every batch.
* :class:`PlateauLRDecay` divides the learning rate by 4 when the validation loss stops improving,
  once annealing is done, and resets the optimizer as the reference's rebuild does.
* :class:`ImportanceSampledNLL` puts the importance-sampled validation NLL into the epoch logs.
* :class:`EpochLog` writes the CSV history: one row per epoch exactly once, stable columns, occasional
  metrics.
* :class:`BestCheckpoint` keeps the weights of the best epoch by a logged metric, with a JSON record.
* :class:`RunBackup` backs up and restores the training state, stateful callbacks included, crash-safely.
* :class:`StopOnNonFinite` stops at the first non-finite training loss with a message saying what to do.

Order matters where one callback reads what another writes (all share one epoch-logs dict):
``ImportanceSampledNLL`` before the loggers and ``BestCheckpoint`` (they read ``val_nll``);
``PlateauLRDecay`` after ``TensorBoard`` (whose steps/s reads the step counter a reset zeroes) and
before ``EpochLog`` (which logs its ``lr``) and ``RunBackup`` (which saves its state).
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Callable, Optional

import keras
import tensorflow as tf

from tflatent import atomic_files
from tflatent.training import checkpoint_files, optimizers


def _value(variable) -> float:
    """A scalar variable's value (a Keras or TF variable, mirrored under a strategy or not)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return float(tf.convert_to_tensor(variable))


class KLAnnealing(keras.callbacks.Callback):
    """The KL weight β of the objective ``recon + β·KL − log p(T)`` (docs/reference.md §4.3).

    Per epoch i, with s = ``initial_kl_zero``, r = ``kl_rampup_time`` and f = ``floor``::

        w(i) = f                          i < s
             = f + (1 − f)·(i − s)/r      s ≤ i ≤ s + r
             = 1                          i > s + r        (done(i) from here on)

    and w ≡ 1, done from the start, when s = r = 0 (the baseline). Within epoch i the weight moves
    linearly per batch from w(i − 1) to w(i): ``β_b = w(i−1) + (w(i) − w(i−1))·b / n`` for batch
    b = 0..n−1, with w(−1) = f. Validation runs at β = w(i), so the validation loss during the ramp
    is not a bound. r = 0 with s > 0 is a step from f to 1 at epoch s.

    Args:
      initial_kl_zero: s, epochs at the floor before the ramp.
      kl_rampup_time: r, epochs of the linear ramp.
      floor: f, the weight before the ramp (the reference's 1e−5).
      steps_per_epoch: n, batches per epoch; None takes Keras's ``params["steps"]``.
    """

    def __init__(self, initial_kl_zero: int, kl_rampup_time: int, floor: float = 1e-5,
                 steps_per_epoch: Optional[int] = None):
        super().__init__()
        if initial_kl_zero < 0 or kl_rampup_time < 0:
            raise ValueError(f"initial_kl_zero = {initial_kl_zero} and kl_rampup_time = {kl_rampup_time} "
                             "must both be >= 0")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor = {floor} must be in [0, 1]")
        self.start = initial_kl_zero
        self.end = initial_kl_zero + kl_rampup_time
        self.floor = floor
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def weight(self, epoch: int) -> float:
        """w(epoch); w(−1) is the floor."""
        if self.end == 0:
            return 1.0
        if epoch < self.start:
            return self.floor
        if epoch >= self.end:
            return 1.0
        return self.floor + (1.0 - self.floor) * (epoch - self.start) / (self.end - self.start)

    def done(self, epoch: int) -> bool:
        """Whether annealing is over at ``epoch`` (the reference's flag that turns on the LR schedule)."""
        return self.end == 0 or epoch > self.end

    def batch_weight(self, epoch: int, batch: int, steps: int) -> float:
        """β for batch ``batch`` (0-based) of ``steps`` in ``epoch``."""
        before, after = self.weight(epoch - 1), self.weight(epoch)
        return before + (after - before) * batch / steps

    def _set(self, value: float) -> None:
        beta = self.model.kl_weight
        if beta is None:
            raise ValueError(f"KLAnnealing needs a model with a KL weight; {type(self.model).__name__} "
                             "has none (the LSTM baseline has no KL term: leave the callback out)")
        beta.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.steps_per_epoch or self.params.get("steps")
        if not steps:
            raise ValueError("KLAnnealing needs the number of batches per epoch to interpolate β: pass "
                             "steps_per_epoch (the training data set's length is unknown to Keras)")
        self._set(self.batch_weight(self._epoch, batch, steps))

    def on_test_begin(self, logs=None):
        self._set(self.weight(self._epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = self.weight(epoch)


class PlateauLRDecay(keras.callbacks.Callback):
    """Learning rate ÷ ``factor`` after ``patience`` epochs without improvement (the reference's auto_lr).

    Only epochs where ``active_after(epoch)`` holds count (the reference: once KL annealing is done).
    On such an epoch, a ``monitor`` value strictly below the best so far becomes the best and resets
    the impatience; otherwise the impatience grows, and when it reaches ``patience`` the learning
    rate is divided by ``factor``, the optimizer's moments and step counter are zeroed (with
    ``reset_optimizer``, as the reference's rebuild does) and the impatience restarts. There is no
    minimum learning rate and no early stopping. The learning rate is logged as ``lr``.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 1, factor: float = 4.0,
                 active_after: Callable[[int], bool] = lambda epoch: True, reset_optimizer: bool = True):
        super().__init__()
        if patience < 1 or factor < 1:
            raise ValueError(f"patience = {patience} must be >= 1 and factor = {factor} >= 1")
        self.monitor = monitor
        self.patience = patience
        self.factor = factor
        self.active_after = active_after
        self.reset_optimizer = reset_optimizer
        self.best = math.inf
        self.wait = 0

    def get_state(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def set_state(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["lr"] = _value(optimizer.learning_rate)
        if not self.active_after(epoch):
            return
        if self.monitor not in logs:
            raise KeyError(f"PlateauLRDecay monitors {self.monitor!r}, which is not in the epoch logs "
                           f"({', '.join(sorted(logs))}); pass validation data to fit")
        value = logs[self.monitor]
        if value < self.best:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer.learning_rate = _value(optimizer.learning_rate) / self.factor
            if self.reset_optimizer:
                optimizers.reset_state(optimizer)
            self.wait = 0
            print(f"\nEpoch {epoch + 1}: {self.monitor} has not improved on {self.best:.5f} for "
                  f"{self.patience} epoch(s); learning rate -> {_value(optimizer.learning_rate):.3g}")


class ImportanceSampledNLL(keras.callbacks.Callback):
    """Every ``every`` epochs, ``model.evaluate_nll`` on ``dataset`` into the logs (docs/reference.md §5.1).

    It evaluates under the model's ``tf.distribute`` strategy: ``dataset`` holds global batches (as
    ``fit``'s validation data), each replica evaluates its share and the sums are reduced once, so
    every worker reports the same figure, the one a single device gives on the same weights.

    Adds ``val_nll`` (nats per token, normalised by Σ(T + 1)) and, as the model reports them,
    ``val_bpc`` (text) or ``val_nats_per_frame`` (music), at epochs i with (i + 1) % every == 0.
    ``every = 0`` turns it off. ``jit_compile`` (``train.jit_compile``): XLA-compiled, as the training
    step (``SequenceModel.evaluate_nll``).
    """

    REPORTED = ("nll", "bpc", "nats_per_frame")

    def __init__(self, dataset, every: int, num_samples: int, chunk: int, jit_compile: bool = False):
        super().__init__()
        self.dataset = dataset
        self.every = every
        self.num_samples = num_samples
        self.chunk = chunk
        self.jit_compile = jit_compile

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        result = self.model.evaluate_nll(self.dataset, num_samples=self.num_samples, chunk=self.chunk,
                                         strategy=self.model.distribute_strategy, jit_compile=self.jit_compile)
        for key in self.REPORTED:
            if key in result:
                logs["val_" + key] = float(result[key])


class EpochLog(keras.callbacks.Callback):
    """The CSV history, one row per epoch exactly once, rewritten whole (atomically) after every epoch.

    The columns are the existing header's when the file exists, else the first epoch's keys plus
    ``occasional`` (metrics logged on some epochs only, e.g. ``val_nll``); a value missing from an
    epoch is written as NA. Writing epoch i drops the rows of epochs >= i first: a run resumed from
    its backup rewrites the rows logged after that backup (before a kill stopped the next one)
    instead of appending them twice.
    """

    def __init__(self, filename: str, occasional=()):
        super().__init__()
        self.filename = filename
        self.occasional = tuple(occasional)
        self.keys: Optional[list] = None
        self.rows: list = []

    def on_train_begin(self, logs=None):
        self.keys, self.rows = None, []
        if os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header:
                    self.keys, self.rows = header[1:], [row for row in reader if row]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(set(logs) | set(self.occasional))
        self.rows = [row for row in self.rows if int(row[0]) < epoch]
        self.rows.append([str(epoch)] + [_csv_value(logs.get(key)) for key in self.keys])
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["epoch"] + self.keys)
        writer.writerows(self.rows)
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        atomic_files.write_text(self.filename, text.getvalue())


def _csv_value(value) -> str:
    return "NA" if value is None else value if isinstance(value, str) else str(float(value))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights (and optimizer state) when ``monitor`` improves, with a JSON record beside them.

    ``<path>.json`` holds the epoch count (epochs completed), the monitor, its value, the epoch's logs
    and the file's size and SHA-256 (:mod:`tflatent.training.checkpoint_files`: written to a temporary
    name and renamed, the record after the file). The best value so far is read back from the record
    when the callback is created, so a resumed run never replaces its best checkpoint by a worse one.
    Epochs whose logs lack ``monitor`` (the importance-sampled NLL runs every few epochs only) are
    skipped silently.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss"):
        super().__init__()
        record = checkpoint_files.read_record(filepath)
        self.filepath = filepath
        self.monitor = monitor
        self.best = record["value"] if record and record.get("monitor") == monitor else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not float(value) < self.best:
            return
        self.best = float(value)
        checkpoint_files.save(self.model, self.filepath, {
            "epoch": epoch + 1, "monitor": self.monitor, "value": self.best,
            "logs": {k: float(v) for k, v in logs.items()}})


class RunBackup(keras.callbacks.Callback):
    """A backup every epoch (weights, optimizer, epoch, stateful callbacks), restored when training starts.

    Backups are :class:`tflatent.training.checkpoint_files.Generations` in ``backup_dir``
    (``epoch-NNNN.weights.h5`` and its record; the newest two are kept, nothing is rewritten in place).
    At the start of ``fit`` the newest whole generation is loaded (a damaged one is skipped with a
    warning): the model, the optimizer (learning rate included), the epoch to continue from, and the
    state of the callbacks in ``stateful`` (``get_state()``/``set_state(state)``, e.g.
    :class:`PlateauLRDecay`'s best value and impatience). With ``learning_rate`` (the configured
    ``train.learning_rate``), a configured rate that differs from the one recorded in the backup
    replaces the restored rate, with a message: the user changed the setting on purpose. The backups
    are kept after training ends, so re-running a finished run trains no further.
    """

    def __init__(self, backup_dir: str, stateful: Optional[dict] = None,
                 learning_rate: Optional[float] = None):
        super().__init__()
        self.backup_dir = backup_dir
        self.generations = checkpoint_files.Generations(backup_dir)
        self.stateful = stateful or {}
        self.learning_rate = learning_rate

    def on_train_begin(self, logs=None):
        latest = self.generations.latest()
        if latest is None:
            return
        path, record = latest
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        checkpoint_files.load(self.model, path)
        self.model._initial_epoch = int(record["epoch"])  # what keras.callbacks.BackupAndRestore sets
        for name, state in record.get("callbacks", {}).items():
            if name in self.stateful:
                self.stateful[name].set_state(state)
        configured = record.get("configured_learning_rate")
        if self.learning_rate is not None and configured is not None and configured != self.learning_rate:
            restored = _value(optimizer.learning_rate)
            optimizer.learning_rate = self.learning_rate
            print(f"train.learning_rate changed from {configured:g} to {self.learning_rate:g}: training "
                  f"continues at {self.learning_rate:g} (the backup's rate was {restored:.3g})")

    def on_epoch_end(self, epoch, logs=None):
        record = {"callbacks": {name: cb.get_state() for name, cb in self.stateful.items()}}
        if self.learning_rate is not None:
            record["configured_learning_rate"] = self.learning_rate
        self.generations.save(self.model, epoch + 1, record)

    @staticmethod
    def completed_epochs(backup_dir: str) -> int:
        """Epochs completed according to the newest whole backup in ``backup_dir`` (0 when there is none)."""
        latest = checkpoint_files.Generations(backup_dir).latest(warn=False)
        return 0 if latest is None else int(latest[1]["epoch"])

    @staticmethod
    def latest(backup_dir: str) -> Optional[str]:
        """The newest whole backup file in ``backup_dir``, or None."""
        latest = checkpoint_files.Generations(backup_dir).latest(warn=False)
        return None if latest is None else latest[0]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first batch whose running training loss is NaN or ±inf.

    It raises :class:`NonFiniteLossError` from ``on_train_batch_end``, so no later callback of that
    epoch runs: the backup and the best checkpoint keep the last finite state.
    """

    def __init__(self, monitor: str = "loss"):
        super().__init__()
        self.monitor = monitor
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or math.isfinite(value):
            return
        beta = self.model.kl_weight
        state = f"β = {_value(beta):.3g}, " if beta is not None else ""
        state += f"learning rate {_value(self.model.optimizer.learning_rate):.3g}"
        raise NonFiniteLossError(
            f"the training {self.monitor} became {value} at epoch {self._epoch + 1}, batch {batch + 1} "
            f"({state}). Training stopped; the last backup and the best checkpoint hold the last finite "
            "state. Likely fixes: a lower train.learning_rate or train.clip_norm; "
            "data.length_prior_smoothing: 1 if −log p(T) is infinite for some length; "
            "train.mixed_precision: false if it is on; then re-run, or --resume from the best checkpoint.")
