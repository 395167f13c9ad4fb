"""Train a model from a config: ``python -m tflatent.train --config configs/<name>.yaml``.

Options: ``--set section.key=value`` (repeatable) overrides config fields; ``--run-dir DIR`` chooses the
run directory (default ``<train.output_dir>/<train.run_name>``); ``--resume CKPT`` starts from a
checkpoint's weights, optimizer state and epoch.

What a run does (docs/reference.md §4): build the strategy, the data and, inside the strategy's scope, the model
and its optimizer (Adam 1e−3 or SGD 20, global-norm clipping 0.25); then ``Model.fit`` with the
callbacks of :mod:`tflatent.training.callbacks` (wired by :mod:`tflatent.training.fit`): KL annealing per
batch, LR ÷ 4 on a validation plateau once annealing is done, the importance-sampled validation NLL every
``nll_every`` epochs, the best checkpoint by it (by ``val_loss`` when it is off), TensorBoard, a CSV log,
Keras's progress bar, a backup every epoch, and a stop with a clear message on a non-finite loss.
It writes ``summary.json``
at the end. The layout of the run directory is in :mod:`tflatent.training.run_dir`. ``train.jit_compile``
compiles the train and test steps with XLA on any device; ``train.mixed_precision`` applies on GPUs
and TPUs only (:mod:`tflatent.training.distribute`).

Re-running the same command continues a killed run from its last backup and leaves a finished run
as it is. ``train`` settings may change between sessions and take effect (a changed
``train.learning_rate`` replaces the rate restored with the optimizer); ``data`` and ``model`` may not.
Every file is written whole or not at all, so a kill or a full disk loses at most the epoch in
progress: the error is one line naming the file and the space needed, and the same command
continues once space is freed. Expected faults (config, data, checkpoint, run directory, disk) are
one line on stderr with exit status 2. ``--resume`` applies only to a run directory without a backup;
the schedules continue from
the checkpoint's epoch (the reference's ``--load_dir`` also turned the LR schedule on at once) at
``train.learning_rate``, which replaces the rate loaded with the optimizer (the reference re-created it).
With ``train.reset_optimizer_on_resume`` the optimizer's moments are zeroed after loading, as the
reference's re-created optimizer had none.

Under ``multi_worker`` every worker runs this same command with its own ``TF_CONFIG``; worker 0 writes
the run directory, the others keep their backups in ``<run>/workers/<index>/``.
"""

from __future__ import annotations

import argparse
import sys

from tflatent import cli, cpu_threads, data
from tflatent import config as config_lib
from tflatent.models import registry
from tflatent.training import distribute
from tflatent.training.fit import BuildModel, LoadDataset, train
from tflatent.training.run_dir import RunDir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a YAML file in configs/")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--run-dir", help="the run directory (default: <train.output_dir>/<train.run_name>)")
    parser.add_argument("--resume", metavar="CKPT", help="a *.weights.h5 checkpoint to start from")
    return parser.parse_args(argv)


def main(argv=None, *, build_model: BuildModel = registry.build_model,
         load_dataset: LoadDataset = data.load_dataset) -> int:
    """Runs the command; ``build_model`` and ``load_dataset`` as in :func:`tflatent.training.fit.train`."""
    return cli.one_line_errors(_main, parse_args(argv), build_model, load_dataset)


def _main(args: argparse.Namespace, build_model: BuildModel, load_dataset: LoadDataset) -> int:
    config = config_lib.load(args.config, args.set)
    cpu_threads.configure(config)
    strategy = distribute.make_strategy(config.train.distribute, config.train.logical_cpus)
    run = RunDir(args.run_dir) if args.run_dir else RunDir.for_config(config)
    summary = train(config, run, strategy, resume=args.resume, build_model=build_model,
                    load_dataset=load_dataset)
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
