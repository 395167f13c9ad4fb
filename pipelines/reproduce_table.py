"""Reproduce Table 1, 2 or 3 of the paper: train (or reuse) every row's model, evaluate it, write the table.

::

    python -m pipelines.reproduce_table --table 3 --scale cpu --datasets jsb_chorales
    python -m pipelines.reproduce_table --table 1 --scale paper --dry-run

Tables (paper §6): 1, PTB character-level test NLL with the ELBO's reconstruction and KL terms, in bits
per character; 2, the PTB ablations of AF / AF, in bits per character; 3, the test NLL of the four
polyphonic-music sets in nats per frame (the paper says "per note"; docs/reference.md §5.4). Rows: the LSTM baseline,
AF / AF, AF / SCF, IAF / SCF (and AF-only in Table 1), each beside the paper's figure.

Every row is two commands, the project's own entry points::

    python -m tflatent.train --config configs/<row>.yaml [--set ...] --run-dir <runs>/<row>
    python -m tflatent.evaluate --run <runs>/<row> --split test [--samples K]

run as subprocesses: each model gets a fresh process, so no Keras/TensorFlow state (global seeds,
traced functions, memory of a paper-size model) leaks from one row into the next; the ~5 s import per
process is small next to a training run. A row whose run finished (``summary.json`` with status
"completed" and all its epochs) is not trained again, and a finished evaluation (``evaluation_test.json``
newer than the run's summary, with the same number of importance samples) is not repeated, so an
interrupted reproduction continues where it stopped. A killed run is resumed from its backup by
``tflatent.train`` itself.

Scales: ``paper`` uses ``configs/<dataset>_<model>.yaml`` (paper sizes, for GPUs). ``cpu`` uses
``configs/<dataset>_<model>_small.yaml``; a row without one (the PTB ablations and AF-only) gets the
paper config plus ``--set`` overrides derived from the data set's AF / AF pair: every field in which
``<dataset>_af_af_small.yaml`` differs from ``<dataset>_af_af.yaml`` (the widths and short schedule of
``_small_flow.yaml``, plus the data set's CPU batch size, steps per epoch and ELBO samples). ``--set``
overrides given here are passed to every train command after those (shrink runs for tests with them).

A data set whose files are missing (and cannot be downloaded) gives rows with status "missing data"
instead of stopping the table. Outputs: ``<out>/table<N>.md``, ``<out>/table<N>.json`` and the run
directories under ``<runs-dir>`` (default ``<out>/runs``; share one between Tables 1 and 2 to train
AF / AF once).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Optional

from pipelines import curves, provenance
from tflatent import config as config_lib
from tflatent.json_files import read_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")
SCALES = ("paper", "cpu")

# The paper's figures (Ziegler & Rush, ICML 2019), copied from its tables: test NLL, and for Tables 1–2
# the reconstruction and KL terms of the ELBO. None where the paper gives no figure.
# Table 1 (PTB, bpc). The paper also lists an LSTM of Cooijmans et al. (2017), 1.38 bpc, trained across
# sentence boundaries: not comparable with sentence-wise models, so it is not a row here.
PAPER_TABLE1 = {
    "lstm": {"nll": 1.41, "recon": None, "kl": None},  # "LSTM (sentence-wise)"
    "af_only": {"nll": 2.90, "recon": 0.15, "kl": 2.77},
    "af_af": {"nll": 1.42, "recon": 0.10, "kl": 1.37},
    "af_scf": {"nll": 1.46, "recon": 0.10, "kl": 1.43},
    "iaf_scf": {"nll": 1.63, "recon": 0.21, "kl": 1.55},
}
# Table 2 (PTB ablations of AF / AF, bpc).
PAPER_TABLE2 = {
    "af_af": {"nll": 1.42, "recon": 0.10, "kl": 1.37},
    "ablation_affine": {"nll": 1.50, "recon": 0.11, "kl": 1.51},  # "− NLSq"
    "ablation_no_hidden_flow": {"nll": 1.57, "recon": 0.14, "kl": 1.57},  # "− AF hidden"
    "ablation_affine_no_hidden_flow": {"nll": 1.56, "recon": 0.29, "kl": 1.56},  # "− AF hidden and NLSq"
}
# Table 3 (test NLL, nats per frame; columns Nottingham, Piano, Musedata, JSB in the paper).
PAPER_TABLE3 = {
    "lstm": {"nottingham": 3.43, "piano_midi": 7.77, "muse_data": 7.23, "jsb_chorales": 8.17},
    "af_af": {"nottingham": 2.39, "piano_midi": 8.19, "muse_data": 6.92, "jsb_chorales": 6.53},
    "af_scf": {"nottingham": 2.56, "piano_midi": 8.26, "muse_data": 6.95, "jsb_chorales": 6.64},
    "iaf_scf": {"nottingham": 2.54, "piano_midi": 8.25, "muse_data": 7.06, "jsb_chorales": 6.59},
}

LABELS = {"lstm": "LSTM", "af_only": "AF-only", "af_af": "AF / AF", "af_scf": "AF / SCF",
          "iaf_scf": "IAF / SCF", "ablation_affine": "− NLSq", "ablation_no_hidden_flow": "− AF hidden",
          "ablation_affine_no_hidden_flow": "− AF hidden and NLSq"}
TABLE_MODELS = {1: list(PAPER_TABLE1), 2: list(PAPER_TABLE2), 3: list(PAPER_TABLE3)}
TABLE_DATASETS = {1: ["ptb"], 2: ["ptb"], 3: list(config_lib.MUSIC_DATASETS)}
UNITS = {1: "bits per character", 2: "bits per character", 3: "nats per frame"}
TITLES = {1: "Table 1: character-level language modelling on PTB (test)",
          2: "Table 2: ablations of AF / AF on PTB (test)",
          3: "Table 3: polyphonic music, test NLL"}


@dataclasses.dataclass
class Row:
    """One model on one data set: the commands that produce it and, once run, its figures."""

    key: str  # a key of LABELS
    dataset: str
    config: str  # path of the YAML file
    overrides: list  # --set values deriving the CPU size (see cpu_overrides)
    user_overrides: list  # --set values of this command line, passed after them
    run_dir: str
    paper: dict  # {"nll", "recon", "kl"}, in the table's unit
    status: str = "pending"
    message: str = ""
    ours: dict = dataclasses.field(default_factory=dict)
    train_seconds: Optional[float] = None
    evaluate_seconds: Optional[float] = None
    samples: Optional[int] = None  # importance samples K of the evaluation
    epochs: Optional[int] = None  # epochs trained (the config's, or fewer after early stopping)
    config_values: dict = dataclasses.field(default_factory=dict)  # the resolved config, as a dict
    curve: list = dataclasses.field(default_factory=list)  # curves.read_curve of the run
    commands: list = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.key]


# ---------------------------------------------------------------------------- rows and commands
def config_name(dataset: str, key: str) -> str:
    """The paper-size config's file stem of a row, e.g. ``ptb_ablation_affine`` or ``jsb_chorales_lstm``."""
    return f"{dataset}_{key}"


