"""``tflatent <command> [options]``: one command for every entry point.

``tflatent train --config configs/jsb_chorales_af_af_small.yaml`` is ``python -m tflatent.train --config ...``,
and so for ``evaluate``, ``generate``, ``export``, ``serve`` and ``tune``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "train a model from a config",
    "evaluate": "importance-sampled NLL of a trained run",
    "generate": "sample sequences from a trained run",
    "export": "export a trained run as a TF-Serving SavedModel",
    "serve": "serve an exported SavedModel over TF Serving's REST API",
    "tune": "hyper-parameter search with KerasTuner",
}


def usage() -> str:
    lines = ["usage: tflatent <command> [options]   (tflatent <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"tflatent: unknown command {command!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # Each entry point module is imported only when asked for (TensorFlow imports take seconds).
    entry = importlib.import_module(f"tflatent.{command}")
    return entry.main(rest)


if __name__ == "__main__":
    sys.exit(main())
