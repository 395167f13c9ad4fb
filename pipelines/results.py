"""Collect finished reproductions into the repository's ``results/``: JSON, a Markdown table and curves.

``pipelines.reproduce_table`` writes one ``table<N>.json`` per invocation (one scale, one schedule).
This command gathers several of them — e.g. JSB at CPU width with two schedules, JSB at paper size and
Nottingham — into one table that sets every row beside the paper's figure and the project's goal for it::

    python -m pipelines.results --table 3 --name table3_cpu --out results \\
        --source "cpu, KL 10+10 / 40 epochs=outputs/jsb_cpu/table3.json" \\
        --source "cpu, reference schedule KL 20+15 / 100=outputs/jsb_cpu_ref/table3.json" \\
        --source "paper size=outputs/jsb_paper/table3.json"

Writes ``<out>/<name>.json`` (every row with its variant, test NLL, K, epochs, wall time, validation curve,
config and the machine and code version of its invocation), ``<out>/<name>.md`` (regenerated from that
JSON alone: ``--from-json`` rebuilds the Markdown and the figures without the sources) and
``<out>/<name>_<dataset>.png`` (validation NLL against training time and epochs, every row of the data set
on one axis). Checkpoints and run directories are never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from pipelines import curves
from pipelines.reproduce_table import LABELS, PAPER_TABLE3, UNITS, curve_scale

# Goals of the CPU reproduction of Table 3 (nats per frame): (data set, scale, models, kind, value).
# "at_most": the test NLL at or below value; "below_lstm": below the LSTM row of the same variant.
GOALS_TABLE3 = (
    ("jsb_chorales", "cpu", ("af_af", "af_scf", "iaf_scf"), "at_most", 7.0),
    ("jsb_chorales", "paper", ("af_af",), "at_most", PAPER_TABLE3["af_af"]["jsb_chorales"]),
    ("nottingham", "cpu", ("af_af", "af_scf", "iaf_scf"), "below_lstm", None),
)


def read_source(spec: str) -> tuple[str, dict]:
    """``"variant=path/to/table3.json"`` → (variant, the JSON)."""
    variant, sep, path = spec.rpartition("=")  # the last "=": a variant may say "K = 50"
    if not sep or not variant.strip() or not path.strip():
        raise ValueError(f"--source {spec!r}: write it as VARIANT=PATH, e.g. \"cpu, KL 10+10=outputs/t/table3.json\"")
    if not os.path.exists(path):
        raise ValueError(f"--source {spec!r}: {path} does not exist; run pipelines.reproduce_table first")
    with open(path) as f:
        return variant.strip(), json.load(f)


def collect(table: int, sources: list[tuple[str, dict]]) -> dict:
    """Every finished row of the sources, tagged with its variant, in one record."""
    rows = []
    for variant, record in sources:
        if record.get("table") != table:
            raise ValueError(f"source {variant!r} is Table {record.get('table')}, not Table {table}")
        for row in record["rows"]:
            if row["status"] != "done":
                continue
            rows.append({"variant": variant, "scale": record["scale"], "machine": record.get("machine"),
                         **{k: row.get(k) for k in ("key", "label", "dataset", "config", "overrides",
                                                    "user_overrides", "paper", "ours", "samples", "epochs",
                                                    "train_seconds", "evaluate_seconds", "config_values",
                                                    "curve", "commands")}})
    return {"table": table, "unit": UNITS[table], "rows": rows}


def goal(row: dict, rows: list[dict]) -> Optional[str]:
    """The goal of ``row`` and whether it is met, as table text; None when it has none."""
    nll = row["ours"]["nll"]
    for dataset, scale, models, kind, value in GOALS_TABLE3:
        if (row["dataset"], row["scale"]) != (dataset, scale) or row["key"] not in models:
            continue
        if kind == "below_lstm":
            lstm = next((r for r in rows if r["key"] == "lstm" and r["dataset"] == dataset
                         and r["scale"] == scale), None)
            if lstm is None:
                return "below the LSTM: no LSTM row yet"
            value = lstm["ours"]["nll"]
            target = f"< LSTM {value:.2f}"
            met = nll < value
        else:
            target = f"≤ {value:.2f}"
            met = nll <= value
        return f"{target}: met" if met else f"{target}: missed by {nll - value:.2f}"
    return None


def convergence(row: dict) -> str:
    """Where the validation NLL was best, and how much it moved over the last quarter of the epochs."""
    points = [p for p in row.get("curve") or [] if p.get("val_nll") is not None]
    if len(points) < 2:
        return "—"
    best = min(points, key=lambda p: p["val_nll"])
    tail = [p for p in points if p["epoch"] >= 0.75 * points[-1]["epoch"]]
    change = tail[-1]["val_nll"] - tail[0]["val_nll"] if len(tail) > 1 else 0.0
    return f"best at epoch {best['epoch'] + 1} of {points[-1]['epoch'] + 1}; last quarter {change:+.2f}"


def _num(value: Optional[float], digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(record: dict, name: str) -> str:
    table, unit, rows = record["table"], record["unit"], record["rows"]
    lines = [f"# {name}: Table {table} reproduced on this machine ({unit}, test split)", ""]
    lines += ["| Data set | Model | Variant | Test NLL | Paper | Goal | K | Epochs | Train (min) | Validation curve |",
              "|---|---|---|---:|---:|---|---:|---:|---:|---|"]
    order = {key: i for i, key in enumerate(LABELS)}
    for row in sorted(rows, key=lambda r: (r["dataset"], r["scale"], r["variant"], order[r["key"]])):
        k = "exact" if row["key"] == "lstm" else row["samples"]
        minutes = None if row["train_seconds"] is None else row["train_seconds"] / 60.0
        lines.append(f"| {row['dataset']} | {row['label']} | {row['variant']} | {_num(row['ours']['nll'])} | "
                     f"{_num(row['paper']['nll'])} | {goal(row, rows) or '—'} | {k} | {row['epochs'] or '—'} | "
                     f"{_num(minutes, 0)} | {convergence(row)} |")
    machines = sorted({(r["machine"] or {}).get("cpu", "?") for r in rows})
    versions = sorted({(r["machine"] or {}).get("code_version", "?") for r in rows})
    lines += ["", "Test NLL: importance-sampled with K samples (exact for the LSTM), normalised by Σ(T + 1) over "
              f"the test split. Paper: Ziegler & Rush (2019), Table {table}. Train: wall-clock training time, summed "
              f"over the run's sessions unless its variant says otherwise, on {', '.join(machines)} (2 cores, "
              f"shared with other work; code {', '.join(versions)}). The curves "
              f"(`{name}_<dataset>.png`) show the validation NLL against training time and epochs.", ""]
    return "\n".join(lines)


def write(record: dict, out: str, name: str) -> list[str]:
    """Writes the JSON, the Markdown and one PNG per data set; returns the paths written."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.md")]
    with open(paths[0], "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(record, name))
    for dataset in dict.fromkeys(row["dataset"] for row in record["rows"]):
        shown, seen = [], set()
        for row in record["rows"]:  # one line per training run: a re-evaluation (another K) has the same curve
            key = json.dumps(row.get("curve"))
            if row["dataset"] == dataset and row.get("curve") and key not in seen:
                seen.add(key)
                shown.append(row)
        if not shown:
            continue
        label = lambda row: f"{row['label']} ({row['variant']})"  # noqa: E731
        path = os.path.join(out, f"{name}_{dataset}.png")
        curves.plot_curves({label(row): row["curve"] for row in shown}, path, title=f"{dataset}: validation NLL",
                           unit=record["unit"], scale=curve_scale(record["table"]),
                           paper={label(row): row["paper"]["nll"] for row in shown})
        paths.append(path)
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.results", description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--name", required=True, help="file stem of the outputs, e.g. table3_cpu")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.add_argument("--source", action="append", default=[], metavar="VARIANT=PATH",
                        help="a table<N>.json of pipelines.reproduce_table and the variant name of its rows")
    parser.add_argument("--from-json", action="store_true",
                        help="rebuild the Markdown and figures from <out>/<name>.json (no sources)")
    args = parser.parse_args(argv)
    if bool(args.source) == args.from_json:
        parser.error("give either --source (one or more) or --from-json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.from_json:
            path = os.path.join(args.out, f"{args.name}.json")
            if not os.path.exists(path):
                raise ValueError(f"{path} does not exist; run with --source first")
            with open(path) as f:
                record = json.load(f)
        else:
            record = collect(args.table, [read_source(spec) for spec in args.source])
    except (ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in write(record, args.out, args.name):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
