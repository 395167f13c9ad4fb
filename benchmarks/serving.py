"""Latency of the exported sampler: milliseconds per ``serving_default`` call, in process and over REST.

    python benchmarks/serving.py [--size paper|small] [--repeats 5] [--batches 1 16] [--steps 64 256]

For the JSB chorales' IAF/SCF and AF/AF models (``configs/jsb_chorales_<prior>[_small].yaml``; paper
size: hidden 500, z 50, 5 NLSq layers), each model is exported with ``tflatent.export`` and then timed at
every batch N and length T, once as a default export and once with ``--xla`` (its sampler compiled with
XLA; ``xla`` in each row): ``in_process_ms`` calls the loaded SavedModel's ``serving_default``
(``lengths`` = N × [T]) in this process; ``server_ms`` posts the same request, columnar, to
``python -m tflatent.serve`` on 127.0.0.1 (JSON both ways: the answer holds N × T × 88 frames). Each
figure is the median of ``--repeats`` calls after one warm-up call (which, for an XLA export, compiles
that shape); the machine's load average is
recorded, since other processes on the same cores slow both paths alike. The weights are freshly
initialised (the speed does not depend on training), and ``data.max_time`` is raised to the longest T
asked for when it is longer than JSB's own (180). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tflatent import config as config_lib  # noqa: E402
from tflatent import data  # noqa: E402
from tflatent.models.registry import build_model  # noqa: E402
from tflatent.serving import export  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRIORS = ("iaf_scf", "af_af")


def timed(call, repeats: int) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000.0 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def sample_request(batch: int, steps: int) -> dict:
    return {"lengths": [steps] * batch, "temperature": 1.0, "seed": 0}


class Server:
    """``python -m tflatent.serve`` for one model folder, on a free port of 127.0.0.1, as a context manager."""

    def __init__(self, model_dir: str, name: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.model_dir, self.name = model_dir, name
        self.url = f"http://127.0.0.1:{self.port}/v1/models/{name}"

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tflatent.serve", "--model", self.model_dir, "--name", self.name,
             "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"python -m tflatent.serve --model {self.model_dir} did not start")
            time.sleep(0.5)

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def predict(self, inputs: dict) -> dict:
        body = json.dumps({"inputs": inputs}).encode()
        request = urllib.request.Request(self.url + ":predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TFLATENT_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--tfds-dir", default=os.path.join(tempfile.gettempdir(), "tflatent_benchmark_tfds"))
    parser.add_argument("--size", choices=("paper", "small"), default="paper")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()

    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        for prior in PRIORS:
            name = f"jsb_chorales_{prior}" + ("_small" if args.size == "small" else "")
            config = config_lib.load(str(CONFIGS / f"{name}.yaml"), [
                f"data.data_dir={args.data_dir}", f"data.tfds_dir={args.tfds_dir}"])
            bundle = data.load_dataset(config.data, config.train.seed)
            if max(args.steps) > bundle.max_time:
                config.data.max_time = max(args.steps)
                bundle = data.load_dataset(config.data, config.train.seed)
            keras.utils.set_random_seed(config.train.seed)
            model = build_model(config, bundle)
            model.kl_weight.assign(1.0)
            for xla in (False, True):
                start = time.perf_counter()
                path = export.export(model, config, os.path.join(out, f"{prior}_xla" if xla else prior),
                                     config.train.nll_samples, config.train.nll_chunk,
                                     source={"benchmark": "freshly initialised"}, xla=xla)
                export_seconds = round(time.perf_counter() - start, 1)
                sample = tf.saved_model.load(path).signatures["serving_default"]
                with Server(os.path.dirname(path), os.path.basename(os.path.dirname(path))) as server:
                    for batch in args.batches:
                        for steps in args.steps:
                            inputs = sample_request(batch, steps)
                            tensors = {"lengths": tf.constant(inputs["lengths"]), "temperature": tf.constant(1.0),
                                       "seed": tf.constant(0)}
                            results.append({
                                "model": prior, "config": name, "xla": xla, "batch": batch, "T": steps,
                                "in_process_ms": timed(functools.partial(sample, **tensors), args.repeats),
                                "server_ms": timed(functools.partial(server.predict, inputs), args.repeats),
                                "parameters": model.count_params(), "export_seconds": export_seconds})
    print(json.dumps({
        "benchmark": "serving", "signature": "serving_default", "size": args.size, "repeats": args.repeats,
        "statistic": "median ms per call after one warm-up call", "device": "cpu", "cpus": os.cpu_count(),
        "tensorflow": tf.__version__, "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
