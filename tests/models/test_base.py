"""The model contract: both models through one interface, the registry, and .keras round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflatent import config as config_lib
from tflatent.models.base import SequenceModel
from tflatent.models.latent_flow import LatentFlowModel
from tflatent.models.lstm_baseline import LSTMBaseline
from tflatent.models.registry import MODELS

V, MAX_T = 7, 6
LOG_P_T = np.log(np.full(MAX_T + 1, 1.0 / (MAX_T + 1))).astype(np.float32)
X = tf.constant([[2, 3, 4, 5, 0, 0], [6, 2, 0, 0, 0, 0]], tf.int32)
LENGTHS = tf.constant([4, 2], tf.int32)


def flow_model(**overrides):
    keras.utils.set_random_seed(0)
    model = LatentFlowModel(V, False, MAX_T, LOG_P_T, elbo_samples=2, embedding_size=8, z_size=4,
                            hidden_size=6, prior_rnn_units=6, hidden_flow_layers=2, hidden_flow_units=8,
                            position_encoding="sinusoidal", position_encoding_size=4, **overrides)
    model.build()
    return model


def baseline_model():
    keras.utils.set_random_seed(0)
    model = LSTMBaseline(V, MAX_T, LOG_P_T, embedding_size=8, hidden_size=8, num_layers=1)
    model.build()
    return model


def test_the_registry_holds_every_model_type_of_the_config():
    assert tuple(MODELS) == config_lib.MODEL_TYPES
    assert all(issubclass(cls, SequenceModel) for cls in MODELS.values())


def test_the_kl_weight_and_the_samples_are_explicit():
    flow, baseline = flow_model(), baseline_model()
    assert flow.has_latent and flow.kl_weight is flow.beta and not flow.kl_weight.trainable
    assert not baseline.has_latent and baseline.kl_weight is None
    with pytest.raises(ValueError, match="is exact: num_samples=3"):
        baseline.log_likelihood(X, LENGTHS, num_samples=3)
    with pytest.raises(ValueError, match="needs num_samples"):
        flow.log_likelihood(X, LENGTHS)
    for model in (flow, baseline):
        np.testing.assert_allclose(model.length_log_prob(LENGTHS), LOG_P_T[[4, 2]])


def test_one_split_evaluation_for_both_models():
    batches = [(X, LENGTHS), (X[:1], LENGTHS[:1])]
    exact = baseline_model().evaluate_nll(batches, num_samples=5, chunk=2)  # the samples do not apply
    baseline = baseline_model()
    expected = -sum(float(tf.reduce_sum(baseline.log_likelihood(x, lengths))) for x, lengths in batches)
    assert exact["nll"] == pytest.approx(expected / (5 + 3 + 5), rel=1e-6) and "elbo" not in exact
    sampled = flow_model().evaluate_nll(batches, num_samples=4, chunk=3)
    assert {"nll", "bpc", "elbo", "recon", "kl", "sequences", "tokens"} <= set(sampled)
    minus_log_p_T = float(-2 * LOG_P_T[4] - LOG_P_T[2]) / 13
    assert sampled["elbo"] == pytest.approx(sampled["recon"] + sampled["kl"] + minus_log_p_T, rel=1e-5)


def test_split_evaluation_compiles_with_xla_on_request():
    """XLA computes the exact NLL to float rounding; a latent model's estimate then uses XLA's own random
    draws (another estimate than without XLA: the functions were compiled, not run as traced)."""
    batches = [(X, LENGTHS)]  # one shape: one compilation of each function
    model = baseline_model()
    assert model.evaluate_nll(batches, jit_compile=True)["nll"] == pytest.approx(
        model.evaluate_nll(batches)["nll"], rel=1e-5)
    model = flow_model()
    plain = model.evaluate_nll(batches, num_samples=4, chunk=3)
    compiled = model.evaluate_nll(batches, num_samples=4, chunk=3, jit_compile=True)
    assert compiled == model.evaluate_nll(batches, num_samples=4, chunk=3, jit_compile=True)  # seeded
    assert compiled["nll"] != plain["nll"] and compiled["nll"] == pytest.approx(plain["nll"], rel=0.2)
    assert compiled["recon"] != plain["recon"]  # the ELBO pass is compiled too


def attention_prior_flow_model():
    return flow_model(prior_network="transformer", attention_units=8, attention_heads=2, attention_feed_forward_units=8)


@pytest.mark.parametrize("make", [flow_model, attention_prior_flow_model, baseline_model],
                         ids=["flow", "flow-attention-prior", "lstm"])
def test_a_keras_file_round_trips_with_the_shared_layers_shared(make, tmp_path):
    model = make()
    model.build_from_config(model.get_build_config())  # as KerasTuner's Hyperband does: a no-op once built
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    kwargs = {"num_samples": 3, "seed": 1} if model.has_latent else {}
    np.testing.assert_allclose(loaded.log_likelihood(X, LENGTHS, **kwargs),
                               model.log_likelihood(X, LENGTHS, **kwargs), rtol=1e-6)
    if model.has_latent:  # the tied output and q(z|x) read the one embedding
        assert loaded.inference_net.embedding is loaded.embedding is loaded.emission.embedding
