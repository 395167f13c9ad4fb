"""Helpers shared by the flow tests (not a test module)."""

import numpy as np


def randomize_weights(layer, scale, seed=0):
    """Sets every weight of ``layer`` to N(0, scale²), so that no path is trivially ≈ 0."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(weight.dtype))
