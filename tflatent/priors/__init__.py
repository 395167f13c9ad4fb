"""The latent prior p(z | T): within-timestep ("hidden") flows and time-level flows."""

from tflatent.priors.hidden_flow import (
                                         AutoregressiveHiddenFlow,
                                         CouplingHiddenFlow,
                                         ElementwiseHiddenFlow,
                                         HiddenFlow,
                                         make_hidden_flow,
)
from tflatent.priors.time_flow import TimeFlowPrior

__all__ = ["AutoregressiveHiddenFlow", "CouplingHiddenFlow", "ElementwiseHiddenFlow", "HiddenFlow",
           "TimeFlowPrior", "make_hidden_flow"]
