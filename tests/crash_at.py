"""``python tests/crash_at.py EVENT SUFFIX N standin_model.py-ARGS...``: a crash at a chosen file operation.

Runs ``tests/standin_model.py`` with an audit hook (:func:`sys.addaudithook`) that SIGKILLs the process
when Python is about to perform ``EVENT`` for the ``N``-th time (``open`` for writing, or ``os.rename``,
also raised by ``os.replace``) on
a path ending in ``SUFFIX``: the operation never happens, as when a machine dies at that instant. No
code of the package is changed or replaced.
"""

import os
import runpy
import signal
import sys


def install(event: str, suffix: str, count: int = 1) -> None:
    seen = [0]

    def hook(name, args):
        if name != event:
            return
        if name == "open":
            path, mode = args[0], args[1]
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            hit = writing and isinstance(path, str) and path.endswith(suffix)
        else:  # os.rename: (src, dst, ...)
            hit = str(args[1]).endswith(suffix)
        if hit:
            seen[0] += 1
            if seen[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


if __name__ == "__main__":
    event, suffix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.argv = [os.path.join(os.path.dirname(__file__), "standin_model.py")] + sys.argv[4:]
    install(event, suffix, count)
    runpy.run_path(sys.argv[0], run_name="__main__")
