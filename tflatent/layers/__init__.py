"""Keras 3 networks: masked dense / MADE, the coupling conditioner, the reference's MLP."""

from tflatent.layers.coupling import CouplingConditioner
from tflatent.layers.feed_forward import FeedForwardNet
from tflatent.layers.made import MADE
from tflatent.layers.masked_dense import MaskedDense

__all__ = ["CouplingConditioner", "FeedForwardNet", "MADE", "MaskedDense"]
