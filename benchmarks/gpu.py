"""The GPU training path: a training step with each LSTM implementation and precision, and the IS-NLL time.

    python benchmarks/gpu.py [--quick] [--reps 5] [--warmups 2] [--output FILE] [--data-dir DIR]
                             [--tfds-dir DIR]

For the paper-size PTB AF/AF (10 ELBO samples, batch 15) and JSB AF/AF (batch 5), on the first
batch of the seed-0 training epoch (bucketed lengths), for every ``model.lstm_impl`` in
``LSTM_IMPLS`` and with and without mixed precision:

* ``train``: one training step (forward, backward, optimizer update) as ``Model.fit`` runs it
  (Keras's ``train_function`` after ``compile`` with the config's optimizer);
* ``nll``: the importance-sampled log-likelihood of the same batch, K = 30 in chunks of
  ``train.nll_chunk`` (``model.log_likelihood`` in a ``tf.function``).

Mixed precision is ``mixed_float16`` on a GPU (Keras then scales the loss through a
``LossScaleOptimizer``) and ``mixed_bfloat16`` elsewhere. ``model.lstm_impl`` (loop | cudnn) is read
from the config when the build has it; a build without it reports its ``cudnn`` rows as skipped and
times its only LSTM as ``loop``. Times are the median of ``--reps`` calls after ``--warmups`` (the
first call, with tracing, is ``first_call_seconds``).

``--quick`` (CI, on a CPU): tiny networks, sequences cut to 12 steps, K = 4, one timed call, and half
of the model × implementation × precision grid (``runs``: every pair of values of two of the three
axes still occurs once): a smoke test of the script, not a measurement. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"ptb_af_af": ("ptb_af_af", 15, ("train.elbo_samples=10",)),
           "jsb_af_af": ("jsb_chorales_af_af", 5, ())}
LSTM_IMPLS = ("loop", "cudnn")
NLL_SAMPLES = 30
TINY = ("model.hidden_size=16", "model.z_size=4", "model.prior_rnn_units=16", "model.embedding_size=16",
        "model.hidden_flow_units=8", "model.hidden_flow_layers=2", "train.elbo_samples=2")
QUICK_STEPS, QUICK_NLL_SAMPLES, QUICK_NLL_CHUNK = 12, 4, 2


def timed(fn, warmups: int, reps: int) -> dict:
    """Calls ``fn`` (which must block until its results exist) warmups + reps times; wall seconds."""
    walls, first = [], None
    for i in range(warmups + reps):
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        first = wall if i == 0 else first
        if i >= warmups:
            walls.append(wall)
    return {"seconds": statistics.median(walls), "first_call_seconds": first, "warmups": warmups,
            "repetitions": reps}


def runs(quick: bool) -> list[tuple[str, str, bool]]:
    """(model, LSTM implementation, mixed precision) to time: the whole grid, or for ``quick`` its half
    with an even sum of indices (a 2^(3-1) fractional design: each pair of axes is still fully crossed)."""
    grid = list(itertools.product(CONFIGS, LSTM_IMPLS, (False, True)))
    if not quick:
        return grid
    return [(name, impl, mixed) for name, impl, mixed in grid
            if (list(CONFIGS).index(name) + LSTM_IMPLS.index(impl) + mixed) % 2 == 0]


def has_lstm_impl() -> bool:
    """Whether this build's config has ``model.lstm_impl`` (the cuDNN switch)."""
    from tflatent import config as config_lib
    return "lstm_impl" in config_lib.type_hints(config_lib.ModelConfig)


def measure(name: str, lstm_impl: str, mixed: bool, args) -> dict:
    """The training step and the IS-NLL of one model, implementation and precision."""
    import keras
    import tensorflow as tf

    from tflatent import config as config_lib
    from tflatent import data
    from tflatent.models.registry import build_model
    from tflatent.training import optimizers

    config_file, batch_size, overrides = CONFIGS[name]
    overrides = list(overrides) + (list(TINY) if args.quick else [])
    if has_lstm_impl():
        overrides.append(f"model.lstm_impl={lstm_impl}")
    for key, value in (("data_dir", args.data_dir), ("tfds_dir", args.tfds_dir)):
        if value:
            overrides.append(f"data.{key}={value}")
    config = config_lib.load(str(REPO / "configs" / f"{config_file}.yaml"), overrides)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = ("mixed_float16" if gpu else "mixed_bfloat16") if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        bundle = data.load_dataset(config.data, seed=0)
        x, lengths = next(iter(bundle.batches("train", True, batch_size=batch_size, seed=0)))
        if args.quick:
            x, lengths = x[:, :QUICK_STEPS], tf.minimum(lengths, QUICK_STEPS)
        model = build_model(config, bundle)
        model.compile(optimizer=optimizers.make_optimizer(config.train))
        model.optimizer.build(model.trainable_variables)
        model.make_train_function()
        train = timed(lambda: float(model.train_function(iter([(x, lengths)]))["loss"]), args.warmups, args.reps)
        num_samples, chunk = ((QUICK_NLL_SAMPLES, QUICK_NLL_CHUNK) if args.quick
                              else (NLL_SAMPLES, config.train.nll_chunk))
        log_likelihood = tf.function(lambda: model.log_likelihood(x, lengths, num_samples=num_samples, chunk=chunk,
                                                                  seed=0))
        nll = timed(lambda: log_likelihood().numpy(), args.warmups, args.reps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    frames = int(tf.reduce_sum(lengths))
    return {"model": name, "lstm_impl": lstm_impl, "precision": policy, "parameters": model.count_params(),
            "batch": [int(v) for v in lengths], "frames": frames,
            "train": {**train, "frames_per_second": frames / train["seconds"]},
            "nll": {**nll, "samples": num_samples, "chunk": chunk}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models on a CPU: a smoke test for CI")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--data-dir", help="data.data_dir (default: $TFLATENT_DATA_DIR)")
    parser.add_argument("--tfds-dir", help="data.tfds_dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.warmups = 1, 1
    sys.path.insert(0, str(REPO))
    import tensorflow as tf

    started = time.time()
    results = []
    for name, lstm_impl, mixed in runs(args.quick):
        if lstm_impl != "loop" and not has_lstm_impl():
            results.append({"model": name, "lstm_impl": lstm_impl, "mixed_precision": mixed,
                            "skipped": "this build's config has no model.lstm_impl"})
            continue
        print(f"{name} {lstm_impl} mixed={mixed}", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON's (TFDS prints there)
            results.append(measure(name, lstm_impl, mixed, args))
    report = {"benchmark": "gpu", "command": " ".join([Path(sys.argv[0]).name] + list(argv or sys.argv[1:])),
              "quick": args.quick, "machine": platform.node(),
              "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
              "lstm_impl_in_config": has_lstm_impl(), "total_seconds": round(time.time() - started, 1),
              "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
