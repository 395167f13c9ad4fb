"""Learning curves of finished or running runs: validation NLL against training time and against epochs.

A run directory (``tflatent.training.run_dir``) logs one row per epoch in ``logs/history.csv``; its
``val_nll`` column is the validation NLL in nats per token normalised by Σ(T + 1) (the importance-sampled
estimate every ``train.nll_every`` epochs for the flow models, the exact NLL every epoch for the LSTM
baseline; "NA" in between). The wall-clock time of each epoch is not in the CSV: it is read from the
TensorBoard event files the run writes (``tensorboard/train/events.out.tfevents.*``), whose ``epoch_loss``
record of epoch e is written when epoch e ends. Each event file is one training session (a resumed run
has several), and its first record is written when that session starts, so the training time of a run
at the end of epoch e is the sum of the epoch durations within sessions: the gap between two sessions
(a stopped machine) is not counted.

::

    curve = read_curve("runs/jsb_chorales_af_af_small")   # [{"epoch", "seconds", "val_nll", ...}, ...]
    plot_curves({"AF / AF": curve, ...}, "curves.png", title="JSB Chorales", unit="nats per frame")
"""

from __future__ import annotations

import csv
import glob
import math
import os
import textwrap
from typing import Optional

# Columns of history.csv copied into a curve point, besides the epoch.
COLUMNS = ("val_nll", "val_loss", "val_recon", "val_kl", "beta", "lr")


def _number(text: Optional[str]) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_history(run_dir: str) -> list[dict]:
    """The rows of ``logs/history.csv`` as {"epoch": int, column: float | None}, last row of an epoch kept."""
    path = os.path.join(run_dir, "logs", "history.csv")
    if not os.path.exists(path):
        return []
    by_epoch: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = _number(row.get("epoch"))
            if epoch is None:
                continue
            by_epoch[int(epoch)] = {"epoch": int(epoch), **{c: _number(row.get(c)) for c in COLUMNS}}
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_end_seconds(run_dir: str) -> dict[int, float]:
    """{epoch: training seconds at its end}, summed over the sessions of the run's TensorBoard logs."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    durations: dict[int, float] = {}
    files = glob.glob(os.path.join(run_dir, "tensorboard", "train", "events.out.tfevents.*"))
    for path in sorted(files, key=os.path.getmtime):
        start, previous = None, None
        try:
            events = list(EventFileLoader(path).Load())
        except Exception:  # noqa: BLE001 — a truncated event file (a killed run) keeps what was read
            continue
        for event in events:
            if start is None:
                start = previous = event.wall_time
            if not event.HasField("summary"):
                continue
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                durations[int(event.step)] = event.wall_time - previous  # a re-run epoch: the last one
                previous = event.wall_time
    seconds, total = {}, 0.0
    for epoch in sorted(durations):
        total += durations[epoch]
        seconds[epoch] = total
    return seconds


def read_curve(run_dir: str) -> list[dict]:
    """Per logged epoch: {"epoch", "seconds" (training time at its end, None if unknown), COLUMNS...}."""
    seconds = epoch_end_seconds(run_dir)
    return [{**row, "seconds": seconds.get(row["epoch"])} for row in read_history(run_dir)]


def plot_curves(curves: dict[str, list[dict]], path: str, title: str, unit: str, scale: float = 1.0,
                paper: Optional[dict[str, float]] = None):
    """Two panels, validation NLL (× ``scale``, in ``unit``) against training time and against epochs;
    writes them to ``path`` and returns the matplotlib ``Figure``.

    ``curves`` maps a line's label to its ``read_curve`` points; points without ``val_nll`` are skipped.
    ``paper`` maps labels to the paper's test figure, drawn as dotted horizontal lines of the same colour.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, no backend switch

    # One legend entry per line, each label wrapped to the figure's width (a row's variant can be long).
    curves = {textwrap.fill(label, 130, subsequent_indent="  "): points for label, points in curves.items()}
    paper = {textwrap.fill(label, 130, subsequent_indent="  "): value for label, value in (paper or {}).items()}
    legend_lines = sum(label.count("\n") + 1 for label in curves)
    figure = Figure(figsize=(12, 4.8 + 0.2 * legend_lines), layout="constrained")
    by_time, by_epoch = figure.subplots(1, 2, sharey=True)
    colours, values, late = {}, [], []
    for label, points in curves.items():
        shown = [p for p in points if p.get("val_nll") is not None]
        if not shown:
            continue
        y = [p["val_nll"] * scale for p in shown]
        values += y
        late += [v for p, v in zip(shown, y) if p["epoch"] >= 0.25 * shown[-1]["epoch"]]
        line, = by_epoch.plot([p["epoch"] + 1 for p in shown], y, marker=".", label=label)
        colours[label] = line.get_color()
        timed = [(p["seconds"] / 60.0, v) for p, v in zip(shown, y) if p.get("seconds") is not None]
        if timed:
            by_time.plot(*zip(*timed), marker=".", color=line.get_color(), label=label)
    for label, value in (paper or {}).items():
        if label in colours and value is not None:
            for axis in (by_time, by_epoch):
                axis.axhline(value, linestyle=":", color=colours[label])
    if values:
        # From the lowest figure (a curve's or the paper's) to the highest after the first quarter of each
        # curve's epochs: the first epochs' figures (the KL annealing's) would flatten the part where the
        # models differ.
        papers = [v for label, v in (paper or {}).items() if label in colours and v is not None]
        low, high = min(values + papers), max(late + papers)
        margin = 0.03 * (high - low) or 0.02 * abs(low) or 1.0
        by_time.set_ylim(low - margin, high + margin)
    by_time.set_xlabel("training time (minutes, this machine)")
    by_epoch.set_xlabel("epoch")
    by_time.set_ylabel(f"validation NLL ({unit})")
    for axis in (by_time, by_epoch):
        axis.grid(True, alpha=0.3)
    # below the panels, never over a curve
    figure.legend(*by_epoch.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize="small")
    figure.suptitle(title + (" (dotted: the paper's test figure)" if paper else ""))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    return figure
