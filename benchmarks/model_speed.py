"""Speed and memory of the models, side by side with the authors' PyTorch code on this machine.

    python benchmarks/model_speed.py [--only train,nll,generate] [--match NAME] [--cases equal57,T256,...]
                                     [--quick] [--reps 5] [--warmups 2] [--slow-reps 3] [--slow-warmups 1]
                                     [--epoch-reps 1] [--epoch-warmups 1] [--gen-lengths 16 64 256]
                                     [--gen-lengths-af-af T ...] [--set section.key=value ...]
                                     [--against-reference [--reference-dir DIR] [--reference-python PY]]
                                     [--in-process] [--output FILE] [--data-dir DIR] [--tfds-dir DIR]

The configurations of the authors' CPU figures, on the same batches and sizes:

* ``train``: one training step (forward, backward, optimizer update) compiled as ``Model.fit`` compiles
  it (``model.compile`` with the config's optimizer and ``train.jit_compile``, then Keras's
  ``train_function`` on the batch): PTB AF/AF, AF/SCF, IAF/SCF at paper size with 10 ELBO samples and at
  the reduced size (hidden 128, z 16, 1 sample), the LSTM baseline (SGD), JSB AF/AF at paper size,
  and one whole JSB training epoch. Throughput is characters (frames) per second: Σ lengths / time.
* ``nll``: the importance-sampled log-likelihood with K = 30 (``model.log_likelihood`` in a
  ``tf.function``, chunks of ``train.nll_chunk``) of PTB AF/AF, reduced and paper size.
* ``generate``: ``model.generate(lengths=[T])`` at batch 1 for each T, paper-size PTB models with
  untrained weights (LSTM baseline, IAF/SCF, AF/SCF, AF/AF); for IAF/SCF also the exported model's
  ``serving_default`` loaded in this process (rows ``serving_T<T>`` for a default export, without XLA,
  and ``serving_xla_T<T>`` for ``--xla``; beside the reference's generation).

Batches: "equal" = the first B training sequences of exactly that length (source order);
"bucketed" = the first batch of the seed-0 training epoch (the reference's bucketing) with unequal
lengths whose mean is nearest the target; "longest" = the B longest training sequences; "epoch" = all
batches of the seed-0 epoch. Case names: ``<section>/<job>/<batch><length>`` (``--cases`` takes the
last part).

Timing: the median of ``--reps`` calls after ``--warmups`` (the first warm-up includes tracing and any
XLA compilation; its time is reported as ``first_call_seconds``). The paper-size PTB training and NLL
rows use ``--slow-reps``/``--slow-warmups`` (3 after 1 by default), the JSB epoch ``--epoch-reps`` /
``--epoch-warmups``; each result states its counts. ``seconds`` is wall time, ``cpu_seconds`` the
process CPU time of the same calls (on a loaded machine wall time grows, CPU time much less).

Side by side (``--against-reference``): before each of our jobs, the same job of the authors' code runs
through the harness in ``--reference-dir`` (default ``../shared/bench/textflow`` beside the checkout: a
``bench.py`` taking ``--job NAME`` and the timing options above, printing one JSON list of results named
as ours), with ``--reference-python`` (default ``$TEXTFLOW_VENV/bin/python``, else
``$TMPDIR/textflow-venv/bin/python``); never both at once. Each of our results then carries the
reference's figures for the same case (``reference``: seconds, min, max, cpu_seconds, peak RSS, load
average before), ``speedup`` = reference s / ours (> 1: we are faster) and ``rss_ratio`` = ours /
reference. ``benchmarks/speed_table.py`` turns the JSON into the tables of ``benchmarks/README.md``.

Memory: each job (one model) runs in its own Python process, and ``peak_rss_gb`` is that process's peak
resident set size (TF runtime, data, model, warm-ups and timed calls); generation rows share one process
per model, so they report its peak over all T. With ``--in-process`` (implied by ``--quick``) every job
runs in this process and ``peak_rss_gb`` is this process's running peak (``peak_rss_scope`` says which).

The load average before and after each job is recorded: other processes sharing the CPU slow the
wall-clock figures down. ``--quick`` runs a few jobs, the first case of each, with tiny models, sequences of
about 20 steps and one timed call (a smoke test of the script, not a measurement).

Prints one JSON object on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("train", "nll", "generate")

# The reference's reduced PTB AF/AF (3,238,683 parameters in PyTorch; 5,120 fewer here, the Keras LSTMs'
# single bias): hidden 128, z 16, with the prior LSTM and the embedding at 128 too.
REDUCED = ("model.hidden_size=128", "model.z_size=16", "model.prior_rnn_units=128", "model.embedding_size=128",
           "train.elbo_samples=1")
# --quick: every network tiny, two ELBO samples.
TINY = ("model.hidden_size=16", "model.z_size=4", "model.prior_rnn_units=16", "model.embedding_size=16",
        "model.hidden_flow_units=8", "train.elbo_samples=2")
QUICK_LENGTH = 20  # --quick: every equal / bucketed batch has sequences of about 20 steps
QUICK_NLL_SAMPLES, QUICK_NLL_CHUNK = 4, 2
QUICK_GEN_LENGTHS = (4,)
NLL_SAMPLES = 30

GENERATION_MODELS = ("ptb_lstm", "ptb_iaf_scf", "ptb_af_scf", "ptb_af_af")  # paper-size PTB configs
AF_AF_GENERATION = "generate/ptb_af_af"  # the job --gen-lengths-af-af applies to
SERVED_MODEL = "ptb_iaf_scf"  # the parallel sampler: also timed as an exported serving_default


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured batch of a job."""

    batch: str  # "equal", "bucketed", "longest" or "epoch"
    length: Optional[int] = None  # the equal length or the bucketed mean (None for longest / epoch)

    @property
    def name(self) -> str:
        return f"{self.batch}{self.length or ''}"


