"""``python -m tflatent.serve``: TF Serving's REST API for an export (:mod:`tflatent.serving.server`)."""

import sys

from tflatent.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
