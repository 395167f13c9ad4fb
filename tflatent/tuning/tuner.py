"""Hyper-parameter search with KerasTuner: ``python -m tflatent.tune --config C --space S``.

Options: ``--tuner random|bayesian|hyperband`` and ``--trials N`` (default: the space file's, else
random and 10), ``--executions-per-trial N`` (models trained per trial from seeds ``train.seed + k``;
the trial scores their mean), ``--time-budget SECONDS``, ``--dir DIR`` (default
``<train.output_dir>/tune/<run_name>-<space name>``) and ``--set section.key=value`` overrides of the
base config. The space file format is in :mod:`tflatent.tuning.search_space`.

A trial is the base config with the space's fixed values and the sampled values (a combination that
breaks a constraint between fields fails the trial with the reason), built under the config's
``train.distribute`` strategy and trained as ``tflatent.train`` trains, with its callbacks (KL
annealing, LR plateau decay, importance-sampled validation NLL, non-finite stop, logs, best
checkpoint, backup). Each execution of a trial is a run directory (``tflatent.training.run_dir``), so
``python -m tflatent.evaluate --run`` works on it.

The objective ``kt.Objective("val_nll", "min")`` is the importance-sampled validation NLL, or the
validation loss when ``train.nll_every`` is 0 (or the space says ``objective: val_loss``). A trial
scores its best epoch, as the best checkpoint of a training run does; ``val_loss`` counts only
epochs at β = 1, since during KL annealing the loss is no bound. Hyperband trains trials for as few
as one epoch, so it needs ``train.nll_every: 1``; it trains up to ``train.epochs`` and continues the
promising trials from their checkpoints (the LR plateau state starts afresh in each round).

Resuming: the same command continues an interrupted search in the same directory. Finished trials
are never run again; a trial interrupted while running is run again under the same id and values,
each execution continuing from its last completed epoch. The time budget counts from the start of
each session: once spent, no new trial starts, and the running one finishes. ``--trials`` may be
raised to extend a finished search; a different base config, space or tuner in the same directory
is an error.

Layout of ``DIR``::

    search.json                 the base config, space, tuner and objective of this search
    tuner/oracle.json           KerasTuner's state
    tuner/trial_<id>/trial.json KerasTuner's record: values, status, score
    tuner/trial_<id>/execution<k>/   a run directory: config.yaml, logs/history.csv, tensorboard/,
                                checkpoints/best.weights.h5 (+ .json), backup/
    trials.json, trials.csv     every trial: id, status, objective, values, run directories
    best_config.yaml            the best trial's full config, ready for ``python -m tflatent.train``

Under ``multi_worker`` every worker runs the same command; the oracle is seeded with ``train.seed``
so that the workers draw the same trials, and the workers other than the chief keep their state in
``DIR/workers/<index>``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Optional

import keras
import keras_tuner as kt
import tensorflow as tf

from tflatent import cli, cpu_threads, data
from tflatent import config as config_lib
from tflatent.json_files import read_json, write_json
from tflatent.training import distribute
from tflatent.training import fit as fit_lib
from tflatent.training.run_dir import RunDir, diff
from tflatent.tuning import search_space

PROJECT = "tuner"
DEFAULT_TRIALS = 10
HYPERBAND_FACTOR = 3
TABLE_ROWS = 10
STATUS = kt.engine.trial.TrialStatus


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the base config, a YAML file in configs/")
    parser.add_argument("--space", required=True, help="the search space, a YAML file in configs/spaces/")
    parser.add_argument("--tuner", choices=search_space.TUNERS, help="default: the space's, else random")
    parser.add_argument("--trials", type=int, help=f"trials in all (default: the space's max_trials, else "
                        f"{DEFAULT_TRIALS}; a cap for hyperband)")
    parser.add_argument("--executions-per-trial", type=int, default=1, help="models trained per trial")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="start no new trial after this many seconds (the running one finishes)")
    parser.add_argument("--dir", help="the search directory (default: <train.output_dir>/tune/<run>-<space>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a field of the base config (repeatable), e.g. --set train.epochs=3")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    directory = args.dir
    try:
        for flag, value in (("--trials", args.trials), ("--executions-per-trial", args.executions_per_trial)):
            if value is not None and value < 1:
                raise config_lib.ConfigError(f"{flag} = {value} must be >= 1")
        config = config_lib.load(args.config, args.set)
        cpu_threads.configure(config)
        strategy = distribute.make_strategy(config.train.distribute, config.train.logical_cpus)
        space = search_space.load(args.space)
        space_name = os.path.splitext(os.path.basename(args.space))[0]
        directory = directory or os.path.join(config.train.output_dir, "tune", f"{config.train.run_name}-{space_name}")
        result = search(config, space, strategy, directory, tuner=args.tuner, trials=args.trials,
                        executions=args.executions_per_trial, time_budget=args.time_budget)
    except cli.EXPECTED as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished trials are saved in {directory}; re-run the same command to continue "
              "(the interrupted trial runs again, each execution from its last completed epoch)", file=sys.stderr)
        return 130
    return 0 if result["best_trial"] is not None else 1


def search(config: config_lib.Config, space: search_space.SearchSpace, strategy: tf.distribute.Strategy,
           directory: str, tuner: Optional[str] = None, trials: Optional[int] = None, executions: int = 1,
           time_budget: Optional[float] = None) -> dict:
    """Runs (or continues) the search in ``directory``; prints and writes the results; returns a summary."""
    base = space.apply(config, {}, source="the base config with the space's fixed values")
    tuner_name = tuner or space.tuner or "random"
    max_trials = trials or space.max_trials or (None if tuner_name == "hyperband" else DEFAULT_TRIALS)
    objective = objective_for(base, space)
    problem = objective_problem(base, objective, 1 if tuner_name == "hyperband" else base.train.epochs)
    if problem:
        raise config_lib.ConfigError(problem + (" (hyperband trains some trials for one epoch)"
                                                if tuner_name == "hyperband" else ""))
    if not distribute.is_chief(strategy):
        directory = os.path.join(directory, "workers", str(strategy.cluster_resolver.task_id))
    _check_record(directory, {"tuner": tuner_name, "objective": objective, "space": space.to_dict(),
                              "config": base.to_dict()})

    hypermodel = LatentFlowHyperModel(base, space, strategy, objective)
    search_tuner = make_tuner(tuner_name, hypermodel, objective, directory, max_trials, executions, strategy,
                              base.train.seed, base.train.epochs)
    print(f"{tuner_name} search over {', '.join(space.fields)} in {directory}: "
          + (f"{max_trials} trials" if max_trials else "the trials of Hyperband's brackets")
          + f", {executions} execution(s) each; objective {_describe(objective, base, space)}")
    stopped = search_tuner.search_for(time_budget)
    if stopped:
        print(stopped)
    return report(search_tuner, hypermodel, directory, stopped)


def _describe(objective: str, config: config_lib.Config, space: search_space.SearchSpace) -> str:
    if objective == "val_nll":
        what = f"importance-sampled validation NLL, every {config.train.nll_every} epoch(s)"
    else:
        why = "as the space asks" if space.objective else "train.nll_every is 0"
        what = f"the validation loss at epochs with KL weight 1; {why}"
    return f"{objective} ({what}); a trial scores its best epoch"


def objective_for(config: config_lib.Config, space: search_space.SearchSpace) -> str:
    """The space's objective, else val_nll, or val_loss when the config never computes the IS NLL."""
    return space.objective or ("val_nll" if config.train.nll_every else "val_loss")


