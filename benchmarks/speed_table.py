"""The side-by-side tables of ``benchmarks/README.md`` from a ``model_speed.py --against-reference`` JSON.

    python benchmarks/speed_table.py RUN.json                          # the markdown on stdout
    python benchmarks/speed_table.py RUN.json --readme benchmarks/README.md   # rewrites its table block

The README's block lies between ``<!-- speed-table:begin -->`` and ``<!-- speed-table:end -->``; everything
else in the file is kept. The tables state the run's CPU, commit and date; each row gives both times
(median, with the min–max of the timed calls), ours in CPU seconds too, the speed-up (authors' s / ours:
> 1 means tflatent is faster), both peak RSS and the 1-min load average before our job.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"
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


def row(result: dict) -> str:
    if "error" in result:
        return f"| {result['name']} | | failed: {result['error'].splitlines()[-1][:80]} | | | | | |"
    ref = result.get("reference") or {}
    speedup = result.get("speedup")
    return " | ".join(["", result["name"].split("/", 1)[1], result["batch"],
                       seconds(ref) if ref.get("seconds") is not None else "–",
                       seconds(result), f"{result['cpu_seconds']:.3g}",
                       "–" if speedup is None else f"**{speedup:.2f}×**" if speedup < 1 else f"{speedup:.2f}×",
                       f"{optional(result.get('peak_rss_gb'), '.2f')} / {optional(ref.get('peak_rss_gb'), '.2f')}",
                       f"{result['load_average_before'][0]:.1f}", ""]).strip()


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
                  "| case | batch | authors' s | tflatent s | tflatent CPU s | speed-up | peak RSS GB (ours / "
                  "authors') | load |", "|---|---|---:|---:|---:|---:|---:|---:|",
                  *map(row, rows), ""]
    lines.append("Speed-up = authors' s / tflatent s (> 1: tflatent is faster; bold: slower). Load = 1-min "
                 "load average before our job.")
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
