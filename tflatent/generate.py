"""Sample from a trained run: ``python -m tflatent.generate --run runs/<name> --num N --out DIR``.

``--length T`` gives every sample T steps; without it the model draws the lengths from its p(T).
``--temperature`` scales the base noise (docs/reference.md §8.1), ``--seed`` makes the draw repeatable. Text
samples are printed and written to ``<out>/samples.txt``, one per line; music samples are written as
``<out>/sample_<i>.mid`` (``--seconds-per-frame``) and piano-roll pictures ``<out>/sample_<i>.png``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from tflatent import cli
from tflatent.data import pianoroll


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory written by tflatent.train")
    parser.add_argument("--checkpoint", default="best", help="best (default), latest, or a *.weights.h5 file")
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument("--length", type=int, help="steps per sample (default: drawn from p(T))")
    parser.add_argument("--temperature", type=float, default=1.0, help="scale of the base noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seconds-per-frame", type=float, default=0.25, help="music: MIDI frame duration")
    return parser.parse_args(argv)


def main(argv=None, **parts) -> int:
    """Runs the command; ``parts`` (``build_model``, ``load_dataset``) as in :func:`tflatent.cli.open_run`."""
    return cli.one_line_errors(_main, parse_args(argv), parts)


def _main(args: argparse.Namespace, parts: dict) -> int:
    opened = cli.open_checked_run(args, at_least_one=("num", "length"), positive=("temperature",), sampling=True,
                                  **parts)
    if opened is None:
        return 2
    run, _, bundle, model, _ = opened
    if args.length is not None and args.length > bundle.max_time:
        print(f"error: --length = {args.length} exceeds the model's max_time = {bundle.max_time}",
              file=sys.stderr)
        return 2
    lengths = None if args.length is None else np.full([args.num], args.length, np.int32)
    x, lengths = model.generate(lengths=lengths, num_samples=args.num, temperature=args.temperature,
                                seed=args.seed)
    x, lengths = np.asarray(x), np.asarray(lengths)
    os.makedirs(args.out, exist_ok=True)
    if bundle.is_music:
        for i, (roll, length) in enumerate(zip(x, lengths)):
            stem = os.path.join(args.out, f"sample_{i:03d}")
            pianoroll.write_midi(roll[:length], stem + ".mid", args.seconds_per_frame)
            pianoroll.plot(roll[:length], stem + ".png", title=f"{run.path}: sample {i} ({length} frames)")
            print(f"{stem}.mid  {stem}.png  ({length} frames)")
    else:
        texts = [bundle.vocabulary.decode(ids[:length]) for ids, length in zip(x, lengths)]
        with open(os.path.join(args.out, "samples.txt"), "w") as f:
            f.writelines(text + "\n" for text in texts)
        print("\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
