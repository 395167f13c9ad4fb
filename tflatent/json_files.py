"""Reading and writing the small JSON files of runs, checkpoints, searches and tables."""

from __future__ import annotations

import json
import os
from typing import Optional

from tflatent import atomic_files


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value: dict) -> str:
    """Writes ``value`` to ``path`` atomically (a kill mid-write leaves the previous file); returns the path.

    Raises :class:`tflatent.errors.DiskError` when the file cannot be written."""
    return atomic_files.write_text(path, json.dumps(value, indent=2))
