"""The latent prior p(z_1..z_T | T): a flow in time around a within-timestep ("hidden") flow.

Paper §4 (Figure 4), reference docs/reference.md §2.3. Each step's vector z_t ∈ R^H is the image of base noise
ε_t ~ N(0, I_H) under a hidden flow whose every transform is conditioned on a context h̃_t:

    AF in time  (AF/AF, AF/SCF):  z_t = f(ε_t; h̃_t(z_<t)),   log p(z) = Σ_t [log N(ε_t) + log|∂ε_t/∂z_t|]
    IAF in time (IAF/SCF):        z_t = f(ε_t; h̃_t(ε_<t)),   same density, but ε_<t must be computed first
    none ("AF-only", the reference's ``hiddenflow_only``): z_t = f(ε_t; pos_t), no dependence across time

h̃_t = g(y_<t, pos_≤t) (y = z for AF, ε for IAF) is the time context (``tflatent.priors.time_context``,
config ``model.prior_network``): the paper's LSTM, which reads [y_t, pos_{t+1}] shifted right by one
(h̃_0 is the top layer's initial hidden state, itself computed from pos_0 by a small network, and h̃_t,
t ≥ 1, its output after reading steps 0..t−1), or causal self-attention over y_<t with pos_≤t. The
position features pos_t encode t and the remaining length T−1−t, so every conditional is conditioned on T.
In training, h̃ goes through dropout (reference location "prior_rnn") before the hidden flow reads it.

Which direction is parallel:

| time flow | log_prob (density)                 | sample                               |
|-----------|------------------------------------|--------------------------------------|
| af        | parallel over t (one context pass) | sequential over t (a step loop)      |
| iaf       | sequential over t (a step loop)    | parallel over t (one context pass)   |
| none      | parallel                           | parallel                             |

A context pass is one LSTM pass (O(T) sequential steps) or one causal attention pass (O(layers)).
Sequential parts are ``tf.while_loop``s over the time context's ``step`` (XLA-compilable; the
attention's keys and values in a cache); there is no Python loop over time.

Shapes: z, ε [N, T, H], or [S, N, T, H] for S samples of each sequence; lengths [N]; contexts
[S, N, T, U]; per-step log densities [N, T] (or [S, N, T]), zero at padding.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.config import TIME_FLOWS
from tflatent.layers.shared import part_of_a_model
from tflatent.priors.hidden_flow import make_hidden_flow, standard_normal_log_prob
from tflatent.priors.time_context import make_time_context
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

    Under a mixed-precision policy the time context's parallel pass computes in the policy's compute
    dtype and the hidden flow in float32 (:func:`flow_policy`); z, ε and the per-step log densities are
    float32.

    Args:
      z_size: H, the size of each z_t.
      position: the PositionFeatures layer shared with the rest of the model.
      time_flow: "af", "iaf" or "none".
      hidden_flow: "af", "scf" or "none" (see ``tflatent.priors.hidden_flow``).
      transform: "nlsq" or "affine".
      network: the time context h̃_t, "lstm" (the paper's) or "transformer" (causal self-attention).
      rnn_units, rnn_layers: the time LSTM (500 × 2 in the paper).
      attention_units, attention_layers, attention_heads, attention_feed_forward_units: the causal
        self-attention's d, blocks, heads and d_ff (``tflatent.layers.attention``).
      hidden_flow_layers, hidden_flow_hidden_layers, hidden_flow_units: the hidden flow's sizes.
      dropout: rate on the context h̃ and inside its network: between LSTM layers, or on the attention's
        embedding and branch outputs (reference location "prior_rnn").
      hidden_flow_dropout: rate inside the hidden flow's conditioners (reference location "prior_ff").
      lstm_init: "pytorch" or "keras" (see ``tflatent.layers.lstm``).
      lstm_impl: "auto", "cudnn" or "loop" (see ``tflatent.layers.lstm``): the density's (AF) or the
        sampling's (IAF) context pass; the sequential direction steps the same variables.
    """

    def __init__(self, z_size, position, time_flow="af", hidden_flow="af", transform="nlsq",
                 rnn_units=500, rnn_layers=2, hidden_flow_layers=5, hidden_flow_hidden_layers=2,
                 hidden_flow_units=100, dropout=0.2, hidden_flow_dropout=0.0, lstm_init="pytorch",
                 lstm_impl="auto", network="lstm", attention_units=256, attention_layers=2, attention_heads=4,
                 attention_feed_forward_units=1024, **kwargs):
        super().__init__(**kwargs)
        if time_flow not in TIME_FLOWS:
            raise ValueError(f"time_flow={time_flow!r}; choose one of {TIME_FLOWS}")
        if time_flow == "iaf" and hidden_flow == "af":
            raise ValueError("an IAF time flow needs a hidden flow that is parallel in sampling "
                             "(hidden_flow='scf' or 'none'), not 'af'")
        self.z_size = z_size
        self.position = position
        self.time_flow = time_flow
        self.dropout_rate = dropout
        self.time_context = None if time_flow == "none" else make_time_context(
            network, position, lstm_units=rnn_units, lstm_layers=rnn_layers, lstm_init=lstm_init,
            lstm_impl=lstm_impl, attention_units=attention_units, attention_layers=attention_layers,
            attention_heads=attention_heads, attention_feed_forward_units=attention_feed_forward_units,
            dropout=dropout)
        context_dim = position.feature_size if self.time_context is None else self.time_context.units
        self.flow = make_hidden_flow(hidden_flow, dim=z_size, context_dim=context_dim,
                                     num_layers=hidden_flow_layers, hidden_layers=hidden_flow_hidden_layers,
                                     hidden_units=hidden_flow_units, transform=transform,
                                     dropout=hidden_flow_dropout, dtype=flow_policy(self.dtype_policy),
                                     name="hidden_flow")
        if self.time_context is not None:
            # The context's layers are tracked (and saved) as the prior's own, under its names, after the
            # flow's: the LSTM's weights keep the paths, order and checkpoint places they always had.
            for name, layer in self.time_context.layers().items():
                setattr(self, name, layer)
            self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape=None):
        self.flow.build()
        if self.time_context is not None:
            self.time_context.build(self.z_size)
        self.built = True

    # ------------------------------------------------------------------ time context
    # Below, y, z and ε are [S, N, T, H]: S samples of each of N sequences (S = 1 for a plain batch).
    # What depends on the sequence only (the position features and their share of the context
    # network's first layer) is computed once per sequence, not once per sample.
    def _parallel_context(self, y, lengths, training):
        """h̃_t for all t from y_<t in one pass of the time context: [S, N, T, U]."""
        return self.drop(self.time_context.parallel(y, lengths, training=training), training=training)

    def _sequential(self, step_fn, elems, lengths, training):
        """Runs the time flow step by step, feeding the time context what ``step_fn`` returns.

        ``step_fn(elem_t [S·N, H], context_t [S·N, U]) -> (y_t [S·N, H], log_prob_t [S·N])``, where y_t
        is what the context reads next (z_t for AF, ε_t for IAF). elems: [S, N, T, H].
        Returns the stacked y [S, N, T, H] and log_prob [S, N, T] (not yet masked).
        """
        context = self.time_context
        shape = tf.shape(elems)
        num_samples, num_steps = shape[0], shape[2]
        elems_tm = tf.transpose(tf.reshape(elems, [-1, num_steps, self.z_size]), [1, 0, 2])  # [T, S·N, H]
        step_inputs = context.step_inputs(lengths, num_steps)  # [N, T, K], once per sequence
        step_inputs = tf.tile(tf.transpose(step_inputs, [1, 0, 2]), [1, num_samples, 1])  # [T, S·N, K]
        # Read per step from TensorArrays: the gradient of t-indexing a tensor would be a full-size
        # [T, ...] buffer per step.
        elems_ta = tf.TensorArray(elems.dtype, size=num_steps).unstack(elems_tm)
        inputs_ta = tf.TensorArray(step_inputs.dtype, size=num_steps).unstack(step_inputs)
        weights = context.step_weights()  # read once: see TimeContext.step_weights

        def body(t, y_prev, state, ys, log_probs):
            h, state = context.step(t, y_prev, inputs_ta.read(t), state, weights=weights, training=training)
            y_t, log_prob_t = step_fn(elems_ta.read(t), self.drop(h, training=training))
            return t + 1, y_t, state, ys.write(t, y_t), log_probs.write(t, log_prob_t)

        _, _, state, ys, log_probs = tf.while_loop(
            lambda t, *_: t < num_steps, body,
            (tf.constant(0), tf.zeros(tf.shape(elems_tm)[1:], elems.dtype),
             context.initial_state(lengths, num_samples, num_steps),
             tf.TensorArray(elems.dtype, size=num_steps), tf.TensorArray(elems.dtype, size=num_steps)),
            maximum_iterations=num_steps)
        context.finish_steps(weights, state)
        ys = tf.transpose(ys.stack(), [1, 0, 2])  # [S·N, T, H]
        return tf.reshape(ys, shape), tf.reshape(tf.transpose(log_probs.stack()), shape[:3])

    def _context(self, y, lengths, training):
        """The contexts for all steps when they can be computed in parallel: [S, N, T, ·] or [N, T, F]."""
        if self.time_context is None:
            return self.position(lengths, num_steps=tf.shape(y)[2])
        return self._parallel_context(y, lengths, training)

    # ------------------------------------------------------------------ the two directions
    def log_prob(self, z, lengths, training=False):
        """Per-step log p(z_t | z_<t, T), zero at padding.

        z is [N, T, H], or [S, N, T, H] for S samples of each sequence (as the ELBO draws them: the
        sequence-level work is then shared by the samples); lengths [N]. Returns [N, T] or [S, N, T].
        """
        z, drop_sample_axis = _with_sample_axis(z)
        if self.time_flow == "iaf":
            flow_weights = self.flow.step_weights()  # read once, before the loop (as the context's)

            def step(z_t, context):
                eps_t, log_det = self.flow.inverse(z_t, context, weights=flow_weights)
                return eps_t, standard_normal_log_prob(eps_t) + log_det
            _, log_prob = self._sequential(step, z, lengths, training)
        else:
            log_prob = self.flow.log_prob(z, self._context(z, lengths, training))
        return drop_sample_axis(log_prob * _mask(lengths, tf.shape(z)[2], z.dtype))

    def sample_from_noise(self, eps, lengths):
        """z = f(ε) and its per-step log p(z_t | z_<t, T): ε [N, T, H] (or [S, N, T, H]) → (z, [N, T]).

        AF runs its loop over t; IAF computes every step at once from the context of ε_<t. Plain graph
        code: ``LatentFlowModel.generate`` compiles it whole with XLA.
        """
        eps, drop_sample_axis = _with_sample_axis(eps)
        if self.time_flow == "af":
            def step(eps_t, context):
                z_t, log_det = self.flow.forward(eps_t, context)
                return z_t, standard_normal_log_prob(eps_t) - log_det
            z, log_prob = self._sequential(step, eps, lengths, training=False)
        else:
            z, log_det = self.flow.forward(eps, self._context(eps, lengths, training=False))
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
