"""Self-attention against the LSTMs (issue 16's acceptance figures), pair by pair on this machine.

    python benchmarks/attention_speed.py [--match NAME] [--reps 7] [--warmups 2] [--rounds 2] [--quick]
                                         [--in-process] [--output FILE] [--data-dir DIR] [--tfds-dir DIR]

Pairs (baseline → candidate; goal: the candidate's speed-up = baseline s / candidate s):

* ``generate_b1``: IAF/SCF generation at batch 1, T 64 and 256, ``configs/ptb_iaf_scf.yaml`` (LSTM prior
  and BiLSTM emission) → ``configs/ptb_iaf_scf_attention.yaml`` (self-attention in q, p and the prior);
  goal ≥ 3× at T 256.
* ``generate_b16``: the LSTM baseline (``configs/ptb_lstm.yaml``) → attention IAF/SCF, both generating 16
  sequences of T 256; goal > 1×.
* ``train_jsb_af_af`` / ``train_jsb_iaf_scf``: one paper-size JSB training step on model_speed.py's
  ``equal57`` batch (the first 5 training sequences of length 57), compiled as ``Model.fit`` compiles it:
  ``jsb_chorales_af_af.yaml`` → ``jsb_chorales_af_af_attention.yaml`` and ``jsb_chorales_iaf_scf.yaml`` →
  ``jsb_chorales_iaf_scf_attention.yaml``; goal ≥ 2×. Each side runs as its config trains: the LSTM
  models without XLA (their fastest on a CPU), the attention ones with ``train.jit_compile`` on the
  batch padded to ``data.pad_to_multiple`` (16: T 57 → 64).
* ``train_jsb_iaf_scf_no_xla``: the same, the attention model without XLA or padding; and
  ``train_jsb_iaf_scf_lstm_xla``: the LSTM model with XLA against the attention one (as shipped). Measured,
  no goal: what XLA gives each.
* ``train_nottingham_iaf_scf`` / ``train_nottingham_iaf_scf_no_xla``: one CPU-width Nottingham IAF/SCF
  training step on a bucketed batch of mean length 385 (the 90th percentile; T 387, padded to 400 with XLA),
  ``nottingham_iaf_scf_small`` → ``nottingham_iaf_scf_attention_small``, as shipped and without XLA or
  padding; measured, no goal.

Models have untrained weights (generation runs the same operations whatever the weights). Generation is
``model.generate(lengths=[T] * B, seed=r)``, as ``model_speed.py`` times it; the batches, the timer,
the peak RSS and the machine description are ``model_speed.py``'s.

Timing: a generation pair builds both models in one process (both sample with TensorFlow's default
threads, as ``tflatent.generate`` does); after ``--warmups`` calls of each (the first includes tracing and
XLA compilation, reported as ``first_call_seconds``), ``--reps`` rounds each call the baseline once and the
candidate once, so that a change of load hits both. A training pair runs each side in processes of its
own, ``--rounds`` per side, alternating baseline and candidate processes, each timing ``--reps`` calls
after its warm-ups: so each side trains with the threads per op that ``tflatent.train`` chooses for its
config (``tflatent/cpu_threads.py``: one per op for the models with LSTMs on 2 cores, TensorFlow's
default for attention everywhere), which one process cannot give both. Per side: the median wall seconds
(with min and max) and the median process CPU seconds of its calls. ``speedup`` and ``cpu_speedup`` are
baseline / candidate; ``goal_met`` judges the wall speed-up (the acceptance's), with ``goal_met_cpu``
beside it (on a loaded machine wall time grows with the load, CPU time much less).

Memory: ``peak_rss_gb`` is the peak of the pair's process (generation: both models), of the larger
side's processes (training), or with ``--in-process`` (implied by ``--quick``; both sides then share this
process and the first side's threads) this process's running peak (``peak_rss_scope`` says which). The
1-minute load average before and after each case is recorded. ``--quick``: tiny models, T 4 and 8,
batches of about 20 steps, one call of each after one warm-up (a smoke test of the script, not a
measurement).

Prints one JSON object on stdout and a table on stderr; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # model_speed.py beside this file

import model_speed  # noqa: E402  (its batches, timer, peak RSS and machine description)

REPO = model_speed.REPO
# --quick: model_speed's tiny networks and a tiny transformer.
TINY_ATTENTION = ("model.attention_units=8", "model.attention_heads=2", "model.attention_feed_forward_units=8",
                  "model.attention_layers=1")
QUICK_LENGTHS = (4, 8)
NO_XLA = ("train.jit_compile=false", "data.pad_to_multiple=1")  # the attention configs' speed settings off


@dataclasses.dataclass(frozen=True)
class Side:
    """One model of a pair: a config in configs/ and overrides."""

    label: str
    config: str
    overrides: tuple = ()


@dataclasses.dataclass(frozen=True)
class Pair:
    """Baseline and candidate, measured alternately in one process."""

    name: str
    section: str  # "generate" or "train"
    baseline: Side
    candidate: Side
    goal: Optional[float]  # the wanted speed-up (baseline s / candidate s); None: measured, not judged
    goal_case: Optional[str]  # the case the goal is judged on
    batch_size: int = 1
    lengths: tuple = ()  # generate: the T measured
    case: model_speed.Case | None = None  # train: model_speed's batch


def pairs() -> list[Pair]:
    iaf_lstm = Side("IAF/SCF, LSTMs", "ptb_iaf_scf")
    iaf_attention = Side("IAF/SCF, attention", "ptb_iaf_scf_attention")
    equal57 = model_speed.Case("equal", 57)
    bucketed385 = model_speed.Case("bucketed", 385)  # Nottingham's 90th-percentile length
    notts_lstm = Side("IAF/SCF, LSTMs", "nottingham_iaf_scf_small")
    notts_attention = Side("IAF/SCF, attention", "nottingham_iaf_scf_attention_small")
    jsb_iaf_lstm = Side("IAF/SCF, LSTMs", "jsb_chorales_iaf_scf")
    jsb_iaf_attention = Side("IAF/SCF, attention", "jsb_chorales_iaf_scf_attention")
    return [
        Pair("generate_b1", "generate", iaf_lstm, iaf_attention, 3.0, "T256", batch_size=1, lengths=(64, 256)),
        Pair("generate_b16", "generate", Side("LSTM baseline", "ptb_lstm"), iaf_attention, 1.0, "T256",
             batch_size=16, lengths=(256,)),
        Pair("train_jsb_af_af", "train", Side("AF/AF, LSTMs", "jsb_chorales_af_af"),
             Side("AF/AF, attention", "jsb_chorales_af_af_attention"), 2.0, "equal57", batch_size=5, case=equal57),
        Pair("train_jsb_iaf_scf", "train", jsb_iaf_lstm, jsb_iaf_attention, 2.0, "equal57", batch_size=5,
             case=equal57),
        # What XLA gives each side: measured, no goal.
        Pair("train_jsb_iaf_scf_no_xla", "train", jsb_iaf_lstm,
             Side("IAF/SCF, attention, no XLA", "jsb_chorales_iaf_scf_attention", NO_XLA), None, None,
             batch_size=5, case=equal57),
        Pair("train_jsb_iaf_scf_lstm_xla", "train",
             Side("IAF/SCF, LSTMs, XLA", "jsb_chorales_iaf_scf", ("train.jit_compile=true",)), jsb_iaf_attention,
             None, None, batch_size=5, case=equal57),
        # Long sequences, where the IAF density's cached attention steps cost O(T_max) each: no goal.
        Pair("train_nottingham_iaf_scf", "train", notts_lstm, notts_attention, None, None, batch_size=5,
             case=bucketed385),
        Pair("train_nottingham_iaf_scf_no_xla", "train", notts_lstm,
             Side("IAF/SCF, attention, no XLA", "nottingham_iaf_scf_attention_small", NO_XLA), None, None,
             batch_size=5, case=bucketed385),
    ]


# ---------------------------------------------------------------------------------------------- one pair
def build(side: Side, args, bundles: dict, sampling: bool = False, model: bool = True):
    """(config, data bundle, model, threads per op in effect) of one side (``model=False``: no model, and
    the threads are left as they are)."""
    import keras

    from tflatent import config as config_lib
    from tflatent import cpu_threads
    from tflatent.data import load_dataset
    from tflatent.models.registry import build_model

    quick = (*model_speed.TINY, *TINY_ATTENTION) if args.quick else ()
    overrides = [f"data.data_dir={args.data_dir}", f"data.tfds_dir={args.tfds_dir}", *side.overrides, *quick]
    config = config_lib.load(str(REPO / "configs" / f"{side.config}.yaml"), overrides)
    # The threads per op that tflatent.train (or, sampling, tflatent.generate) chooses for this config,
    # set before anything starts TensorFlow's runtime (the data too). In a process with both sides the
    # first one built sets them for both (see the module docstring).
    threads = cpu_threads.configure(config, sampling=sampling) if model else None
    key = json.dumps(dataclasses.asdict(config.data), sort_keys=True)
    if key not in bundles:
        bundles[key] = load_dataset(config.data, seed=0)
    if not model:
        return config, bundles[key], None, None
    keras.utils.set_random_seed(0)
    return config, bundles[key], build_model(config, bundles[key]), threads


ROLES = ("baseline", "candidate")


def calls(pair: Pair, args, bundles: dict, roles=ROLES) -> list[tuple]:
    """[(case, batch description, {role: common fields}, one call per role)] of a pair, for ``roles``."""
    import numpy as np

    from tflatent.training import optimizers

    sides, fields = [], {}
    for role in roles:
        side = getattr(pair, role)
        config, bundle, model, threads = build(side, args, bundles, sampling=pair.section == "generate")
        fields[role] = {"label": side.label, "config": f"configs/{side.config}.yaml",
                        "overrides": list(side.overrides), "parameters": int(model.count_params()),
                        "networks": {part: getattr(config.model, f"{part}_network")
                                     for part in ("inference", "emission", "prior")}
                        if config.model.type == "flow" else "lstm baseline",
                        "intra_op_threads": threads}
        if pair.section == "train":
            model.compile(optimizer=optimizers.make_optimizer(config.train), jit_compile=config.train.jit_compile)
            model.optimizer.build(model.trainable_variables)
            model.make_train_function()
        sides.append((model, bundle, config))
    out = []
    if pair.section == "train":
        # The baseline's data (both sides train on the same sequences), also in a candidate's own process.
        source = sides[0][1] if roles[0] == "baseline" else build(pair.baseline, args, bundles, model=False)[1]
        batches = model_speed.pick_batches(source, pair.case, pair.batch_size, args.quick)

        def train_step(role, model, bundle, config):  # on the batches as the side's config pads them
            padded = [pad_time(x, lengths, config.data.pad_to_multiple, model.max_time, bundle.pad_id or 0)
                      for x, lengths in batches]
            fields[role]["padded_steps"] = int(padded[0][0].shape[1])
            return lambda: [float(model.train_function(iter([batch]))["loss"]) for batch in padded]

        steps = [train_step(role, *side) for role, side in zip(roles, sides)]
        out.append((pair.case.name, model_speed.describe(batches), fields, *steps))
        return out
    for length in (QUICK_LENGTHS if args.quick else pair.lengths):
        def generate(model, length=length):
            seeds = iter(range(10 ** 6))
            lengths = [length] * pair.batch_size
            return lambda: np.asarray(model.generate(lengths=lengths, seed=next(seeds))[0])

        out.append((f"T{length}", f"{pair.batch_size}x{length}", fields,
                    *(generate(model) for model, _, _ in sides)))
    return out


def pad_time(x, lengths, multiple: int, max_time: int, pad_value):
    """(x, lengths) with x's time axis padded up to a multiple of ``multiple`` (never beyond ``max_time``),
    as a run with ``data.pad_to_multiple`` batches it (``tflatent.data.pipeline.make_batches``)."""
    import tensorflow as tf

    from tflatent.data.pipeline import padded_length

    steps = int(x.shape[1])
    padded = int(padded_length(steps, multiple, max_time))
    extra = [[0, 0], [0, padded - steps]] + [[0, 0]] * (len(x.shape) - 2)
    return tf.pad(x, extra, constant_values=tf.cast(pad_value, x.dtype)), lengths


def alternate(baseline, candidate, warmups: int, reps: int) -> dict:
    """Warm-ups of each, then ``reps`` rounds of baseline then candidate: {side: model_speed.timed fields}."""
    firsts = {side: model_speed.timed(fn, 0, 1)["seconds"] for side, fn in (("baseline", baseline),
                                                                             ("candidate", candidate))}
    for _ in range(warmups - 1):
        baseline()
        candidate()
    rounds = {"baseline": [], "candidate": []}
    for _ in range(reps):
        for side, fn in (("baseline", baseline), ("candidate", candidate)):
            rounds[side].append(model_speed.timed(fn, 0, 1))
    out = {}
    for side, timings in rounds.items():
        walls = [t["seconds"] for t in timings]
        out[side] = {"seconds": statistics.median(walls), "seconds_min": min(walls), "seconds_max": max(walls),
                     "cpu_seconds": statistics.median(t["cpu_seconds"] for t in timings),
                     "first_call_seconds": firsts[side], "warmups": warmups, "repetitions": reps}
    return out


def judge(pair: Pair, case: str, batch: str, base: dict, cand: dict, args, load_before, load_after, peak_rss,
          scope: str) -> dict:
    """One case's result: both sides, the speed-ups and the goal."""
    speedup, cpu_speedup = base["seconds"] / cand["seconds"], base["cpu_seconds"] / cand["cpu_seconds"]
    judged = pair.goal is not None and (case == pair.goal_case or args.quick)
    result = {"name": f"{pair.name}/{case}", "pair": pair.name, "section": pair.section, "case": case,
              "batch": batch, "baseline": base, "candidate": cand, "speedup": speedup, "cpu_speedup": cpu_speedup,
              "goal_speedup": pair.goal if judged else None,
              "goal_met": speedup >= pair.goal if judged else None,
              "goal_met_cpu": cpu_speedup >= pair.goal if judged else None,
              "load_average_before": load_before, "load_average_after": load_after,
              "peak_rss_gb": peak_rss, "peak_rss_scope": scope}
    print(f"  {result['name']}: {base['seconds']:.3f} → {cand['seconds']:.3f} s ({speedup:.2f}×)",
          file=sys.stderr, flush=True)
    return result


