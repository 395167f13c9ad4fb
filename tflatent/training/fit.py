"""Training a model from a config: the data at the strategy's batch sizes, the compiled model, and
``Model.fit`` with the run's callbacks (docs/reference.md §4); what ``python -m tflatent.train`` runs and
what the tuner's trials reuse. The run directory's layout is in :mod:`tflatent.training.run_dir`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from tflatent import config as config_lib
from tflatent import data
from tflatent.models import registry
from tflatent.models.base import SequenceModel
from tflatent.training import callbacks as cb
from tflatent.training import checkpoint_files, distribute, optimizers
from tflatent.training.run_dir import RunDir, checkpoint_epoch, ensure_built

BuildModel = Callable[[config_lib.Config, object], SequenceModel]  # (config, data bundle) → built model
LoadDataset = Callable[[config_lib.DataConfig, int], object]  # (config.data, seed) → data bundle


def train(config: config_lib.Config, run: RunDir, strategy: tf.distribute.Strategy,
          resume: Optional[str] = None, *, build_model: BuildModel = registry.build_model,
          load_dataset: LoadDataset = data.load_dataset) -> dict:
    """Trains ``config`` into ``run`` under ``strategy``; returns the summary (also in summary.json).

    ``build_model(config, bundle)`` and ``load_dataset(data_config, seed)`` make the model and the data
    (the registry's and the data package's by default; tests pass stand-ins).
    """
    t = config.train
    started = time.time()
    resume_epoch = checkpoint_epoch(resume) if resume else 0
    chief = distribute.is_chief(strategy)
    own = run if chief else RunDir(os.path.join(run.path, "workers", str(strategy.cluster_resolver.task_id)))
    for change in own.check(config):
        print(f"{own.path}: config changed since the last session: {change}")
    keras.utils.set_random_seed(t.seed)
    policy = distribute.set_precision(t.mixed_precision, strategy)

    replicas = strategy.num_replicas_in_sync
    bundle = load_dataset(config.data, t.seed)
    inputs = make_inputs(config, bundle, strategy)
    print(f"{type(strategy).__name__}: {replicas} replica(s) x batch {config.data.batch_size} = global batch "
          f"{inputs.batch}; {inputs.steps} steps per epoch; precision {policy}; run directory {run.path}")

    with strategy.scope():
        model = compiled_model(config, bundle, inputs.valid, build_model)
    print(f"{type(model).__name__}: {model.count_params():,} parameters")
    own.write_config(config)  # only now: a run that fails before this leaves no config to block a fix

    initial_epoch = own.completed_epochs()
    if resume and initial_epoch:
        print(f"{own.path} has its own backup at epoch {initial_epoch}: continuing from it and ignoring "
              f"--resume {resume} (use a new --run-dir to start from that checkpoint)")
    elif resume:
        checkpoint_files.load(model, resume)
        initial_epoch = resume_epoch
        if t.reset_optimizer_on_resume:
            optimizers.reset_state(model.optimizer)
        restored = optimizers.replace_learning_rate(model.optimizer, t.learning_rate)
        print(f"resuming from {resume} after epoch {initial_epoch} at train.learning_rate {t.learning_rate:g} "
              f"(the checkpoint's rate was {restored:.3g})")

    status, message, history = fit(config, own, model, bundle, inputs, initial_epoch, chief)
    summary = _summary(own, status, message, history, started, model, replicas, inputs.batch, inputs.steps, policy)
    own.write_json("summary.json", summary)
    return summary


class Inputs(NamedTuple):
    """The batches of a run: training (bucketed, repeated), validation, steps per epoch, global batch."""

    train: tf.data.Dataset
    valid: tf.data.Dataset
    steps: int
    batch: int


def make_inputs(config: config_lib.Config, bundle, strategy: tf.distribute.Strategy) -> Inputs:
    """The training and validation batches of ``bundle`` at the global batch sizes of ``strategy``."""
    t = config.train
    batch = distribute.global_batch_size(config.data.batch_size, strategy)
    eval_batch = distribute.global_batch_size(config.data.eval_batch_size, strategy)
    steps = t.steps_per_epoch or math.ceil(bundle.num_examples("train") / batch)
    train_data = _sharded(bundle.batches("train", True, batch_size=batch, seed=t.seed, repeat=True), strategy)
    valid_data = _sharded(bundle.batches("valid", False, batch_size=eval_batch), strategy)
    return Inputs(train_data, valid_data, steps, batch)


def compiled_model(config: config_lib.Config, bundle, valid_data: tf.data.Dataset,
                   build_model: BuildModel = registry.build_model) -> SequenceModel:
    """The model of ``config``, compiled with its optimizer, built (weights and optimizer variables).

    Call it inside the strategy's scope.
    """
    model = build_model(config, bundle)
    model.compile(optimizer=optimizers.make_optimizer(config.train), jit_compile=config.train.jit_compile)
    ensure_built(model, valid_data)
    model.optimizer.build(model.trainable_variables)
    return model


def fit(config: config_lib.Config, run: RunDir, model: keras.Model, bundle, inputs: Inputs, initial_epoch: int,
        chief: bool, epochs: Optional[int] = None, callbacks: Sequence[keras.callbacks.Callback] = ()
        ) -> tuple[str, str, dict]:
    """``model.fit`` from ``initial_epoch`` to ``epochs`` (default ``train.epochs``) with the callbacks of
    :func:`make_callbacks`, then ``callbacks``.

    Returns (status, message, history): status "completed" or "stopped_non_finite" (with the message),
    and the Keras history of this session ({} when there was nothing left to train).
    """
    t = config.train
    epochs = epochs or t.epochs
    if initial_epoch >= epochs:
        print(f"{run.path} already finished {initial_epoch} of {epochs} epochs; nothing to train "
              "(raise train.epochs to continue it)")
        return "completed", "", {}
    try:
        history = model.fit(inputs.train, validation_data=inputs.valid, epochs=epochs, steps_per_epoch=inputs.steps,
                            initial_epoch=initial_epoch,
                            callbacks=make_callbacks(config, run, model, bundle, inputs, chief) + list(callbacks),
                            shuffle=False, verbose=t.verbose if chief else 0).history
    except cb.NonFiniteLossError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return "stopped_non_finite", str(err), {}
    return "completed", "", history


def make_callbacks(config: config_lib.Config, run: RunDir, model: keras.Model, bundle, inputs: "Inputs",
                   chief: bool) -> list:
    """The callbacks of one run, in the order :mod:`tflatent.training.callbacks` requires."""
    t = config.train
    annealing = cb.KLAnnealing(t.initial_kl_zero, t.kl_rampup_time, t.kl_floor, steps_per_epoch=inputs.steps)
    plateau = cb.PlateauLRDecay("val_loss", t.patience, t.lr_decay, active_after=annealing.done,
                                reset_optimizer=t.reset_optimizer_on_decay)
    callbacks = [annealing] if model.kl_weight is not None else []
    callbacks.append(cb.StopOnNonFinite())
    if t.nll_every:  # on fit's validation batches: global ones, sharded across workers
        callbacks.append(cb.ImportanceSampledNLL(inputs.valid, t.nll_every, t.nll_samples, t.nll_chunk,
                                                  jit_compile=t.jit_compile))
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard_dir, write_graph=False))
    callbacks.append(plateau)
    if chief:
        occasional = ["val_nll", "val_nats_per_frame" if bundle.is_music else "val_bpc"] if t.nll_every else []
        callbacks.append(cb.EpochLog(run.history_path, occasional))
        callbacks.append(cb.BestCheckpoint(run.best_path, monitor="val_nll" if t.nll_every else "val_loss"))
    callbacks.append(cb.RunBackup(run.backup_dir, {"plateau": plateau}, learning_rate=t.learning_rate))
    return callbacks


def _sharded(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """Shards by data across workers: the batches come from memory, not files (no FILE sharding)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _summary(run: RunDir, status: str, message: str, history: dict, started: float, model: keras.Model,
             replicas: int, batch: int, steps: int, policy: str) -> dict:
    previous = run.read_json("summary.json") or {}
    every_epoch = {key: values for key, values in history.items() if len(values) == len(history["loss"])}
    last = {key: values[-1] for key, values in every_epoch.items()} if history else previous.get("last_epoch", {})
    best = checkpoint_files.read_record(run.best_path)
    return {
        "status": status,
        "message": message,
        "epochs_completed": run.completed_epochs(),
        "last_epoch": last,
        "best": {key: best[key] for key in ("epoch", "monitor", "value")} if best else None,
        "best_checkpoint": run.best_checkpoint(),
        "session_seconds": round(time.time() - started, 1),
        "total_seconds": round(previous.get("total_seconds", 0.0) + time.time() - started, 1),
        "parameters": model.count_params(),
        "replicas": replicas,
        "global_batch_size": batch,
        "steps_per_epoch": steps,
        "precision": policy,
    }
