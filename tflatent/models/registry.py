"""The models by ``model.type``, and ``build_model``: the one place a config becomes a model."""

from __future__ import annotations

from tflatent.models.base import SequenceModel
from tflatent.models.latent_flow import LatentFlowModel
from tflatent.models.lstm_baseline import LSTMBaseline

# Keys: tflatent.config.MODEL_TYPES.
MODELS: dict[str, type[SequenceModel]] = {"flow": LatentFlowModel, "lstm": LSTMBaseline}


def build_model(config, bundle) -> SequenceModel:
    """The built model ``config.model.type`` names, on a data bundle (``tflatent.data.load_dataset``)."""
    return MODELS[config.model.type].from_config_fields(config, bundle)
