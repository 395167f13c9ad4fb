"""Train a model from a config: ``python -m tflatent.train --config configs/<name>.yaml``.

Options: ``--set section.key=value`` (repeatable) overrides config fields; ``--run-dir DIR`` chooses the
run directory (default ``<train.output_dir>/<train.run_name>``); ``--resume CKPT`` starts from a
checkpoint's weights, optimizer state and epoch.

What a run does (docs/reference.md §4): build the strategy, the data and, inside the strategy's scope, the model
and its optimizer (Adam 1e−3 or SGD 20, global-norm clipping 0.25); then ``Model.fit`` with the
callbacks of :mod:`tflatent.training.callbacks`: KL annealing per batch, LR ÷ 4 on a validation plateau once
annealing is done, the importance-sampled validation NLL every ``nll_every`` epochs, the best
checkpoint by it (by ``val_loss`` when it is off), TensorBoard, a CSV log, Keras's progress bar, a
backup every epoch, and a stop with a clear message on a non-finite loss. It writes ``summary.json``
at the end. The layout of the run directory is in :mod:`tflatent.training.run_dir`. ``train.jit_compile``
compiles the train and test steps with XLA on any device; ``train.mixed_precision`` applies on GPUs
and TPUs only (:mod:`tflatent.training.distribute`).

Re-running the same command continues a killed run from its last backup and leaves a finished run
as it is. ``--resume`` applies only to a run directory without a backup; the schedules continue from
the checkpoint's epoch (the reference's ``--load_dir`` also turned the LR schedule on at once).
With ``train.reset_optimizer_on_resume`` the optimizer's moments are zeroed after loading, as the
reference's re-created optimizer had none.

Under ``multi_worker`` every worker runs this same command with its own ``TF_CONFIG``; worker 0 writes
the run directory, the others keep their backups in ``<run>/workers/<index>/``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from typing import NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from tflatent.training import callbacks as cb
from tflatent import config as config_lib
from tflatent import data
from tflatent.training import distribute
from tflatent.training import optimizers
from tflatent.training.run_dir import RunDir, checkpoint_epoch, ensure_built


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a YAML file in configs/")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--run-dir", help="the run directory (default: <train.output_dir>/<train.run_name>)")
    parser.add_argument("--resume", metavar="CKPT", help="a *.weights.h5 checkpoint to start from")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = config_lib.load(args.config, args.set)
        strategy = distribute.make_strategy(config.train.distribute, config.train.logical_cpus)
        run = RunDir(args.run_dir) if args.run_dir else RunDir.for_config(config)
        summary = train(config, run, strategy, resume=args.resume)
    except (config_lib.ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "completed" else 1


def train(config: config_lib.Config, run: RunDir, strategy: tf.distribute.Strategy,
          resume: Optional[str] = None) -> dict:
    """Trains ``config`` into ``run`` under ``strategy``; returns the summary (also in summary.json)."""
    t = config.train
    started = time.time()
    resume_epoch = checkpoint_epoch(resume) if resume else 0
    chief = distribute.is_chief(strategy)
    own = run if chief else RunDir(os.path.join(run.path, "workers", str(strategy.cluster_resolver.task_id)))
    for change in own.prepare(config):
        print(f"{own.path}: config changed since the last session: {change}")
    keras.utils.set_random_seed(t.seed)
    policy = distribute.set_precision(t.mixed_precision, strategy)

    replicas = strategy.num_replicas_in_sync
    bundle = data.load_dataset(config.data, t.seed)
    inputs = make_inputs(config, bundle, strategy)
    print(f"{type(strategy).__name__}: {replicas} replica(s) x batch {config.data.batch_size} = global batch "
          f"{inputs.batch}; {inputs.steps} steps per epoch; precision {policy}; run directory {run.path}")

    with strategy.scope():
        model = compiled_model(config, bundle, inputs.valid)
    print(f"{type(model).__name__}: {model.count_params():,} parameters")

    initial_epoch = own.completed_epochs()
    if resume and initial_epoch:
        print(f"{own.path} has its own backup at epoch {initial_epoch}: continuing from it and ignoring "
              f"--resume {resume} (use a new --run-dir to start from that checkpoint)")
    elif resume:
        model.load_weights(resume)
        initial_epoch = resume_epoch
        if t.reset_optimizer_on_resume:
            optimizers.reset_state(model.optimizer)
        print(f"resuming from {resume} after epoch {initial_epoch}")

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


def compiled_model(config: config_lib.Config, bundle, valid_data: tf.data.Dataset) -> keras.Model:
    """The model of ``config``, compiled with its optimizer, built (weights and optimizer variables).

    Call it inside the strategy's scope.
    """
    model = importlib.import_module("tflatent.models.latent_flow").build_model(config, bundle)
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
                            callbacks=make_callbacks(config, run, model, bundle, inputs.steps, chief) + list(callbacks),
                            shuffle=False, verbose=t.verbose if chief else 0).history
    except cb.NonFiniteLossError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return "stopped_non_finite", str(err), {}
    return "completed", "", history


def make_callbacks(config: config_lib.Config, run: RunDir, model: keras.Model, bundle, steps: int,
                   chief: bool) -> list:
    """The callbacks of one run, in the order :mod:`tflatent.training.callbacks` requires."""
    t = config.train
    annealing = cb.KLAnnealing(t.initial_kl_zero, t.kl_rampup_time, t.kl_floor, steps_per_epoch=steps)
    plateau = cb.PlateauLRDecay("val_loss", t.patience, t.lr_decay, active_after=annealing.done,
                                reset_optimizer=t.reset_optimizer_on_decay)
    callbacks = [annealing] if getattr(model, "beta", None) is not None else []
    callbacks.append(cb.StopOnNonFinite())
    if t.nll_every:
        nll_data = bundle.batches("valid", False, batch_size=config.data.eval_batch_size)
        callbacks.append(cb.ImportanceSampledNLL(nll_data, t.nll_every, t.nll_samples, t.nll_chunk))
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard_dir, write_graph=False))
    callbacks.append(plateau)
    if chief:
        occasional = ["val_nll", "val_nats_per_frame" if bundle.is_music else "val_bpc"] if t.nll_every else []
        callbacks.append(cb.EpochLog(run.history_path, occasional))
        callbacks.append(cb.BestCheckpoint(run.best_path, monitor="val_nll" if t.nll_every else "val_loss"))
    callbacks.append(cb.RunBackup(run.backup_dir, {"plateau": plateau}))
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
    best = cb.read_record(run.best_path)
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


if __name__ == "__main__":
    sys.exit(main())