def cpu_overrides(dataset: str, config_dir: str = CONFIG_DIR) -> list[str]:
    """``--set`` values that turn a paper-size flow config of ``dataset`` into its CPU size.

    They are the fields in which ``<dataset>_af_af_small.yaml`` differs from ``<dataset>_af_af.yaml``
    (``train.run_name`` aside), so a row without its own small config is shrunk exactly as AF / AF is.
    """
    paper = config_lib.load(os.path.join(config_dir, f"{dataset}_af_af.yaml")).to_dict()
    small = config_lib.load(os.path.join(config_dir, f"{dataset}_af_af_small.yaml")).to_dict()
    return [f"{section}.{key}={json.dumps(value)}"
            for section, values in small.items() for key, value in values.items()
            if value != paper[section][key] and (section, key) != ("train", "run_name")]


def resolve_config(dataset: str, key: str, scale: str, config_dir: str = CONFIG_DIR) -> tuple[str, list[str]]:
    """(config path, derived overrides) of a row at ``scale`` (see the module docstring)."""
    stem = config_name(dataset, key)
    if scale == "cpu":
        small = os.path.join(config_dir, f"{stem}_small.yaml")
        if os.path.exists(small):
            return small, []
        return os.path.join(config_dir, f"{stem}.yaml"), cpu_overrides(dataset, config_dir)
    return os.path.join(config_dir, f"{stem}.yaml"), []


