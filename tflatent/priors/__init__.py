"""The latent prior p(z | T): within-timestep ("hidden") flows and time-level flows."""

from tflatent.priors.hidden_flow import HiddenFlow
from tflatent.priors.time_flow import TimeFlowPrior

__all__ = ["HiddenFlow", "TimeFlowPrior"]
