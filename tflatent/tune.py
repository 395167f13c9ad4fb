"""``python -m tflatent.tune``: hyper-parameter search with KerasTuner (:mod:`tflatent.tuning.tuner`)."""

import sys

from tflatent.tuning.tuner import main

if __name__ == "__main__":
    sys.exit(main())