def run_pair(pair: Pair, args) -> list[dict]:
    """A pair with both sides in this process, calls alternating (generation pairs; ``--in-process``)."""
    warmups, reps = (1, 1) if args.quick else (args.warmups, args.reps)
    results = []
    for case, batch, fields, baseline, candidate in calls(pair, args, {}):
        load_before = list(os.getloadavg())
        timing = alternate(baseline, candidate, warmups, reps)
        results.append(judge(pair, case, batch, {**fields["baseline"], **timing["baseline"]},
                             {**fields["candidate"], **timing["candidate"]}, args, load_before,
                             list(os.getloadavg()), model_speed.peak_rss_gb(),
                             "running process peak" if args.in_process else "process (both models of the pair)"))
    return results


def time_side(pair: Pair, role: str, args) -> list[dict]:
    """One side of a pair in this process: per case, its fields and ``--warmups`` + ``--reps`` timed calls."""
    out = []
    for case, batch, fields, fn in calls(pair, args, {}, roles=(role,)):
        load_before = list(os.getloadavg())
        first = model_speed.timed(fn, 0, 1)["seconds"]
        for _ in range(args.warmups - 1):
            fn()
        timings = [model_speed.timed(fn, 0, 1) for _ in range(args.reps)]
        out.append({"case": case, "batch": batch, "fields": fields[role], "first_call_seconds": first,
                    "seconds": [t["seconds"] for t in timings], "cpu_seconds": [t["cpu_seconds"] for t in timings],
                    "peak_rss_gb": model_speed.peak_rss_gb(), "load_average_before": load_before,
                    "load_average_after": list(os.getloadavg())})
    return out