@dataclasses.dataclass(frozen=True)
class Job:
    """One model in one process: its config, size and the cases measured on it."""

    name: str
    section: str
    config: str  # a file in configs/
    size: str  # "paper" or "reduced"
    cases: tuple = ()
    overrides: tuple = ()
    batch_size: int = 15
    slow: bool = False  # uses --slow-reps / --slow-warmups
    quick: bool = False  # one of the jobs that --quick runs
    serving: bool = False  # generation: also the exported model's serving_default, in process


def jobs() -> list[Job]:
    """Every configuration of the authors' CPU figures, grouped by model."""
    s10 = ("train.elbo_samples=10",)
    equal100, bucketed102 = Case("equal", 100), Case("bucketed", 102)
    return [
        Job("train/jsb_af_af", "train", "jsb_chorales_af_af", "paper", batch_size=5, quick=True, cases=(
            Case("equal", 57), Case("bucketed", 58), Case("longest"), Case("epoch"))),
        Job("train/ptb_af_af", "train", "ptb_af_af", "paper", overrides=s10, slow=True, quick=True,
            cases=(equal100, bucketed102, Case("equal", 284))),
        Job("train/ptb_af_scf", "train", "ptb_af_scf", "paper", overrides=s10, slow=True,
            cases=(equal100, bucketed102)),
        Job("train/ptb_iaf_scf", "train", "ptb_iaf_scf", "paper", overrides=s10, slow=True, quick=True,
            cases=(equal100, bucketed102)),
        Job("train/ptb_af_af_reduced", "train", "ptb_af_af", "reduced", overrides=REDUCED,
            cases=(equal100, bucketed102, Case("equal", 284))),
        Job("train/ptb_af_scf_reduced", "train", "ptb_af_scf", "reduced", overrides=REDUCED,
            cases=(equal100,)),
        Job("train/ptb_iaf_scf_reduced", "train", "ptb_iaf_scf", "reduced", overrides=REDUCED,
            cases=(equal100, Case("equal", 284))),
        Job("train/ptb_lstm", "train", "ptb_lstm", "paper", quick=True, cases=(equal100, Case("equal", 284))),
        Job("nll/ptb_af_af_reduced", "nll", "ptb_af_af", "reduced", overrides=REDUCED, quick=True,
            cases=(equal100, bucketed102, Case("longest"))),
        Job("nll/ptb_af_af", "nll", "ptb_af_af", "paper", slow=True, cases=(equal100, bucketed102)),
        *(Job(f"generate/{name}", "generate", name, "paper", quick=name in ("ptb_lstm", "ptb_af_af"),
              serving=name == SERVED_MODEL) for name in GENERATION_MODELS),
    ]


