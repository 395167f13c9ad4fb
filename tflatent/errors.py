"""The faults a user can fix, which the command line reports as one line on stderr with exit status 2.

Everything else that escapes an entry point is a bug and keeps its traceback. ``ConfigError``
(:mod:`tflatent.config`) is one of these too.
"""

from __future__ import annotations


class ExpectedError(Exception):
    """A fault in the user's input or environment; its message names the problem and the fix."""


class DataError(ExpectedError):
    """A data file that is missing, damaged or holds values the model cannot take."""


class CheckpointError(ExpectedError):
    """A checkpoint that is missing or damaged, with no good one to fall back to."""


class DiskError(ExpectedError):
    """A file could not be written (disk full, I/O error); what was written before is kept."""
