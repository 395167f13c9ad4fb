"""Speed of the data pipeline on PTB train: load time, then batches/s and examples/s per batch size.

    python benchmarks/data_pipeline.py [--data-dir DIR] [--tfds-dir DIR] [--batch-sizes 15 128] [--epochs 2]

Prints one JSON object. ``load_seconds`` is ``load_dataset`` (the first run also prepares the TFDS data
set: ``prepared`` says whether that happened); the rates are for full training epochs (bucketed,
reshuffled, padded) drawn as fast as the pipeline can give them, with no model consuming them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflatent.config import DataConfig  # noqa: E402
from tflatent.data import load_dataset, make_builder  # noqa: E402


def epoch_rate(bundle, batch_size: int, epochs: int) -> dict:
    dataset = bundle.batches("train", training=True, batch_size=batch_size)
    for _ in dataset.take(1):  # builds the pipeline's functions once, outside the timing
        pass
    batches = examples = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for _, lengths in dataset:
            batches += 1
            examples += int(lengths.shape[0])
    seconds = time.perf_counter() - start
    return {"batch_size": batch_size, "epochs": epochs, "batches": batches, "seconds": round(seconds, 3),
            "batches_per_second": round(batches / seconds, 1), "examples_per_second": round(examples / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TFLATENT_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--tfds-dir", default=os.path.join(tempfile.gettempdir(), "tflatent_benchmark_tfds"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[15, 128])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    config = DataConfig(dataset="ptb", data_dir=args.data_dir, tfds_dir=args.tfds_dir)
    prepared = not make_builder(config).is_prepared()
    start = time.perf_counter()
    bundle = load_dataset(config, seed=0)
    load_seconds = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "data_pipeline", "dataset": bundle.name, "split": "train",
        "examples": bundle.num_examples("train"), "load_seconds": round(load_seconds, 2), "prepared": prepared,
        "results": [epoch_rate(bundle, batch_size, args.epochs) for batch_size in args.batch_sizes],
    }, indent=2))


if __name__ == "__main__":
    main()