# ---------------------------------------------------------------------------------------------- batches
def pick_batches(bundle, case: Case, batch_size: int, quick: bool) -> list:
    """The (x, lengths) batches of a case, from the training split."""
    import numpy as np
    import tensorflow as tf

    if case.batch == "epoch":
        return list(bundle.batches("train", training=True, batch_size=batch_size, seed=0))
    if case.batch == "bucketed":
        target = QUICK_LENGTH if quick else case.length
        best = None
        for x, lengths in bundle.batches("train", training=True, batch_size=batch_size, seed=0):
            values = lengths.numpy()
            if len(values) < batch_size or values.min() == values.max():
                continue
            distance = abs(values.mean() - target)
            if best is None or distance < best[0]:
                best = (distance, x, lengths)
            if distance < 0.5:
                break
        return [best[1:]]
    # equal / longest: from the split sorted by length (stable, so source order among equal lengths)
    everything = [(x.numpy(), lengths.numpy()) for x, lengths in bundle.batches("train", training=False,
                                                                                 batch_size=4096)]
    rows = [(x[i], n) for x, lengths in everything for i, n in enumerate(lengths)]
    if case.batch == "longest":
        chosen = rows[-batch_size:]
    else:
        counts = np.bincount([n for _, n in rows])
        length = (min(np.flatnonzero(counts >= batch_size), key=lambda n: abs(n - QUICK_LENGTH)) if quick
                  else case.length)
        chosen = [row for row in rows if row[1] == length][:batch_size]
        if len(chosen) < batch_size:
            raise ValueError(f"only {len(chosen)} training sequences have length {length}; need {batch_size}")
    num_steps = max(n for _, n in chosen)
    x = np.stack([row[0][:num_steps] for row in chosen])
    return [(tf.constant(x), tf.constant([n for _, n in chosen], tf.int32))]


def describe(batches) -> str:
    lengths = [int(n) for _, ls in batches for n in ls.numpy()]
    if len(batches) > 1:
        return f"{len(batches)} batches, {sum(lengths)} steps"
    kind = "equal" if min(lengths) == max(lengths) else f"bucketed {min(lengths)}-{max(lengths)}"
    return f"{len(lengths)}x{max(lengths)} {kind}"


# ---------------------------------------------------------------------------------------------- timing
def timed(fn, warmups: int, reps: int) -> dict:
    """Calls ``fn`` (which must block until its results exist) warmups + reps times."""
    walls, cpus, first = [], [], None
    for i in range(warmups + reps):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if i == 0:
            first = wall
        if i >= warmups:
            walls.append(wall)
            cpus.append(cpu)
    return {"seconds": statistics.median(walls), "seconds_min": min(walls), "seconds_max": max(walls),
            "cpu_seconds": statistics.median(cpus), "first_call_seconds": first, "warmups": warmups,
            "repetitions": reps}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


# ---------------------------------------------------------------------------------------------- one job
_BUNDLES = {}