def run_pair_by_side(pair: Pair, argv: list[str], args) -> list[dict]:
    """A training pair with each side in processes of its own, ``--rounds`` each, alternating (baseline,
    candidate, baseline, ...): each side trains with the threads per op ``tflatent.train`` chooses for
    its config, which one process cannot give both (the LSTM models one per op, the attention ones
    TensorFlow's default)."""
    runs = {role: [] for role in ROLES}
    for _ in range(args.rounds):
        for role in ROLES:
            done = subprocess.run([sys.executable, __file__, "--pair", pair.name, "--side", role, *argv],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                raise RuntimeError(f"pair {pair.name}, {role}, failed:\n{done.stderr[-4000:]}")
            runs[role].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = []
    for index, first in enumerate(runs["baseline"][0]):
        sides = {}
        for role in ROLES:
            cases = [run[index] for run in runs[role]]
            walls = [w for c in cases for w in c["seconds"]]
            sides[role] = {**cases[0]["fields"], "seconds": statistics.median(walls), "seconds_min": min(walls),
                           "seconds_max": max(walls),
                           "cpu_seconds": statistics.median(w for c in cases for w in c["cpu_seconds"]),
                           "first_call_seconds": cases[0]["first_call_seconds"], "warmups": args.warmups,
                           "repetitions": len(walls), "processes": len(cases),
                           "peak_rss_gb": max(c["peak_rss_gb"] for c in cases)}
        every = [run[index] for role in ROLES for run in runs[role]]
        results.append(judge(pair, first["case"], first["batch"], sides["baseline"], sides["candidate"], args,
                             load_before=every[0]["load_average_before"],
                             load_after=every[-1]["load_average_after"],
                             peak_rss=max(c["peak_rss_gb"] for c in every), scope="the larger side's process"))
    return results


def run_pair_in_subprocess(pair: Pair, argv: list[str]) -> list[dict]:
    done = subprocess.run([sys.executable, __file__, "--pair", pair.name, *argv], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"pair {pair.name} failed:\n{done.stderr[-4000:]}")
    sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if line.startswith("  ")))
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def table(results: list[dict]) -> str:
    header = (f"{'case':28s} {'batch':10s} {'LSTM s':>8s} {'attn s':>8s} {'LSTM cpu':>8s} {'attn cpu':>8s} "
              f"{'speedup':>7s} {'cpu x':>6s} {'goal':>5s} {'met':>4s} {'RSS GB':>6s} {'load':>5s}")
    lines = [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:28s} ERROR {r['error'].splitlines()[-1][:80]}")
            continue
        goal = "" if r["goal_speedup"] is None else f"{r['goal_speedup']:g}×"
        met = "" if r["goal_met"] is None else ("yes" if r["goal_met"] else "no")
        lines.append(f"{r['name']:28s} {r['batch']:10s} {r['baseline']['seconds']:8.3f} "
                     f"{r['candidate']['seconds']:8.3f} {r['baseline']['cpu_seconds']:8.3f} "
                     f"{r['candidate']['cpu_seconds']:8.3f} {r['speedup']:7.2f} {r['cpu_speedup']:6.2f} "
                     f"{goal:>5s} {met:>4s} {r['peak_rss_gb']:6.2f} {r['load_average_before'][0]:5.1f}")
    lines.append("speedup = baseline (LSTM) s / attention s, medians of alternating calls; load = 1-min average "
                 "before the case")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TFLATENT_DATA_DIR") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--match", default="", help="run only the pairs whose name contains this text "
                                                    "(or one of several, comma-separated)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny models, one call of each")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds (one call of each model) per case")
    parser.add_argument("--warmups", type=int, default=2, help="untimed calls of each model before them")
    parser.add_argument("--in-process", action="store_true",
                        help="run every pair in this process (peak RSS is then this process's running peak)")
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--tfds-dir", default=os.path.join(tempfile.gettempdir(), "tflatent_benchmark_tfds"))
    parser.add_argument("--rounds", type=int, default=2,
                        help="training pairs: processes per side, alternating (each times --reps calls)")
    parser.add_argument("--pair", help=argparse.SUPPRESS)  # internal: run one pair, print its results
    parser.add_argument("--side", choices=ROLES, help=argparse.SUPPRESS)  # internal: one side of a pair
    args = parser.parse_args(argv)
    args.in_process = args.in_process or args.quick
    if args.reps < 1 or args.warmups < 1 or args.rounds < 1:
        parser.error("--reps, --warmups and --rounds must be >= 1 (the first warm-up traces and compiles)")
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    by_name = {pair.name: pair for pair in pairs()}
    if args.pair:
        with contextlib.redirect_stdout(sys.stderr):
            results = time_side(by_name[args.pair], args.side, args) if args.side else run_pair(by_name[args.pair],
                                                                                                  args)
        print(json.dumps(results))
        return {}
    selected = [pair for pair in by_name.values() if any(text in pair.name for text in args.match.split(","))]
    child_argv = [a for a in argv if a != "--in-process"]
    started = time.perf_counter()
    results = []
    for pair in selected:
        print(f"{pair.name} ...", file=sys.stderr, flush=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
                if args.in_process:
                    results += run_pair(pair, args)
                elif pair.section == "train":
                    results += run_pair_by_side(pair, child_argv, args)
                else:
                    results += run_pair_in_subprocess(pair, child_argv)
        except Exception as err:  # keep measuring the other pairs; the report shows the failure
            results.append({"name": pair.name, "pair": pair.name, "section": pair.section, "error": str(err)})

    return model_speed.report("attention_speed", argv, args, started, results, table(results))


if __name__ == "__main__":
    main()