def objective_problem(config: config_lib.Config, objective: str, epochs: int) -> Optional[str]:
    """Why no epoch of a trial of ``epochs`` epochs of ``config`` would report ``objective`` (None: it would)."""
    t = config.train
    if objective == "val_nll" and not t.nll_every:
        return ("the objective val_nll needs the importance-sampled NLL, but train.nll_every is 0; set "
                "train.nll_every (e.g. --set train.nll_every=1) or objective: val_loss in the space")
    if objective == "val_nll" and t.nll_every > epochs:
        return (f"train.nll_every = {t.nll_every} exceeds the {epochs} epoch(s) of a trial, so no epoch reports "
                f"val_nll; set train.nll_every <= {epochs}")
    annealed = t.initial_kl_zero + t.kl_rampup_time
    if objective == "val_loss" and config.model.type == "flow" and annealed and annealed >= epochs:
        return (f"the objective val_loss counts only epochs at KL weight 1, which starts at epoch {annealed + 1} "
                f"(train.initial_kl_zero + train.kl_rampup_time + 1), after the {epochs} epoch(s) of a trial; "
                "shorten the annealing, train longer, or use objective: val_nll")
    return None


def objective_value(history: dict, objective: str) -> Optional[float]:
    """The lowest finite value of ``objective`` in ``history`` ({metric: values of the epochs that logged it}).

    ``val_loss`` counts only epochs at KL weight ``beta`` 1, where the loss bounds the NLL.
    """
    values = history.get(objective, [])
    if objective == "val_loss" and "beta" in history:
        values = [value for value, beta in zip(values, history["beta"]) if beta == 1.0]
    finite = [value for value in values if math.isfinite(value)]
    return min(finite) if finite else None