def run_job(job: Job, args) -> list[dict]:
    """Builds the job's model and measures each case; returns one result per case (per T for generate)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tflatent import config as config_lib
    from tflatent import cpu_threads
    from tflatent.data import load_dataset
    from tflatent.models.registry import build_model
    from tflatent.training import optimizers

    overrides = [f"data.data_dir={args.data_dir}", f"data.tfds_dir={args.tfds_dir}", *job.overrides,
                 *(TINY if args.quick else ()), *args.set]
    config = config_lib.load(str(REPO / "configs" / f"{job.config}.yaml"), overrides)
    threads = cpu_threads.configure(config, sampling=job.section == "generate")
    keras.utils.set_random_seed(0)
    key = json.dumps(dataclasses.asdict(config.data), sort_keys=True)
    if key not in _BUNDLES:  # jobs that run in one process share their data sets
        _BUNDLES[key] = load_dataset(config.data, seed=0)
    bundle = _BUNDLES[key]
    model = build_model(config, bundle)
    unit = "frames/s" if bundle.is_music else "chars/s"
    cases = selected_cases(job, args)
    common = {"job": job.name, "section": job.section, "config": f"configs/{job.config}.yaml", "size": job.size,
              "overrides": list(job.overrides), "parameters": int(model.count_params()),
              "elbo_samples": config.train.elbo_samples if model.has_latent else None,
              "intra_op_threads": threads}
    results = []

    def finish(result):
        result["load_average_after"] = list(os.getloadavg())
        result["peak_rss_gb"] = peak_rss_gb()
        result["peak_rss_scope"] = "process (all of this job)" if not args.in_process else "running process peak"
        results.append(result)
        print(f"  {result['name']}: {result['seconds']:.3f} s", file=sys.stderr, flush=True)

    if job.section == "train":
        model.compile(optimizer=optimizers.make_optimizer(config.train), jit_compile=config.train.jit_compile)
        model.optimizer.build(model.trainable_variables)
        model.make_train_function()
        for case in cases:
            batches = pick_batches(bundle, case, job.batch_size, args.quick)

            def step():
                for batch in batches:
                    float(model.train_function(iter([batch]))["loss"])

            load_before = list(os.getloadavg())
            result = {**common, "name": f"{job.name}/{case.name}", "batch": describe(batches),
                      "optimizer": config.train.optimizer, "jit_compile": config.train.jit_compile,
                      "load_average_before": load_before, **timed(step, *counts(job, case, args))}
            tokens = sum(int(tf.reduce_sum(lengths)) for _, lengths in batches)
            result.update(tokens=tokens, throughput=tokens / result["seconds"], unit=unit)
            finish(result)
    elif job.section == "nll":
        num_samples, chunk = ((QUICK_NLL_SAMPLES, QUICK_NLL_CHUNK) if args.quick
                              else (NLL_SAMPLES, config.train.nll_chunk))

        @tf.function
        def log_likelihood(x, lengths):
            return model.log_likelihood(x, lengths, num_samples=num_samples, chunk=chunk, seed=0)

        for case in cases:
            (x, lengths), = pick_batches(bundle, case, job.batch_size, args.quick)
            load_before = list(os.getloadavg())
            result = {**common, "name": f"{job.name}/{case.name}", "batch": describe([(x, lengths)]),
                      "num_samples": num_samples, "chunk": chunk, "load_average_before": load_before,
                      **timed(lambda: log_likelihood(x, lengths).numpy(), *counts(job, case, args))}
            finish(result)
    else:
        warmups, reps = counts(job, None, args)
        for length in generation_lengths(job, args):
            seeds = iter(range(warmups + reps))
            load_before = list(os.getloadavg())
            result = {**common, "name": f"{job.name}/T{length}", "batch": f"1x{length}", "length": length,
                      "load_average_before": load_before,
                      **timed(lambda: np.asarray(model.generate(lengths=[length], seed=next(seeds))[0]),
                              warmups, reps)}
            finish(result)
        if job.serving:
            time_serving(job, model, config, bundle, common, warmups, reps, finish, args)
    return results


def time_serving(job: Job, model, config, bundle, common: dict, warmups: int, reps: int, finish, args):
    """The exported model's ``serving_default`` (``tflatent.serving.export``) at batch 1, in process.

    Rows ``<job>/serving_T<T>`` (a default export: no XLA, as stock TF Serving needs) and
    ``<job>/serving_xla_T<T>`` (``--xla``: the sampler compiled as ``generate``'s), each set beside the
    reference's generation of the same T (``reference_case``).
    """
    import tensorflow as tf

    from tflatent.serving import export

    for xla in (False, True):
        with tempfile.TemporaryDirectory() as out:
            path = export.export(model, config, out, 1, 1, vocabulary=bundle.vocab,
                                 source={"benchmark": "freshly initialised"}, xla=xla)
            sample = tf.saved_model.load(path).signatures["serving_default"]
            for length in generation_lengths(job, args):
                seeds = iter(range(warmups + reps))
                load_before = list(os.getloadavg())
                result = {**common, "name": f"{job.name}/serving_{'xla_' if xla else ''}T{length}",
                          "reference_case": f"{job.name}/T{length}", "batch": f"1x{length}", "length": length,
                          "signature": "serving_default", "xla": xla, "load_average_before": load_before,
                          **timed(lambda: sample(lengths=tf.constant([length]), temperature=tf.constant(1.0),
                                                 seed=tf.constant(next(seeds)))["x"].numpy(), warmups, reps)}
                finish(result)


def counts(job: Job, case: Optional[Case], args) -> tuple[int, int]:
    """(warm-ups, timed calls) of a case: as the reference harness is asked to use them too."""
    if args.quick:
        return 1, 1
    if case is not None and case.batch == "epoch":
        return args.epoch_warmups, args.epoch_reps
    return (args.slow_warmups, args.slow_reps) if job.slow else (args.warmups, args.reps)


def selected_cases(job: Job, args) -> tuple:
    cases = job.cases[:1] if args.quick else job.cases
    return tuple(case for case in cases if not args.cases or case.name in args.cases.split(","))


def generation_lengths(job: Job, args) -> list[int]:
    if args.quick:
        return list(QUICK_GEN_LENGTHS)
    lengths = args.gen_lengths
    if job.name == AF_AF_GENERATION and args.gen_lengths_af_af:
        lengths = args.gen_lengths_af_af
    return [n for n in lengths if not args.cases or f"T{n}" in args.cases.split(",")]


def run_job_in_subprocess(job: Job, argv: list[str]) -> list[dict]:
    """Runs one job in a fresh Python process (so that its peak RSS is its own) and returns its results."""
    done = subprocess.run([sys.executable, __file__, "--job", job.name, *argv], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"job {job.name} failed:\n{done.stderr[-4000:]}")
    sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if line.startswith("  ")))
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- reference
def fail(message: str):
    """Bad input: one line on stderr, exit status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def reference_harness(args) -> tuple[Path, Path]:
    """The harness's bench.py and its Python, or SystemExit(2) with one line saying what to pass."""
    bench = Path(args.reference_dir) / "bench.py"
    if not bench.is_file():
        fail(f"model_speed.py: --against-reference: no harness {bench}; pass --reference-dir DIR "
                         "(the folder with the authors' code harness, bench.py)")
    python = Path(args.reference_python)
    if not python.is_file():
        fail(f"model_speed.py: --against-reference: no Python {python} for the harness; run its "
                         "setup.sh or pass --reference-python PATH")
    return bench, python


def reference_argv(job: Job, args) -> list[str]:
    """The harness's options for the job: the same cases, lengths and call counts as ours."""
    warmups, reps = counts(job, None, args)
    slow_warmups, slow_reps = (1, 1) if args.quick else (args.slow_warmups, args.slow_reps)
    epoch_warmups, epoch_reps = (1, 1) if args.quick else (args.epoch_warmups, args.epoch_reps)
    argv = ["--job", job.name, "--reps", str(reps), "--warmups", str(warmups), "--slow-reps", str(slow_reps),
            "--slow-warmups", str(slow_warmups), "--epoch-reps", str(epoch_reps),
            "--epoch-warmups", str(epoch_warmups), "--data-dir", str(args.data_dir)]
    if job.section == "generate":
        argv += ["--gen-lengths", *map(str, generation_lengths(job, args))]
    else:
        argv += ["--cases", ",".join(case.name for case in selected_cases(job, args))]
    return argv


def run_reference_job(job: Job, args) -> dict:
    """Runs the job in the authors' code (the harness, its own process); returns its results by case name."""
    bench, python = reference_harness(args)
    load_before = list(os.getloadavg())
    done = subprocess.run([str(python), str(bench), *reference_argv(job, args)], capture_output=True,
                          text=True, cwd=bench.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the reference harness failed on {job.name}:\n{done.stderr[-4000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {r["name"]: {**{key: r.get(key) for key in REFERENCE_KEYS}, "job_load_average_before": load_before}
            for r in results if "error" not in r}


REFERENCE_KEYS = ("seconds", "seconds_min", "seconds_max", "cpu_seconds", "warmups", "repetitions",
                  "peak_rss_gb", "load_average_before", "torch", "threads")


def beside(results: list[dict], reference: dict) -> list[dict]:
    """Our results with the reference's figures for the same case, the speed-up and the RSS ratio."""
    for result in results:
        ref = reference.get(result.get("reference_case", result["name"]))
        result["reference"] = ref
        if ref is not None and "seconds" in result:
            result["speedup"] = ref["seconds"] / result["seconds"]  # > 1: we are faster
            rss = ref.get("peak_rss_gb")
            result["rss_ratio"] = result["peak_rss_gb"] / rss if rss else None
    return results


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform's processor string."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> Optional[str]:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() or None


# ---------------------------------------------------------------------------------------------- report
def table(results: list[dict]) -> str:
    header = (f"{'case':42s} {'batch':22s} {'ours s':>9s} {'cpu s':>8s} {'ref s':>8s} {'ref cpu':>8s} "
              f"{'speedup':>7s} {'RSS GB':>7s} {'ref':>5s} {'load':>5s}")
    lines = [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:42s} ERROR {r['error'].splitlines()[-1][:80]}")
            continue
        ref = r.get("reference") or {}

        def number(value, spec):
            return "" if value is None else format(value, spec)

        lines.append(f"{r['name']:42s} {r['batch']:22s} {r['seconds']:9.3f} {r['cpu_seconds']:8.2f} "
                     f"{number(ref.get('seconds'), '8.3f'):>8s} {number(ref.get('cpu_seconds'), '8.2f'):>8s} "
                     f"{number(r.get('speedup'), '7.2f'):>7s} {r['peak_rss_gb']:7.2f} "
                     f"{number(ref.get('peak_rss_gb'), '.2f'):>5s} {r['load_average_before'][0]:5.1f}")
    lines.append("speedup = reference s / ours (> 1: we are faster); load = 1-min load average before ours")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TFLATENT_DATA_DIR") or str(REPO.parent / "shared" / "data")
    default_python = Path(os.environ.get("TEXTFLOW_VENV") or Path(tempfile.gettempdir()) / "textflow-venv")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections to run: train, nll, generate (default: all)")
    parser.add_argument("--match", default="",
                        help="run only the jobs whose name contains this text (or one of several, comma-separated)")
    parser.add_argument("--cases", default="",
                        help="comma-separated cases of the jobs, e.g. equal57,T256 (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few jobs, tiny models, one call")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per configuration")
    parser.add_argument("--warmups", type=int, default=2, help="untimed calls before them")
    parser.add_argument("--slow-reps", type=int, default=3, help="timed calls of the paper-size PTB train/nll jobs")
    parser.add_argument("--slow-warmups", type=int, default=1, help="warm-ups of the paper-size PTB train/nll jobs")
    parser.add_argument("--epoch-reps", type=int, default=1, help="timed epochs of the JSB epoch case")
    parser.add_argument("--epoch-warmups", type=int, default=1, help="warm-up epochs of the JSB epoch case")
    parser.add_argument("--gen-lengths", type=int, nargs="+", default=[16, 64, 256],
                        help="generation lengths T")
    parser.add_argument("--gen-lengths-af-af", type=int, nargs="+", default=None,
                        help="generation lengths of AF/AF only (the reference takes ~90 s per call at T 256)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config field of every job, e.g. --set train.jit_compile=true")
    parser.add_argument("--against-reference", action="store_true",
                        help="run each job in the authors' code first (the harness in --reference-dir)")
    parser.add_argument("--reference-dir", default=str(REPO.parent / "shared" / "bench" / "textflow"),
                        help="the authors' code harness (bench.py); default ../shared/bench/textflow")
    parser.add_argument("--reference-python", default=str(default_python / "bin" / "python"),
                        help="the harness's Python (default $TEXTFLOW_VENV/bin/python, else "
                             "$TMPDIR/textflow-venv/bin/python)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every job in this process (peak RSS is then this process's running peak)")
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--tfds-dir", default=os.path.join(tempfile.gettempdir(), "tflatent_benchmark_tfds"))
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one job, print its results
    args = parser.parse_args(argv)
    args.in_process = args.in_process or args.quick
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    by_name = {job.name: job for job in jobs()}
    if args.job:
        with contextlib.redirect_stdout(sys.stderr):  # e.g. TFDS's messages when it prepares a data set
            results = run_job(by_name[args.job], args)
        print(json.dumps(results))
        return {}
    if args.against_reference:
        reference_harness(args)  # fail at once, in one line, when it is absent

    selected = [job for job in by_name.values() if job.section in args.only.split(",")
                and any(text in job.name for text in args.match.split(","))
                and (job.quick or not args.quick)]
    child_argv = [a for a in argv if a not in ("--in-process", "--against-reference")]
    started = time.perf_counter()
    results = []
    for job in selected:
        try:
            reference = {}
            if args.against_reference:  # the authors' job first, then ours: never both at once
                print(f"{job.name} (reference) ...", file=sys.stderr, flush=True)
                reference = run_reference_job(job, args)
            print(f"{job.name} ...", file=sys.stderr, flush=True)
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
                ours = run_job(job, args) if args.in_process else run_job_in_subprocess(job, child_argv)
            results.extend(beside(ours, reference) if args.against_reference else ours)
        except Exception as err:  # keep measuring the other jobs; the report shows the failure
            results.append({"job": job.name, "name": job.name, "section": job.section, "error": str(err)})

    reference = ({"harness": str(Path(args.reference_dir).resolve()), "python": args.reference_python,
                  "code": "harvardnlp/TextFlow (PyTorch), run by the harness's bench.py"}
                 if args.against_reference else None)
    return report("model_speed", argv, args, started, results, table(results), reference=reference)


def report(benchmark: str, argv: list[str], args, started: float, results: list[dict], table_text: str,
           **fields) -> dict:
    """A benchmark's record (``fields`` after its name, then the command, commit, date, machine and
    ``results``): printed as JSON on stdout, written to ``args.output`` if given, ``table_text`` on stderr."""
    import tensorflow as tf
    record = {
        "benchmark": benchmark,
        **fields,
        "command": f"python benchmarks/{benchmark}.py " + " ".join(argv),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "tensorflow": tf.__version__,
                    "python": platform.python_version()},
        "total_seconds": time.perf_counter() - started,
        "results": results,
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(table_text, file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
