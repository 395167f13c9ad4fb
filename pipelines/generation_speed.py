"""Figure 7 of the paper: generation time against sequence length, LSTM baseline vs the flow models.

::

    python -m pipelines.generation_speed --scale cpu          # < 15 min on 2 CPU cores
    python -m pipelines.generation_speed --scale paper        # the full grid, 20 repetitions

For each task (text: the PTB models; music: the JSB models), model (LSTM baseline, IAF / SCF, AF / SCF,
AF / AF, and beyond the paper IAF / SCF with self-attention in q, p and the prior: issue 16), batch size
and length T, it times ``model.generate(lengths=[T] * B, seed=r)`` (the call behind
``python -m tflatent.generate``) ``reps`` times after one untimed warm-up call, which traces (and for the
LSTM, XLA-compiles) the function for that T and B; its time is recorded as ``first_call_seconds``. The
result is forced to host memory inside the timing. Reported: the mean and a 95 % confidence interval
(Student t over the repetitions), as in the paper's Figure 7 (20 generations per length).

The models are the paper-size configs (``configs/ptb_<model>.yaml``, ``configs/jsb_chorales_<model>.yaml``;
``iaf_scf_attention``: ``*_iaf_scf_attention.yaml``, d 256, 2 blocks, 4 heads, d_ff 1024) at both scales,
with untrained weights: generation runs the same operations whatever the weights, so its
time does not depend on them (the argmax / threshold decoding and the NLSq cubic solve do not branch
on values). ``--scale cpu`` only shrinks the grid (fewer lengths and repetitions). Once a model's next
call, extrapolated linearly in T from its mean time at the current length, would exceed
``--max-call-seconds``, its longer lengths are skipped (AF / AF samples each of the H latent dimensions
in turn and is far slower than the others). ``--set`` overrides apply to every model (tests use
them for tiny models).

Writes ``<out>/generation_speed.json`` and ``<out>/generation_speed.png`` (log-scale time against T, one
line per model with its confidence band; one panel per task and batch size) and prints, for each task and
batch size, the length from which IAF / SCF is faster than the LSTM baseline, if it is.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np
import scipy.stats

from pipelines import provenance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")
TASKS = {"text": "ptb", "music": "jsb_chorales"}
MODELS = ("lstm", "iaf_scf", "af_scf", "af_af", "iaf_scf_attention")
LABELS = {"lstm": "LSTM baseline", "iaf_scf": "IAF / SCF", "af_scf": "AF / SCF", "af_af": "AF / AF",
          "iaf_scf_attention": "IAF / SCF, attention"}
GRIDS = {  # per scale: lengths per task, repetitions, batch sizes, the per-call time limit (seconds)
    "paper": {"text": [5, 10, 25, 50, 100, 150, 200, 250, 288], "music": [5, 10, 25, 50, 100, 150, 180],
              "reps": 20, "batches": [1, 16], "max_call_seconds": 60.0},
    "cpu": {"text": [10, 50, 150, 288], "music": [10, 60, 180],
            "reps": 5, "batches": [1, 16], "max_call_seconds": 5.0},
}


def confidence_interval(times, level=0.95):
    """Half-width of the Student-t confidence interval of the mean of ``times`` (0 for one time)."""
    times = np.asarray(times, dtype=np.float64)
    if times.size < 2:
        return 0.0
    return float(scipy.stats.t.ppf(0.5 + level / 2, times.size - 1) * times.std(ddof=1) / np.sqrt(times.size))


def time_generation(model, length, batch, reps):
    """(first-call seconds, [seconds per repetition]) of ``model.generate`` for ``batch`` sequences of ``length``."""
    lengths = np.full([batch], length, np.int32)

    def call(seed):
        started = time.perf_counter()
        x, _ = model.generate(lengths=lengths, seed=seed)
        np.asarray(x)  # wait for the result
        return time.perf_counter() - started

    first = call(0)
    return first, [call(rep + 1) for rep in range(reps)]


def measure(model, lengths, batches, reps, max_call_seconds, label=""):
    """Times ``model.generate`` for every batch size and ascending length; returns (records, skipped).

    For a batch size, once the mean time at a length, scaled linearly to the next length, exceeds
    ``max_call_seconds``, the longer lengths are skipped and listed in ``skipped`` as {"batch", "lengths"}.
    """
    records, skipped = [], []
    for batch in batches:
        for length in lengths:
            first, times = time_generation(model, length, batch, reps)
            record = {"batch": batch, "length": length, "mean_seconds": float(np.mean(times)),
                      "ci95_seconds": confidence_interval(times), "median_seconds": float(np.median(times)),
                      "times": times, "first_call_seconds": first}
            records.append(record)
            print(f"{label} B={batch:<3d} T={length:<4d} {record['mean_seconds']:.4f} ± "
                  f"{record['ci95_seconds']:.4f} s (first call {first:.1f} s)", flush=True)
            longer = [t for t in lengths if t > length]
            expected = record["mean_seconds"] * longer[0] / length if longer else 0.0
            if expected > max_call_seconds:
                skipped.append({"batch": batch, "lengths": longer})
                print(f"{label} T={longer[0]} would take ~{expected:.1f} s > --max-call-seconds "
                      f"{max_call_seconds}: skipping T = {longer}", flush=True)
                break
    return records, skipped


def crossover(lengths, baseline, candidate):
    """Where ``candidate`` becomes faster than ``baseline`` for good, from mean times at ascending lengths.

    Returns {"first_faster_length", "last_slower_length", "interpolated_length"}: the first grid length
    from which the candidate is faster at every longer length, the grid length before it, and the length
    where the log time ratio crosses 0 by linear interpolation between them. None values when the
    candidate never overtakes (or is faster from the first length).
    """
    log_ratio = np.log(np.asarray(candidate)) - np.log(np.asarray(baseline))
    start = len(lengths)
    while start > 0 and log_ratio[start - 1] < 0:
        start -= 1
    result = {"first_faster_length": None, "last_slower_length": None, "interpolated_length": None}
    if start == len(lengths):
        return result
    result["first_faster_length"] = int(lengths[start])
    if start > 0:
        t0, t1, r0, r1 = lengths[start - 1], lengths[start], log_ratio[start - 1], log_ratio[start]
        result["last_slower_length"] = int(t0)
        result["interpolated_length"] = float(t0 + (t1 - t0) * r0 / (r0 - r1))
    return result


def crossover_text(task, batch, found, max_length):
    if found["first_faster_length"] is None:
        return f"{task}, batch {batch}: IAF / SCF never overtakes the LSTM baseline up to T = {max_length}"
    if found["last_slower_length"] is None:
        return f"{task}, batch {batch}: IAF / SCF is faster than the LSTM baseline at every length measured"
    return (f"{task}, batch {batch}: IAF / SCF overtakes the LSTM baseline at T ≈ {found['interpolated_length']:.0f} "
            f"(slower at T = {found['last_slower_length']}, faster from T = {found['first_faster_length']} on)")


def compare_with_baseline(results):
    """Per task and batch size, where IAF / SCF overtakes the LSTM baseline: ({task: {batch: ...}}, notes)."""
    crossovers, notes = {}, []
    for task, batch in dict.fromkeys((r["task"], r["batch"]) for r in results):
        by_model = {m: {r["length"]: r["mean_seconds"] for r in results
                        if (r["task"], r["batch"], r["model"]) == (task, batch, m)} for m in ("lstm", "iaf_scf")}
        common = sorted(set(by_model["lstm"]) & set(by_model["iaf_scf"]))
        if not common:
            continue
        found = crossover(common, [by_model["lstm"][t] for t in common], [by_model["iaf_scf"][t] for t in common])
        found["speedup_at_longest"] = by_model["lstm"][common[-1]] / by_model["iaf_scf"][common[-1]]
        crossovers.setdefault(task, {})[str(batch)] = found
        notes.append(crossover_text(task, batch, found, common[-1]))
    return crossovers, notes


def device_description():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return {"kind": "GPU", "name": ", ".join(names), "count": len(gpus)}
    return {"kind": "CPU", "name": provenance.cpu_name(), "count": os.cpu_count()}


def plot(path, results, tasks, batches):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(batches), len(tasks), figsize=(5.5 * len(tasks), 4 * len(batches)), squeeze=False)
    for i, batch in enumerate(batches):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            for model in MODELS:
                points = [r for r in results if (r["task"], r["batch"], r["model"]) == (task, batch, model)]
                if not points:
                    continue
                lengths = np.array([r["length"] for r in points])
                mean = np.array([r["mean_seconds"] for r in points])
                half = np.array([r["ci95_seconds"] for r in points])
                fastest = np.array([min(r["times"]) for r in points])
                ax.plot(lengths, mean, marker="o", label=LABELS[model])
                # The band below the fastest call is cut: a log axis cannot show a negative lower bound.
                ax.fill_between(lengths, np.maximum(mean - half, fastest), mean + half, alpha=0.25)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel("generation time (s)")
            ax.set_title(f"{task} ({TASKS[task]} sizes), batch {batch}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipelines.generation_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="cpu", choices=tuple(GRIDS), help="the grid of lengths and repetitions")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=tuple(TASKS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--lengths", nargs="+", type=int, help="lengths for every task (default: the scale's)")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: 1 16)")
    parser.add_argument("--reps", type=int, help="timed repetitions per point (default: cpu 5, paper 20)")
    parser.add_argument("--max-call-seconds", type=float,
                        help="skip a model's longer lengths once its next call would take longer than this, "
                             "extrapolated linearly in T (default: cpu 5, paper 60)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every model (repeatable), e.g. model.hidden_size=8")
    parser.add_argument("--out", default=os.path.join("outputs", "generation_speed"), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    grid = GRIDS[args.scale]
    for name in ("batches", "reps", "max_call_seconds"):
        if getattr(args, name) is None:
            setattr(args, name, grid[name])
    for name, values in (("--lengths", args.lengths or []), ("--batches", args.batches), ("--reps", [args.reps])):
        if any(v < 1 for v in values):
            parser.error(f"{name} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import keras

    from tflatent import config as config_lib
    from tflatent import data
    from tflatent.models.registry import build_model

    started = time.time()
    machine_before = provenance.machine()
    results, skipped, sizes = [], [], {}
    grid = GRIDS[args.scale]
    for task in args.tasks:
        dataset = TASKS[task]
        bundle = None
        for model_name in args.models:
            config = config_lib.load(os.path.join(CONFIG_DIR, f"{dataset}_{model_name}.yaml"), args.set)
            if bundle is None:
                bundle = data.load_dataset(config.data, config.train.seed)
                lengths = sorted({min(t, bundle.max_time) for t in args.lengths or grid[task]})
            keras.utils.set_random_seed(args.seed)
            model = build_model(config, bundle)
            sizes.setdefault(task, {})[model_name] = {
                "parameters": int(model.count_params()), "hidden_size": config.model.hidden_size,
                "z_size": config.model.z_size, "hidden_flow_layers": config.model.hidden_flow_layers}
            records, cut = measure(model, lengths, args.batches, args.reps, args.max_call_seconds,
                                   label=f"{task:5s} {LABELS[model_name]:13s}")
            results += [{"task": task, "dataset": dataset, "model": model_name, **r} for r in records]
            skipped += [{"task": task, "model": model_name, **c} for c in cut]
            del model
            keras.backend.clear_session()
            gc.collect()

    crossovers, notes = compare_with_baseline(results)

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "generation_speed.png")
    plot(png, results, args.tasks, args.batches)
    summary = {"scale": args.scale, "device": device_description(), "reps": args.reps, "batches": args.batches,
               "max_call_seconds": args.max_call_seconds, "overrides": args.set, "untrained_weights": True,
               "sizes": sizes, "results": results, "skipped": skipped, "crossover_iaf_scf_vs_lstm": crossovers,
               "notes": notes, "machine_before": machine_before, "machine_after": provenance.machine(),
               "seconds": round(time.time() - started, 1), "png": os.path.abspath(png)}
    with open(os.path.join(args.out, "generation_speed.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n".join(notes))
    print(f"device: {summary['device']['kind']} {summary['device']['name']}; load average before "
          f"{machine_before['load_average_1_5_15'][0]:.1f}, after "
          f"{summary['machine_after']['load_average_1_5_15'][0]:.1f}; {summary['seconds']:.0f} s; code "
          f"{machine_before['code_version']}")
    print(f"written to {args.out}/generation_speed.json and {png}")
    return summary


if __name__ == "__main__":
    main()
