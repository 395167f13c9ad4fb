"""The side-by-side tables of ``benchmarks/README.md`` from a ``model_speed.py --against-reference`` JSON.

    python benchmarks/speed_table.py RUN.json                          # the markdown on stdout
    python benchmarks/speed_table.py RUN.json --readme benchmarks/README.md   # rewrites its table block

The README's block lies between ``<!-- speed-table:begin -->`` and ``<!-- speed-table:end -->``; everything
else in the file is kept. The tables state the run's CPU, commit and date; each row gives both times
(median, with the min–max of the timed calls), ours in CPU seconds too, the speed-up (authors' s / ours:
> 1 means tflatent is faster), whether it meets its goal and by how much it misses, both peak RSS with
the memory goal, and the 1-min load average before our job.

Goals (one place: the constants below): every row at least ``SPEEDUP_GOAL`` × the authors' speed (the
IAF/SCF sampler's "at most half the authors' time" is the same bound); the rows of ``SECONDS_GOALS`` also
within that many seconds; peak RSS at most the authors' + ``MEMORY_ALLOWANCE_GB`` (TensorFlow's own
runtime).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"
SPEEDUP_GOAL = 2.0
SECONDS_GOALS = {"generate/ptb_af_af/T256": 1.0}  # AF/AF's 256-step sample within a second
MEMORY_ALLOWANCE_GB = 0.75
SECTIONS = (("train", "Training steps (forward, backward, optimizer update)"),
            ("nll", "Importance-sampled NLL, K = 30"),
            ("generate", "Generation, batch 1, paper-size PTB models (untrained weights)"))


def fail(message: str):
    """Bad input: one line on stderr, exit status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def seconds(figures: dict) -> str:
    spread = (f" ({figures['seconds_min']:.3g}–{figures['seconds_max']:.3g})"
              if figures.get("repetitions", 1) > 1 and figures.get("seconds_min") is not None else "")
    return f"{figures['seconds']:.3g}{spread}"


def optional(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def speed_verdict(result: dict) -> str:
    """"met", or "no: " and what is missing (the speed-up's factor short of the goal, the seconds over)."""
    speedup = result.get("speedup")
    if speedup is None:
        return "–"
    misses = []
    if speedup < SPEEDUP_GOAL:
        misses.append(f"{SPEEDUP_GOAL / speedup:.2f}× short")
    limit = SECONDS_GOALS.get(result["name"])
    if limit is not None and result["seconds"] > limit:
        misses.append(f"{result['seconds'] - limit:.2g} s over {limit:g} s")
    return "no: " + ", ".join(misses) if misses else "met"


def memory_verdict(result: dict) -> str:
    ours, theirs = result.get("peak_rss_gb"), (result.get("reference") or {}).get("peak_rss_gb")
    if ours is None or theirs is None:
        return "–"
    over = ours - theirs - MEMORY_ALLOWANCE_GB
    return "met" if over <= 0 else f"no: {over:.2f} GB over"


def goal(result: dict) -> str:
    limit = SECONDS_GOALS.get(result["name"])
    return f"≥ {SPEEDUP_GOAL:g}×" + (f", ≤ {limit:g} s" if limit is not None else "")


def row(result: dict) -> str:
    if "error" in result:
        return f"| {result['name']} | | failed: {result['error'].splitlines()[-1][:80]} | | | | | | | | |"
    ref = result.get("reference") or {}
    speedup = result.get("speedup")
    return " | ".join(["", result["name"].split("/", 1)[1], result["batch"],
                       seconds(ref) if ref.get("seconds") is not None else "–",
                       seconds(result), f"{result['cpu_seconds']:.3g}",
                       "–" if speedup is None else f"**{speedup:.2f}×**" if speedup < 1 else f"{speedup:.2f}×",
                       goal(result), speed_verdict(result),
                       f"{optional(result.get('peak_rss_gb'), '.2f')} / {optional(ref.get('peak_rss_gb'), '.2f')}",
                       memory_verdict(result), f"{result['load_average_before'][0]:.1f}", ""]).strip()


def tables(report: dict) -> str:
    machine = report["machine"]
    results = report["results"]
    torch = next((r["reference"].get("torch") for r in results if r.get("reference")), None)
    lines = [f"Run of {report.get('date', '?')} at commit {report.get('commit', '?')}: "
             f"`{report['command']}` ({report['total_seconds'] / 60:.0f} min). CPU: {machine.get('cpu', '?')}, "
             f"{machine['cpus']} cores; TensorFlow {machine['tensorflow']}"
             + (f", the authors' code on PyTorch {torch}" if torch else "") + ". Each job ran the authors' code "
             "first, then ours, never both at once. Seconds: median of the timed calls (min–max).",
             ""]
    for section, title in SECTIONS:
        rows = [r for r in results if r.get("section") == section]
        if not rows:
            continue
        lines += [f"### {title}", "",
                  "| case | batch | authors' s | tflatent s | tflatent CPU s | speed-up | goal | met | peak RSS GB "
                  f"(ours / authors') | memory ≤ authors' + {MEMORY_ALLOWANCE_GB:g} GB | load |",
                  "|---|---|---:|---:|---:|---:|---|---|---:|---|---:|",
                  *map(row, rows), ""]
    compared = [r for r in results if "error" not in r and r.get("speedup") is not None]
    speed_met = sum(speed_verdict(r) == "met" for r in compared)
    memory_met = sum(memory_verdict(r) == "met" for r in compared)
    lines.append("Speed-up = authors' s / tflatent s (> 1: tflatent is faster; bold: slower). Load = 1-min "
                 f"load average before our job. Speed goal met in {speed_met} of {len(compared)} rows, memory "
                 f"goal in {memory_met} of {len(compared)}.")
    return "\n".join(lines)


def replace_block(text: str, block: str, path: str) -> str:
    if BEGIN not in text or END not in text:
        fail(f"speed_table.py: {path} has no {BEGIN} … {END} block to replace; add the two markers")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the JSON of model_speed.py --against-reference --output RUN.json")
    parser.add_argument("--readme", help="rewrite this file's speed-table block instead of printing")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.run).read_text())
    if not report.get("reference"):
        fail(f"speed_table.py: {args.run} was not run with --against-reference; it has no "
                         "reference figures to set beside ours")
    block = tables(report)
    if args.readme:
        path = Path(args.readme)
        path.write_text(replace_block(path.read_text(), block, args.readme))
    else:
        print(block)
    return block


if __name__ == "__main__":
    sys.exit(main() and 0)