def read_history(path: str) -> dict:
    """A run's ``history.csv`` (every session) as {metric: values of the epochs that logged it}."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = rows[0].keys() if rows else ()
    return {key: [float(row[key]) for row in rows if row[key] not in ("", "NA")] for key in keys if key != "epoch"}


class LatentFlowHyperModel(kt.HyperModel):
    """One trial: the base config with the sampled values, built and trained as ``tflatent.train`` does.

    ``build(hp)`` runs inside the tuner's strategy scope (KerasTuner enters it) and returns the compiled,
    built model of the trial's config, initialised from ``train.seed + k`` for execution k.
    ``fit(hp, model, callbacks, epochs, initial_epoch)`` trains it with :func:`tflatent.training.fit.fit` in
    the run directory ``<trial>/execution<k>`` (KerasTuner's callbacks after the run's own; Hyperband
    passes ``epochs`` and ``initial_epoch``) and returns ``{objective: best value}``.

    Args:
      config: the base config, with the space's fixed values.
      space: the search space.
      strategy: the ``tf.distribute`` strategy of the search.
      objective: ``val_nll`` or ``val_loss``.
    """

    def __init__(self, config: config_lib.Config, space: search_space.SearchSpace,
                 strategy: tf.distribute.Strategy, objective: str):
        super().__init__(name="tflatent")
        self.config = config
        self.space = space
        self.strategy = strategy
        self.objective = objective
        self._data_cache = {}
        self._trial_dir = None
        self._execution = 0

    def declare_hyperparameters(self, hp):
        self.space.sample(hp)

    def begin_trial(self, trial_dir: str) -> None:
        """Called by the tuner before a trial's executions: where their run directories go."""
        self._trial_dir, self._execution = trial_dir, 0

    def trial_config(self, hp: kt.HyperParameters) -> config_lib.Config:
        """The config of the values in ``hp``; a combination that breaks a constraint fails the trial."""
        values = self.space.sample(hp)
        try:
            return self.space.apply(self.config, values, source="the trial's config")
        except config_lib.ConfigError as err:
            raise kt.errors.FailedTrialError(f"the values {values} give an invalid config: {err}") from None

    def build(self, hp):
        config = self.trial_config(hp)
        keras.utils.set_random_seed(config.train.seed + self._execution)
        distribute.set_precision(config.train.mixed_precision, self.strategy)
        bundle, inputs = self._data(config)
        return fit_lib.compiled_model(config, bundle, inputs.valid)

    def fit(self, hp, model, callbacks=(), epochs: Optional[int] = None, initial_epoch: int = 0):
        config = self.trial_config(hp)
        problem = objective_problem(config, self.objective, (epochs or config.train.epochs) - initial_epoch)
        if problem:
            raise kt.errors.FailedTrialError(problem)
        run = RunDir(os.path.join(self._trial_dir, f"execution{self._execution}"))
        self._execution += 1
        run.prepare(config)
        bundle, inputs = self._data(config)
        chief = distribute.is_chief(self.strategy)
        initial_epoch = max(initial_epoch, run.completed_epochs())  # a re-run continues from the backup
        status, message, history = fit_lib.fit(config, run, model, bundle, inputs, initial_epoch, chief,
                                               epochs=epochs, callbacks=callbacks)
        if status != "completed":
            raise kt.errors.FailedTrialError(message)
        value = objective_value(read_history(run.history_path) if chief else history, self.objective)
        if value is None:
            raise kt.errors.FailedTrialError(f"no epoch of {run.path} reported a finite {self.objective}")
        return {self.objective: value}

    def _data(self, config: config_lib.Config) -> tuple:
        """(bundle, :class:`tflatent.training.fit.Inputs`) of ``config``, made once for the trials sharing them."""
        key = json.dumps([dataclasses.asdict(config.data), config.train.seed, config.train.steps_per_epoch])
        if key not in self._data_cache:
            bundle = data.load_dataset(config.data, config.train.seed)
            self._data_cache[key] = bundle, fit_lib.make_inputs(config, bundle, self.strategy)
        return self._data_cache[key]