def paper_figures(table: int, dataset: str, key: str) -> dict:
    if table == 3:
        return {"nll": PAPER_TABLE3[key][dataset], "recon": None, "kl": None}
    return dict((PAPER_TABLE1 if table == 1 else PAPER_TABLE2)[key])


def make_rows(table: int, scale: str, datasets: list[str], models: list[str], runs_dir: str,
              user_overrides: list[str]) -> list[Row]:
    rows = []
    for dataset in datasets:
        for key in models:
            config, derived = resolve_config(dataset, key, scale)
            run_dir = os.path.join(runs_dir, os.path.splitext(os.path.basename(config))[0])
            rows.append(Row(key, dataset, config, derived, list(user_overrides), run_dir,
                            paper_figures(table, dataset, key)))
    return rows


def train_command(row: Row) -> list[str]:
    command = [sys.executable, "-m", "tflatent.train", "--config", row.config]
    for override in row.overrides + row.user_overrides:
        command += ["--set", override]
    return command + ["--run-dir", row.run_dir]


def evaluate_command(row: Row, samples: Optional[int]) -> list[str]:
    command = [sys.executable, "-m", "tflatent.evaluate", "--run", row.run_dir, "--split", "test"]
    return command + (["--samples", str(samples)] if samples else [])


# ---------------------------------------------------------------------------- running
def training_finished(row: Row, config: config_lib.Config) -> Optional[dict]:
    """The run's summary if it completed every epoch of ``config``, else None."""
    summary = read_json(os.path.join(row.run_dir, "summary.json"))
    if summary and summary.get("status") == "completed" and summary.get("epochs_completed", 0) >= config.train.epochs:
        return summary
    return None


def evaluation_finished(row: Row, samples: int) -> Optional[dict]:
    """The run's test evaluation if it is newer than its training and used ``samples`` samples, else None."""
    path = os.path.join(row.run_dir, "evaluation_test.json")
    record = read_json(path)
    summary_path = os.path.join(row.run_dir, "summary.json")
    if record is None or record.get("samples") != samples:
        return None
    if os.path.getmtime(path) < os.path.getmtime(summary_path):
        return None
    return record


def data_missing(config: config_lib.Config) -> Optional[str]:
    """None when the data set of ``config`` can be loaded (prepared or downloaded), else why not."""
    from tflatent import data
    from tflatent.data.sources import DataNotFoundError
    try:
        data.load_dataset(config.data, config.train.seed)
    except DataNotFoundError as err:
        return str(err).split(" Looked in:")[0]
    return None


