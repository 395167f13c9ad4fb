"""Pieces shared by the command-line entry points: argument checks and opening a trained run."""

from __future__ import annotations

import sys
from typing import Callable, NamedTuple, Optional

import keras

from tflatent import config as config_lib
from tflatent import cpu_threads, data
from tflatent.errors import ExpectedError
from tflatent.models import registry
from tflatent.training.run_dir import RunDir, restore_model

EXPECTED = (ExpectedError, FileNotFoundError)


def one_line_errors(main: Callable[..., int], *args) -> int:
    """``main(*args)``, with an expected fault (:class:`tflatent.errors.ExpectedError`, a missing file)
    printed as one line on stderr and exit status 2; any other exception is a bug and keeps its traceback."""
    try:
        return main(*args)
    except EXPECTED as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2


def argument_problems(args, at_least_one=(), positive=()) -> list[str]:
    """Messages for the given (optional) arguments that are < 1 (integers) or ≤ 0 (numbers)."""
    problems = []
    for name in at_least_one:
        value = getattr(args, name)
        if value is not None and value < 1:
            problems.append(f"--{name.replace('_', '-')} = {value} must be >= 1")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            problems.append(f"--{name.replace('_', '-')} = {value} must be > 0")
    return problems


class TrainedRun(NamedTuple):
    run: RunDir
    config: config_lib.Config
    bundle: data.DataBundle
    model: keras.Model
    checkpoint: str


def open_run(path: str, checkpoint: str = "best", *, build_model=registry.build_model,
             load_dataset=data.load_dataset, sampling: bool = False) -> TrainedRun:
    """A run directory's config, data and model with the weights of ``checkpoint`` (best, latest or a file).

    ``build_model(config, bundle)`` and ``load_dataset(data_config, seed)`` make the model and the data
    (the registry's and the data package's by default; tests pass stand-ins). First it sets the process's
    CPU threads per op for the run (``tflatent.cpu_threads``; ``sampling``: for a process that only
    samples). Raises FileNotFoundError
    (naming what is missing) for a folder that is no run, a missing checkpoint or missing data files.
    """
    run = RunDir(path)
    config = run.load_config()
    cpu_threads.configure(config, sampling=sampling)
    bundle = load_dataset(config.data, config.train.seed)
    model, checkpoint_path = restore_model(run, bundle, checkpoint, build_model)
    return TrainedRun(run, config, bundle, model, checkpoint_path)


def open_checked_run(args, at_least_one=(), positive=(), **parts) -> Optional[TrainedRun]:
    """``open_run(args.run, args.checkpoint, **parts)`` after ``argument_problems``; None (with the problem
    on stderr, for the entry point to exit with status 2) when an argument is bad or the run cannot be
    opened. ``parts``: ``build_model``, ``load_dataset`` and ``sampling``, as in :func:`open_run`."""
    problems = argument_problems(args, at_least_one, positive)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return None
    try:
        return open_run(args.run, args.checkpoint, **parts)
    except EXPECTED as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return None