class _BudgetSpent(Exception):
    """The time budget ran out before a new trial."""


class _Search:
    """What this module adds to KerasTuner's tuners (mixed in before them).

    * The space is declared without building a model (KerasTuner builds one to discover conditional
      hyper-parameters, which a space file does not have).
    * :meth:`search_for` stops starting trials once a time budget is spent.
    * Each trial tells the hypermodel its directory, and a failed trial's reason is printed.
    """

    _deadline: Optional[float] = None

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def search_for(self, seconds: Optional[float]) -> Optional[str]:
        """Runs trials until the oracle stops, or starts none after ``seconds``; returns why it stopped early.

        None when the oracle ran all its trials, else a message saying that the time budget was spent.
        """
        started = time.monotonic()
        self._deadline = None if seconds is None else started + seconds
        try:
            self.search()
        except _BudgetSpent:
            return (f"time budget of {seconds:g} s spent after {time.monotonic() - started:.0f} s: no new trial "
                    "started (a running trial was allowed to finish); re-run the same command to continue")
        return None

    def pre_create_trial(self):
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise _BudgetSpent

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.begin_trial(self.get_trial_dir(trial.trial_id))
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        if trial.status == STATUS.FAILED:
            print(f"Trial {trial.trial_id} failed: {_reason(trial)}", file=sys.stderr)
        super().on_trial_end(trial)


class RandomSearch(_Search, kt.RandomSearch):
    """KerasTuner's random search with :class:`_Search`."""


class BayesianOptimization(_Search, kt.BayesianOptimization):
    """KerasTuner's Gaussian-process Bayesian optimisation with :class:`_Search`."""


class Hyperband(_Search, kt.Hyperband):
    """KerasTuner's Hyperband with :class:`_Search` (its ``build_from_config`` call before loading a
    previous round's weights is a no-op on the already built model: ``SequenceModel.build_from_config``)."""


def make_tuner(name: str, hypermodel: LatentFlowHyperModel, objective: str, directory: str,
               max_trials: Optional[int], executions: int, strategy: tf.distribute.Strategy, seed: int,
               max_epochs: int) -> _Search:
    """The tuner ``name`` over ``hypermodel``, reloading the search in ``directory`` when there is one."""
    # A failed trial (a combination that breaks a constraint, a non-finite loss) does not stop the search:
    # KerasTuner's stop after 3 consecutive failures would leave the third one "RUNNING" on disk.
    common = dict(hypermodel=hypermodel, objective=kt.Objective(objective, "min"), seed=seed,
                  directory=directory, project_name=PROJECT, overwrite=False, executions_per_trial=executions,
                  distribution_strategy=strategy, max_consecutive_failed_trials=None)
    if name == "hyperband":
        tuner = Hyperband(max_epochs=max_epochs, factor=HYPERBAND_FACTOR, **common)
        tuner.oracle.max_trials = max_trials
        return tuner
    tuner_class = {"random": RandomSearch, "bayesian": BayesianOptimization}[name]
    return tuner_class(max_trials=max_trials, **common)


