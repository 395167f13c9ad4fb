"""``python -m tflatent.serve``: Serve an exported SavedModel over TF Serving's REST API (:mod:`tflatent.serving.server`)."""

import sys

from tflatent.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
