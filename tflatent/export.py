"""``python -m tflatent.export``: export a trained run as a TF-Serving SavedModel (:mod:`tflatent.serving.export`)."""

import sys

from tflatent.serving.export import main

if __name__ == "__main__":
    sys.exit(main())
