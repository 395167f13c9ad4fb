"""Mixed precision: LSTMs and dense layers in bfloat16, flows, log-densities and the loss in float32.

``mixed_bfloat16`` is the policy the CPU runs (``mixed_float16`` only differs by the loss scaling,
which Keras adds at ``compile``). Every model here is built under the policy and trained with the
project's optimizer through ``fit``.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflatent import config as config_lib
from tflatent.models.latent_flow import LatentFlowModel
from tflatent.models.lstm_baseline import LSTMBaseline
from tflatent.training import optimizers

SMALL = dict(embedding_size=16, z_size=4, hidden_size=16, prior_rnn_units=16, hidden_flow_layers=2,
             hidden_flow_units=8, position_encoding="sinusoidal", position_encoding_size=8, dropout_locations=[])
STEPS = 20


@contextlib.contextmanager
def policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def short_batches(bundle, batch_size=4, steps=16):
    """The first training batch, cut to ``steps`` steps, repeated (a fixed batch: its loss must fall)."""
    x, lengths = next(iter(bundle.batches("train", training=False, batch_size=batch_size)))
    batch = (x[:, :steps], tf.minimum(lengths, steps))
    return tf.data.Dataset.from_tensors(batch).repeat()


def flow_model(bundle, time_flow, hidden_flow, **overrides):
    keras.utils.set_random_seed(0)
    model = LatentFlowModel(bundle.vocab_size, bundle.is_music, bundle.max_time, bundle.length_prior.log_prob,
                            elbo_samples=2,
                            time_flow=time_flow, hidden_flow=hidden_flow, **{**SMALL, **overrides})
    model.build()
    return model


def train_losses(model, data):
    model.compile(optimizer=optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=3e-3)))
    losses = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    model.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0, callbacks=[callback])
    return np.array(losses)


def assert_trains(losses):
    """Finite, and falling: the last running mean below the first step, and the last steps below the first."""
    assert losses.shape == (STEPS,) and np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0] and np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.parametrize("time_flow, hidden_flow", [("af", "af"), ("iaf", "scf")])
def test_a_small_jsb_flow_model_trains_in_mixed_bfloat16_with_float32_flows(jsb_bundle, time_flow, hidden_flow):
    with policy("mixed_bfloat16"):
        model = flow_model(jsb_bundle, time_flow, hidden_flow)
        data = short_batches(jsb_bundle)
        x, lengths = next(iter(data))

        # The LSTMs and dense layers compute in bfloat16 on float32 variables ...
        assert model.inference_net.rnn.compute_dtype == "bfloat16"
        assert model.prior.rnn.compute_dtype == "bfloat16" and model.emission.compute_dtype == "bfloat16"
        mu, _ = model.inference_net(x, lengths)
        assert mu.dtype == tf.float32  # ... and hand float32 parameters to q(z|x)
        hidden = model.emission.rnn(tf.zeros([*x.shape[:2], 4]), context=model.position(lengths))
        assert hidden.dtype == tf.bfloat16
        assert model.emission(tf.zeros([1, *x.shape[:2], 4]), lengths).dtype == tf.float32  # the logits
        # The flow: float32 variables, float32 compute, float32 outputs.
        flow = model.prior.flow
        assert flow.compute_dtype == flow.variable_dtype == "float32"
        assert {v.dtype for v in flow.weights} == {"float32"}
        assert all(layer.compute_dtype == "float32" for layer in flow._flatten_layers())
        z = tf.random.stateless_normal([2, *x.shape[:2], 4], seed=[1, 2])
        log_p = model.prior.log_prob(z, lengths)
        eps, log_det = flow.inverse(z, tf.cast(tf.ones([*z.shape[:-1], flow.context_dim]), tf.bfloat16))
        z_back, _ = flow.forward(eps, tf.ones([*z.shape[:-1], flow.context_dim]))
        assert log_p.dtype == eps.dtype == log_det.dtype == z_back.dtype == tf.float32
        sampled, sample_log_p = model.prior.sample(lengths, seed=3)
        assert sampled.dtype == sample_log_p.dtype == tf.float32
        loss, recon, kl = model.objective(x, lengths)
        assert loss.dtype == recon.dtype == kl.dtype == tf.float32

        model.beta.assign(1.0)
        assert_trains(train_losses(model, data))


@pytest.mark.parametrize("time_flow, hidden_flow", [("af", "af"), ("iaf", "scf")])
def test_an_attention_prior_trains_in_mixed_bfloat16_with_float32_flows(jsb_bundle, time_flow, hidden_flow):
    """Both directions of the causal self-attention context: the parallel pass and the cached step loop
    (AF sampling, IAF density in training) compute in bfloat16; the flow and every density in float32."""
    with policy("mixed_bfloat16"):
        model = flow_model(jsb_bundle, time_flow, hidden_flow, prior_network="transformer", attention_units=16,
                           attention_layers=2, attention_heads=2, attention_feed_forward_units=16)
        data = short_batches(jsb_bundle)
        x, lengths = next(iter(data))
        assert model.prior.attention.compute_dtype == "bfloat16"
        assert {v.dtype for v in model.prior.attention.weights} == {"float32"}
        assert model.prior.flow.compute_dtype == "float32"
        z = tf.random.stateless_normal([2, *x.shape[:2], 4], seed=[1, 2])
        assert model.prior.log_prob(z, lengths).dtype == tf.float32
        sampled, sample_log_p = model.prior.sample(lengths, seed=3)
        assert sampled.dtype == sample_log_p.dtype == tf.float32
        np.testing.assert_allclose(model.prior.log_prob(sampled, lengths), sample_log_p, atol=0.05, rtol=0.05)
        model.beta.assign(1.0)
        assert_trains(train_losses(model, data))


def test_self_attention_q_and_p_train_in_mixed_bfloat16(jsb_bundle):
    with policy("mixed_bfloat16"):
        model = flow_model(jsb_bundle, "iaf", "scf", inference_network="transformer", emission_network="transformer",
                           attention_units=16, attention_layers=1, attention_heads=2, attention_feed_forward_units=32)
        data = short_batches(jsb_bundle)
        x, lengths = next(iter(data))
        encoders = (model.inference_net.rnn, model.emission.rnn)
        assert {e.compute_dtype for e in encoders} == {"bfloat16"} and {e.name for e in encoders} == {"encoder"}
        assert {v.dtype for e in encoders for v in e.weights} == {"float32"}
        hidden = model.emission.rnn(tf.zeros([*x.shape[:2], 4]), context=model.position(lengths))
        assert hidden.dtype == tf.bfloat16
        mu, _ = model.inference_net(x, lengths)
        assert mu.dtype == model.emission(tf.zeros([1, *x.shape[:2], 4]), lengths).dtype == tf.float32
        model.beta.assign(1.0)
        assert_trains(train_losses(model, data))


def test_the_lstm_baseline_trains_in_mixed_bfloat16(jsb_bundle):
    with policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = LSTMBaseline(88, jsb_bundle.max_time, jsb_bundle.length_prior.log_prob, music=True,
                             embedding_size=16, hidden_size=16, dropout=0.0, position_encoding="sinusoidal",
                             position_encoding_size=8)
        model.build()
        assert model.rnn.compute_dtype == "bfloat16"
        data = short_batches(jsb_bundle)
        assert model(next(iter(data))).dtype == tf.float32
        assert_trains(train_losses(model, data))


def test_mixed_float16_scales_the_loss_through_the_optimizer(jsb_bundle):
    """Keras wraps the project's optimizer at compile; the custom train_step scales with it."""
    with policy("mixed_float16"):
        model = flow_model(jsb_bundle, "af", "af")
        model.compile(optimizer=optimizers.make_optimizer(config_lib.TrainConfig()))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, optimizers.Adam)
        optimizers.reset_state(model.optimizer)  # reaches the inner optimizer