def _check_record(directory: str, record: dict) -> None:
    """Writes ``search.json``, or checks that the search already in ``directory`` is this one."""
    path = os.path.join(directory, "search.json")
    record = json.loads(json.dumps(record))  # as the file holds it (tuples become lists)
    old = read_json(path)
    if old is None:
        os.makedirs(directory, exist_ok=True)
        write_json(path, record)
        return
    differences = [f"{key}: {old[key]!r} -> {record[key]!r}" for key in ("tuner", "objective")
                   if old[key] != record[key]]
    if old["space"] != record["space"]:
        differences.append("the search space")
    differences += diff(config_lib.from_dict(old["config"]), config_lib.from_dict(record["config"]))
    if differences:
        raise config_lib.ConfigError(f"{directory} holds another search ({'; '.join(differences)}). Re-run it "
                                     "with its own config, space and tuner, or use another --dir")


def _reason(trial) -> str:
    """The last line of a failed trial's traceback: the error and its message."""
    lines = [line for line in (trial.message or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def report(tuner: _Search, hypermodel: LatentFlowHyperModel, directory: str, stopped: Optional[str]) -> dict:
    """Prints the best trials, writes ``trials.json``, ``trials.csv`` and ``best_config.yaml``; returns a summary."""
    objective = hypermodel.objective
    trials = [tuner.oracle.trials[trial_id] for trial_id in tuner.oracle.start_order]
    completed = sorted((t for t in trials if t.status == STATUS.COMPLETED), key=lambda t: t.score)
    best = completed[0] if completed else None
    records = [{"trial_id": t.trial_id, "status": t.status, objective: t.score, "values": t.hyperparameters.values,
                "runs": _runs(tuner.get_trial_dir(t.trial_id)),
                "message": _reason(t) if t.status == STATUS.FAILED else ""} for t in trials]
    write_json(os.path.join(directory, "trials.json"),
                {"objective": objective, "best_trial": best and best.trial_id, "trials": records})
    # Searched fields, then Hyperband's own values (tuner/epochs, tuner/initial_epoch, ...) if any.
    columns = hypermodel.space.fields + sorted({k for t in trials for k in t.hyperparameters.values if "/" in k})
    with open(os.path.join(directory, "trials.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "status", objective] + columns)
        writer.writerows([t.trial_id, t.status, t.score] + [t.hyperparameters.values.get(k) for k in columns]
                         for t in trials)

    failed = sum(t.status == STATUS.FAILED for t in trials)
    print(f"\n{len(completed)} of {len(trials)} trial(s) completed, {failed} failed", end="")
    summary = {"best_trial": None, "objective": objective, "value": None, "best_config": None,
               "completed": len(completed), "failed": failed, "stopped": stopped}
    if best is None:
        print(f"; no trial to report (see the messages above and {directory}/trials.json)")
        return summary
    print(f"; the best {min(TABLE_ROWS, len(completed))} by {objective}:")
    print(_table(["trial", objective] + columns,
                 [[t.trial_id, t.score] + [t.hyperparameters.values.get(k) for k in columns]
                  for t in completed[:TABLE_ROWS]]))

    path = os.path.join(directory, "best_config.yaml")
    best_config = hypermodel.trial_config(best.hyperparameters)
    best_config.train.run_name = f"{hypermodel.config.train.run_name}_tuned"
    with open(path, "w") as f:
        f.write(f"# The best trial ({best.trial_id}, {objective} = {best.score:.6g}) of the search in {directory}.\n"
                f"# Train it: python -m tflatent.train --config {path}\n" + best_config.to_yaml())
    config_lib.load(path)  # it loads and validates as written
    print(f"best trial {best.trial_id}: {objective} = {best.score:.6g}; its config: {path}\n"
          f"its run(s), for python -m tflatent.evaluate --run: {', '.join(_runs(tuner.get_trial_dir(best.trial_id)))}\n"
          f"every trial: {directory}/trials.json and trials.csv")
    summary.update(best_trial=best.trial_id, value=best.score, best_config=path)
    return summary


def _runs(trial_dir: str) -> list[str]:
    """The run directories of a trial's executions."""
    return sorted(os.path.join(trial_dir, name) for name in os.listdir(trial_dir) if name.startswith("execution"))


def _table(header: list, rows: list) -> str:
    cells = [[_cell(value) for value in row] for row in [header] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join(lines[:1] + ["  ".join("-" * width for width in widths)] + lines[1:])


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
