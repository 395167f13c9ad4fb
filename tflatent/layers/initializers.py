"""Initialisers of the reference (uniform in ±scale), one fresh object per weight.

``INIT_SCALE`` = 0.07 is the reference's ``init_range`` for every Linear and embedding of the flow model
(docs/reference.md §4.7).

A Keras 3 initializer draws the same values at every call (its seed is fixed when it is created), so
one object shared by several weights gives them identical or overlapping values. ``uniform`` returns a
new object each time: call it once per weight.
"""

import keras

INIT_SCALE = 0.07


def uniform(scale=INIT_SCALE):
    """A new U(−scale, scale) initialiser (default U(±0.07))."""
    return keras.initializers.RandomUniform(-scale, scale)
