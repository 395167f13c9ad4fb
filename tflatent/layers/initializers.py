"""Initialisers of the reference (uniform in ±scale), one fresh object per weight.

A Keras 3 initializer draws the same values at every call (its seed is fixed when it is created), so
one object shared by several weights gives them identical or overlapping values. ``uniform`` returns a
new object each time: call it once per weight.
"""

import keras


def uniform(scale):
    """A new U(−scale, scale) initialiser."""
    return keras.initializers.RandomUniform(-scale, scale)
