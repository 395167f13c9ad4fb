"""Evaluate a trained run: ``python -m tflatent.evaluate --run runs/<name> [--split test] [--samples K]``.

Computes the importance-sampled NLL (docs/reference.md §5.1) with K samples (default: the run's
``train.nll_samples``) on the test (or valid) split, with the checkpoint chosen by ``--checkpoint``
(``best``, the default, ``latest`` or a file), at KL weight 1. Reports nats per token normalised by
Σ(T + 1), bits per character (text) or nats per frame (music), and the ELBO with its reconstruction and
KL terms; prints them as a table and writes them to ``<run>/evaluation_<split>.json``. A run whose config
sets ``train.jit_compile`` is evaluated with XLA as well (recorded as ``jit_compile``): about twice as fast
for the attention IAF models on a CPU, with XLA's own random draws.
"""

from __future__ import annotations

import argparse
import sys
import time

from tflatent import cli

UNITS = {"nll": "nats per token, / Σ(T + 1)", "bpc": "bits per character", "nats_per_frame": "per frame",
         "elbo": "nats per token", "recon": "nats per token", "kl": "nats per token"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory written by tflatent.train")
    parser.add_argument("--checkpoint", default="best", help="best (default), latest, or a *.weights.h5 file")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument("--samples", type=int, help="importance samples K (default: train.nll_samples)")
    parser.add_argument("--chunk", type=int, help="samples per chunk (default: train.nll_chunk)")
    parser.add_argument("--batch-size", type=int, help="sequences per batch (default: data.eval_batch_size)")
    return parser.parse_args(argv)


def main(argv=None, **parts) -> int:
    """Runs the command; ``parts`` (``build_model``, ``load_dataset``) as in :func:`tflatent.cli.open_run`."""
    return cli.one_line_errors(_main, parse_args(argv), parts)


def _main(args: argparse.Namespace, parts: dict) -> int:
    opened = cli.open_checked_run(args, at_least_one=("samples", "chunk", "batch_size"), **parts)
    if opened is None:
        return 2
    run, config, bundle, model, checkpoint = opened
    samples = args.samples or config.train.nll_samples
    started = time.time()
    dataset = bundle.batches(args.split, False, batch_size=args.batch_size or config.data.eval_batch_size)
    result = model.evaluate_nll(dataset, num_samples=samples, chunk=args.chunk or config.train.nll_chunk,
                                jit_compile=config.train.jit_compile)
    record = {"run": run.path, "checkpoint": checkpoint, "split": args.split, "samples": samples,
              "jit_compile": config.train.jit_compile,
              **{key: float(value) for key, value in result.items()},
              "sequences": bundle.num_examples(args.split), "seconds": round(time.time() - started, 1)}
    path = run.write_json(f"evaluation_{args.split}.json", record)
    print(format_table(record))
    print(f"written to {path}")
    return 0


def format_table(record: dict) -> str:
    """The figures of an evaluation record as a two-column table."""
    rows = [("run", record["run"]), ("checkpoint", record["checkpoint"]),
            ("split", f"{record['split']} ({record['sequences']} sequences)"),
            ("importance samples", str(record["samples"]))]
    rows += [(key, f"{record[key]:.4f}  ({unit})") for key, unit in UNITS.items() if key in record]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    sys.exit(main())
