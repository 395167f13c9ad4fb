"""The latent prior p(z_1..z_T | T): a flow in time around a within-timestep ("hidden") flow.

Paper §4 (Figure 4), reference docs/reference.md §2.3. Each step's vector z_t ∈ R^H is the image of base noise
ε_t ~ N(0, I_H) under a hidden flow whose every transform is conditioned on a context h̃_t:

    AF in time  (AF/AF, AF/SCF):  z_t = f(ε_t; h̃_t(z_<t)),   log p(z) = Σ_t [log N(ε_t) + log|∂ε_t/∂z_t|]
    IAF in time (IAF/SCF):        z_t = f(ε_t; h̃_t(ε_<t)),   same density, but ε_<t must be computed first
    none ("AF-only", the reference's ``hiddenflow_only``): z_t = f(ε_t; pos_t), no dependence across time

h̃_t comes from an LSTM that reads [y_t, pos_{t+1}] (y = z for AF, ε for IAF), shifted right by one:
h̃_0 is the top layer's initial hidden state, itself computed from pos_0 by a small network, and h̃_t
(t ≥ 1) is the top layer's output after reading steps 0..t−1. The position features pos_t encode t and
the remaining length T−1−t, so every conditional is conditioned on T.

Which direction is parallel:

| time flow | log_prob (density)                 | sample                               |
|-----------|------------------------------------|--------------------------------------|
| af        | parallel over t (one LSTM pass)    | sequential over t (``tf.scan``)      |
| iaf       | sequential over t (``tf.scan``)    | parallel over t (one LSTM pass)      |
| none      | parallel                           | parallel                             |

Sequential parts are ``tf.scan`` loops (XLA-compilable); there is no Python loop over time.

Shapes: z, ε [N, T, H], or [S, N, T, H] for S samples of each sequence; lengths [N]; contexts
[S, N, T, U]; per-step log densities [N, T] (or [S, N, T]), zero at padding.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.config import TIME_FLOWS
from tflatent.layers.feed_forward import FeedForwardNet
from tflatent.layers.lstm import LSTMStack
from tflatent.layers.shared import part_of_a_model
from tflatent.priors.hidden_flow import make_hidden_flow, standard_normal_log_prob
from tflatent.seeds import stateless_seed


def flow_policy(policy):
    """The dtype policy of the hidden flow under the prior's ``policy``: its variable dtype when the
    policy is mixed (``mixed_float16``/``mixed_bfloat16`` → ``float32``), else ``policy`` itself.

    Under mixed precision the LSTMs and dense layers compute in float16/bfloat16, but the flow (its
    conditioners, NLSq's log-slope without an epsilon, the cubic root) and every log-density stay in
    float32; the flow casts its context to float32 on entry.
    """
    if policy.compute_dtype != policy.variable_dtype:
        return keras.DTypePolicy(policy.variable_dtype)
    return policy


class TimeFlowPrior(keras.layers.Layer):
    """p(z_1..z_T | T) as an AF-in-time, IAF-in-time or time-independent flow.

    Under a mixed-precision policy the time LSTM and the initial-state network compute in the
    policy's compute dtype and the hidden flow in float32 (:func:`flow_policy`); z, ε and the
    per-step log densities are float32.

    Args:
      z_size: H, the size of each z_t.
      position: the PositionFeatures layer shared with the rest of the model.
      time_flow: "af", "iaf" or "none".
      hidden_flow: "af", "scf" or "none" (see ``tflatent.priors.hidden_flow``).
      transform: "nlsq" or "affine".
      rnn_units, rnn_layers: the time LSTM (500 × 2 in the paper).
      hidden_flow_layers, hidden_flow_hidden_layers, hidden_flow_units: the hidden flow's sizes.
      dropout: rate between LSTM layers and on the context (reference location "prior_rnn").
      hidden_flow_dropout: rate inside the hidden flow's conditioners (reference location "prior_ff").
      lstm_init: "pytorch" or "keras" (see ``tflatent.layers.lstm``).
      lstm_impl: "auto", "cudnn" or "loop" (see ``tflatent.layers.lstm``): the density's (AF) or the
        sampling's (IAF) context pass; the sequential direction steps the same variables.
    """

    def __init__(self, z_size, position, time_flow="af", hidden_flow="af", transform="nlsq",
                 rnn_units=500, rnn_layers=2, hidden_flow_layers=5, hidden_flow_hidden_layers=2,
                 hidden_flow_units=100, dropout=0.2, hidden_flow_dropout=0.0, lstm_init="pytorch",
                 lstm_impl="auto", **kwargs):
        super().__init__(**kwargs)
        if time_flow not in TIME_FLOWS:
            raise ValueError(f"time_flow={time_flow!r}; choose one of {TIME_FLOWS}")
        if time_flow == "iaf" and hidden_flow == "af":
            raise ValueError("an IAF time flow needs a hidden flow that is parallel in sampling "
                             "(hidden_flow='scf' or 'none'), not 'af'")
        self.z_size = z_size
        self.position = position
        self.time_flow = time_flow
        self.rnn_units = rnn_units
        self.rnn_layers = rnn_layers
        self.dropout_rate = dropout
        context_dim = position.feature_size if time_flow == "none" else rnn_units
        self.flow = make_hidden_flow(hidden_flow, dim=z_size, context_dim=context_dim,
                                     num_layers=hidden_flow_layers, hidden_layers=hidden_flow_hidden_layers,
                                     hidden_units=hidden_flow_units, transform=transform,
                                     dropout=hidden_flow_dropout, dtype=flow_policy(self.dtype_policy),
                                     name="hidden_flow")
        if time_flow != "none":
            # The initial (h, c) of every LSTM layer from pos_0 (reference: 2·max_T → U → ReLU →
            # layers·U·2, laid out [layer][unit][h/c]).
            self.initial_state_net = FeedForwardNet(
                rnn_units, 2 * rnn_units * rnn_layers, hidden_layers=1, name="initial_state")
            self.rnn = LSTMStack(rnn_units, rnn_layers, dropout_between_layers=dropout, init=lstm_init,
                                 impl=lstm_impl, name="lstm")
            self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape=None):
        self.flow.build()
        if self.time_flow != "none":
            features = self.position.feature_size
            self.initial_state_net.build((None, features))
            self.rnn.build((None, None, self.z_size), (None, None, features))
        self.built = True

    # ------------------------------------------------------------------ time context
    # Below, y, z and ε are [S, N, T, H]: S samples of each of N sequences (S = 1 for a plain batch).
    # What depends on the sequence only (the position features, their share of the first LSTM
    # layer's gates, the initial states) is computed once per sequence, not once per sample.
    def _initial_states(self, lengths, num_samples=1):
        """[(h0, c0)] per layer, each [S·N, U] (sample-major), from pos_0."""
        pos0 = self.position(lengths, num_steps=1)[:, 0]  # [N, F]
        out = tf.reshape(self.initial_state_net(pos0), [-1, self.rnn_layers, self.rnn_units, 2])
        out = tf.tile(out, [num_samples, 1, 1, 1])  # [S·N, layers, U, 2]
        return [(out[:, i, :, 0], out[:, i, :, 1]) for i in range(self.rnn_layers)]

    def _parallel_context(self, y, lengths, training, compiled=False):
        """h̃_t for all t from y_<t in one LSTM pass: [S, N, T, U] (``compiled``: see ``LSTMStack.call``)."""
        num_samples = tf.shape(y)[0]
        states = self._initial_states(lengths, num_samples)
        pos_next = self.position(lengths, num_steps=tf.shape(y)[2], shift=1)  # [N, T, F]
        outputs = self.rnn(y, context=pos_next, initial_state=states, training=training,
                           compiled=compiled)  # [S, N, T, U]
        first = tf.reshape(states[-1][0], tf.stack([num_samples, -1, 1, self.rnn_units]))  # h̃_0
        context = tf.concat([first, outputs[..., :-1, :]], axis=-2)
        return self.drop(context, training=training)

    def _sequential(self, step_fn, elems, lengths, training):
        """Runs the time flow step by step, feeding the LSTM what ``step_fn`` returns.

        ``step_fn(elem_t [S·N, H], context_t [S·N, U]) -> (y_t [S·N, H], log_prob_t [S·N])``, where y_t
        is what the LSTM reads at step t (z_t for AF, ε_t for IAF). elems: [S, N, T, H].
        Returns the stacked y [S, N, T, H] and log_prob [S, N, T] (not yet masked).
        """
        shape = tf.shape(elems)
        num_samples, num_steps = shape[0], shape[2]
        elems_tm = tf.transpose(tf.reshape(elems, [-1, num_steps, self.z_size]), [1, 0, 2])  # [T, S·N, H]
        # The position features' share of the first layer's gates, for every step at once: each step
        # then multiplies only y_t (H wide) instead of [y_t, pos_{t+1}] (H + 2·max_T wide for one-hot).
        pos_gates = self.rnn.project_context(self.position(lengths, num_steps=num_steps, shift=1))  # [N, T, 4U]
        pos_gates = tf.tile(tf.transpose(pos_gates, [1, 0, 2]), [1, num_samples, 1])  # [T, S·N, 4U]
        # Read per step from TensorArrays: the gradient of t-indexing a tensor would be a full-size
        # [T, ...] buffer per step.
        elems_ta = tf.TensorArray(elems.dtype, size=num_steps).unstack(elems_tm)
        pos_gates_ta = tf.TensorArray(pos_gates.dtype, size=num_steps).unstack(pos_gates)
        # The step runs outside Keras's autocast scope, in the dtype of its gates; under mixed precision
        # the initial states (from a layer call) come in the compute dtype.
        initial_states = [tuple(tf.cast(s, pos_gates.dtype) for s in state)
                          for state in self._initial_states(lengths, num_samples)]

        def body(t, states, ys, log_probs):
            context = self.drop(states[-1][0], training=training)  # the top layer's h
            y_t, log_prob_t = step_fn(elems_ta.read(t), context)
            _, states = self.rnn.step(tf.cast(y_t, pos_gates.dtype), states, context_gates=pos_gates_ta.read(t),
                                      training=training)
            return t + 1, states, ys.write(t, y_t), log_probs.write(t, log_prob_t)

        _, _, ys, log_probs = tf.while_loop(
            lambda t, *_: t < num_steps, body,
            (tf.constant(0), initial_states,
             tf.TensorArray(elems.dtype, size=num_steps), tf.TensorArray(elems.dtype, size=num_steps)),
            maximum_iterations=num_steps)
        ys = tf.transpose(ys.stack(), [1, 0, 2])  # [S·N, T, H]
        return tf.reshape(ys, shape), tf.reshape(tf.transpose(log_probs.stack()), shape[:3])

    def _context(self, y, lengths, training, compiled=False):
        """The contexts for all steps when they can be computed in parallel: [S, N, T, ·] or [N, T, F]."""
        if self.time_flow == "none":
            return self.position(lengths, num_steps=tf.shape(y)[2])
        return self._parallel_context(y, lengths, training, compiled=compiled)

    # ------------------------------------------------------------------ the two directions
    def log_prob(self, z, lengths, training=False):
        """Per-step log p(z_t | z_<t, T), zero at padding.

        z is [N, T, H], or [S, N, T, H] for S samples of each sequence (as the ELBO draws them: the
        sequence-level work is then shared by the samples); lengths [N]. Returns [N, T] or [S, N, T].
        """
        z, drop_sample_axis = _with_sample_axis(z)
        if self.time_flow == "iaf":
            def step(z_t, context):
                eps_t, log_det = self.flow.inverse(z_t, context)
                return eps_t, standard_normal_log_prob(eps_t) + log_det
            _, log_prob = self._sequential(step, z, lengths, training)
        else:
            log_prob = self.flow.log_prob(z, self._context(z, lengths, training))
        return drop_sample_axis(log_prob * _mask(lengths, tf.shape(z)[2], z.dtype))

    def sample_from_noise(self, eps, lengths):
        """z = f(ε) and its per-step log p(z_t | z_<t, T): ε [N, T, H] (or [S, N, T, H]) → (z, [N, T]).

        Sampling only (no gradient through the IAF's LSTM: its loops run as XLA executables,
        ``LSTMStack.call``'s ``compiled``).
        """
        eps, drop_sample_axis = _with_sample_axis(eps)
        if self.time_flow == "af":
            def step(eps_t, context):
                z_t, log_det = self.flow.forward(eps_t, context)
                return z_t, standard_normal_log_prob(eps_t) - log_det
            z, log_prob = self._sequential(step, eps, lengths, training=False)
        else:
            z, log_det = self.flow.forward(eps, self._context(eps, lengths, training=False, compiled=True))
            log_prob = standard_normal_log_prob(eps) - log_det
        mask = _mask(lengths, tf.shape(eps)[2], eps.dtype)
        return drop_sample_axis(z * mask[..., None]), drop_sample_axis(log_prob * mask)

    def sample(self, lengths, temperature=1.0, seed=None, num_steps=None):
        """Draws z ~ p(z | T) with ε ~ N(0, temperature²·I).

        Args:
          lengths: [N] int32.
          temperature: scales the base noise (the reference's ``temp``).
          seed: None, an int or a stateless [2] seed (``tflatent.seeds``).
          num_steps: T_max, a Python int (static, as XLA needs) or None for max(lengths).

        Returns:
          z [N, T_max, H] (zero at padding) and log p(z_t | z_<t, T) [N, T_max].
        """
        return self.sample_from_noise(self.noise(lengths, seed, num_steps) * temperature, lengths)

    def noise(self, lengths, seed=None, num_steps=None):
        """The base noise ε ~ N(0, I) [N, T_max, H] that ``sample`` draws (arguments as there)."""
        if num_steps is None:
            num_steps = tf.reduce_max(lengths)
        shape = tf.stack([tf.shape(lengths)[0], num_steps, self.z_size])
        return tf.random.stateless_normal(shape, seed=stateless_seed(seed))

    def get_config(self):
        raise part_of_a_model(self, "the position features", "LatentFlowModel")


def _mask(lengths, num_steps, dtype):
    return tf.sequence_mask(lengths, num_steps, dtype=dtype)


def _with_sample_axis(x):
    """x [S, N, T, H] → (x, identity); x [N, T, H] → (x [1, N, T, H], a function dropping that axis)."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 4:
        return x, lambda y: y
    if x.shape.rank != 3:
        raise ValueError(f"TimeFlowPrior expects [N, T, H] or [S, N, T, H], got a tensor of shape {x.shape}")
    return x[None], lambda y: y[0]