def run_command(command: list[str]) -> int:
    print("$ " + shlex.join(command), flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    return subprocess.run(command, env=env).returncode


def figures(table: int, record: dict) -> dict:
    """Our figures in the table's unit from an evaluation record (nats per token → bits for Tables 1–2)."""
    if table == 3:
        return {"nll": record["nats_per_frame"], "recon": record.get("recon"), "kl": record.get("kl")}
    bits = lambda value: None if value is None else value / math.log(2.0)  # noqa: E731
    return {"nll": record["bpc"], "recon": bits(record.get("recon")), "kl": bits(record.get("kl"))}


def run_row(row: Row, table: int, samples: Optional[int], missing: dict) -> None:
    """Trains (unless finished) and evaluates (unless done) one row, filling its status and figures."""
    config = config_lib.load(row.config, row.overrides + row.user_overrides)
    row.config_values = config.to_dict()
    row.commands = [shlex.join(train_command(row)), shlex.join(evaluate_command(row, samples))]
    if row.dataset not in missing:
        missing[row.dataset] = data_missing(config)
    if missing[row.dataset]:
        row.status, row.message = "missing data", missing[row.dataset]
        return
    summary = training_finished(row, config)
    if summary is None:
        code = run_command(train_command(row))
        summary = read_json(os.path.join(row.run_dir, "summary.json"))
        if code != 0 or not training_finished(row, config):
            reason = (summary or {}).get("message") or f"tflatent.train exited with code {code}"
            row.status, row.message = "training failed", reason
            return
    else:
        print(f"{row.run_dir}: finished run, reused", flush=True)
    row.epochs = summary.get("epochs_completed")
    row.curve = curves.read_curve(row.run_dir)
    row.train_seconds = training_seconds(summary, row.curve)
    k = samples or config.train.nll_samples
    record = evaluation_finished(row, k)
    if record is None:
        code = run_command(evaluate_command(row, samples))
        record = evaluation_finished(row, k)
        if code != 0 or record is None:
            row.status, row.message = "evaluation failed", f"tflatent.evaluate exited with code {code}"
            return
    else:
        print(f"{row.run_dir}: finished evaluation, reused", flush=True)
    row.evaluate_seconds = record.get("seconds")
    row.samples = record.get("samples")
    row.ours = figures(table, record)
    row.status = "done"


# ---------------------------------------------------------------------------- writing the table
def _number(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def training_seconds(summary: dict, curve: list[dict]) -> Optional[float]:
    """A run's training time over all its sessions: the larger of summary.json's ``total_seconds`` and
    the learning curve's time at its last epoch.

    ``total_seconds`` adds each session's whole duration (start-up included) to the previous summary's,
    so it misses every session that was killed before writing one (a machine stopped midway). The curve
    sums the epochs of every session from the TensorBoard logs, start-up excluded. Each undercounts what
    the other counts; neither counts time twice.
    """
    known = [value for value in (summary.get("total_seconds"), (curve[-1]["seconds"] if curve else None))
             if value is not None]
    return max(known) if known else None


def markdown(table: int, scale: str, rows: list[Row], seconds: float) -> str:
    lines = [f"# {TITLES[table]} ({UNITS[table]}), scale {scale}", ""]
    if table == 3:
        datasets = list(dict.fromkeys(row.dataset for row in rows))
        lines += ["| Model | " + " | ".join(f"{d} ours | {d} paper" for d in datasets) + " |",
                  "|---|" + "---:|---:|" * len(datasets)]
        for key in dict.fromkeys(row.key for row in rows):
            cells = []
            for dataset in datasets:
                row = next(r for r in rows if r.key == key and r.dataset == dataset)
                ours = _number(row.ours.get("nll")) if row.status == "done" else row.status
                cells += [ours, _number(row.paper["nll"])]
            lines.append(f"| {LABELS[key]} | " + " | ".join(cells) + " |")
    else:
        lines += ["| Model | Test NLL ours | paper | Reconst. ours | paper | KL ours | paper |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            cells = []
            for term in ("nll", "recon", "kl"):
                ours = row.status if row.status != "done" and term == "nll" else _number(row.ours.get(term))
                cells += [ours, _number(row.paper[term])]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", "| Row | Config | Status | Epochs | Train (s) | Evaluate (s) | K |",
              "|---|---|---|---:|---:|---:|---:|"]
    for row in rows:
        config = os.path.relpath(row.config, REPO) + "".join(f" --set {o}" for o in row.overrides)
        status = row.status + (f": {row.message}" if row.message else "")
        lines.append(f"| {row.label}, {row.dataset} | `{config}` | {status} | {row.epochs or '—'} | "
                     f"{_number(row.train_seconds)} | {_number(row.evaluate_seconds)} | "
                     f"{'—' if row.samples is None or row.key == 'lstm' else row.samples} |")
    extra = rows[0].user_overrides if rows else []
    if extra:
        lines += ["", "Every train command also had " + " ".join(f"`--set {o}`" for o in extra) + "."]
    terms = "" if table == 3 else " Reconstruction and KL: the ELBO's two terms, in bits per character."
    lines += ["", "NLL: importance-sampled with K samples (exact for the LSTM), normalised by Σ(T + 1) over the "
              f"test split, as in the reference (docs/reference.md §5.1, §5.4).{terms} Paper figures: "
              f"Ziegler & Rush (2019), Table {table}. This invocation took {seconds:.0f} s (finished runs are "
              "reused; the times of each run are above).", ""]
    return "\n".join(lines)


def write_outputs(out: str, table: int, scale: str, rows: list[Row], samples: Optional[int],
                  started: float) -> dict:
    seconds = time.time() - started
    result = {"table": table, "scale": scale, "unit": UNITS[table], "samples": samples,
              "finished": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": round(seconds, 1),
              "machine": provenance.machine(), "rows": [dataclasses.asdict(row) | {"label": row.label} for row in rows]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"table{table}.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(table, scale, rows, seconds)
    with open(os.path.join(out, f"table{table}.md"), "w") as f:
        f.write(text)
    for dataset in dict.fromkeys(row.dataset for row in rows):
        shown = [row for row in rows if row.dataset == dataset and row.curve]
        if shown:
            curves.plot_curves({row.label: row.curve for row in shown}, os.path.join(out, f"curves_{dataset}.png"),
                               title=f"{dataset}, scale {scale}", unit=UNITS[table], scale=curve_scale(table),
                               paper={row.label: row.paper["nll"] for row in shown})
    return result


def curve_scale(table: int) -> float:
    """Factor from the logged validation NLL (nats per token) to the table's unit."""
    return 1.0 if table == 3 else 1.0 / math.log(2.0)


# ---------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.reproduce_table", description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=int, required=True, choices=(1, 2, 3))
    parser.add_argument("--scale", default="cpu", choices=SCALES,
                        help="paper: paper-size configs (GPUs); cpu: the *_small configs (default)")
    parser.add_argument("--datasets", nargs="+", help="Table 3: music sets (default: all four)")
    parser.add_argument("--models", nargs="+", help="only these rows (default: all of the table's rows)")
    parser.add_argument("--out", help="output directory (default: outputs/table<N>_<scale>)")
    parser.add_argument("--runs-dir", help="where the run directories go (default: <out>/runs)")
    parser.add_argument("--samples", type=int, help="importance samples for evaluation (default: train.nll_samples)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override passed to every train command (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)
    allowed_datasets, allowed_models = TABLE_DATASETS[args.table], TABLE_MODELS[args.table]
    args.datasets = args.datasets or allowed_datasets
    args.models = args.models or allowed_models
    for name, values, allowed in (("--datasets", args.datasets, allowed_datasets),
                                  ("--models", args.models, allowed_models)):
        wrong = [v for v in values if v not in allowed]
        if wrong:
            parser.error(f"{name} {' '.join(wrong)}: Table {args.table} has {', '.join(allowed)}")
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples = {args.samples} must be >= 1")
    args.out = args.out or os.path.join("outputs", f"table{args.table}_{args.scale}")
    args.runs_dir = args.runs_dir or os.path.join(args.out, "runs")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    try:
        rows = make_rows(args.table, args.scale, args.datasets, args.models, args.runs_dir, args.set)
        for row in rows:
            config_lib.load(row.config, row.overrides + row.user_overrides)  # a bad --set fails here
    except config_lib.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for row in rows:
            print(shlex.join(train_command(row)))
            print(shlex.join(evaluate_command(row, args.samples)))
        return 0
    missing: dict = {}
    for row in rows:
        run_row(row, args.table, args.samples, missing)
        result = write_outputs(args.out, args.table, args.scale, rows, args.samples, started)  # so far
    print(markdown(args.table, args.scale, rows, result["seconds"]))
    print(f"written to {os.path.join(args.out, f'table{args.table}.md')} and table{args.table}.json")
    return 0 if all(row.status in ("done", "missing data") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
