"""The prior's time context h̃_t: the network that conditions step t of the flow in time on the past.

Paper §4.3 (Figure 4), reference docs/reference.md §2.3; the self-attention version is the paper's §7
future work (``tflatent.layers.attention``). With y = z (AF in time) or y = ε (IAF in time), both
networks compute, for t = 0..T−1,

    h̃_t = g(y_<t, pos_≤t)          pos_t = the position features of (t, L − 1 − t)  (``PositionFeatures``)

so every conditional is conditioned on the past of y and on the length T, and on nothing else:

  ``LSTMTimeContext`` (the paper's, ``model.prior_network: lstm``): (h_0, c_0) of every layer =
      MLP(pos_0); h̃_0 = the top layer's h_0, and h̃_t (t ≥ 1) = the top layer's output after reading
      [y_s, pos_{s+1}] for s = 0..t−1.
  ``AttentionTimeContext`` (``model.prior_network: transformer``): h̃ = CausalAttentionContext(y, pos)
      with x̃_0 = s (learned), x̃_t = y_{t−1} W_x and the context pos_t (aligned with the outputs, where
      the LSTM reads pos_{s+1} beside y_s), pre-norm blocks attending to rows s ≤ t and a final LN:
      h̃_t = LN(Blocks(x̃ + pos W_c + b))_t, which reads x̃_≤t and pos_≤t only.

Two ways to compute the same h̃ (``TimeContext``):

  ``parallel(y)``  every h̃_t at once from a known y: one LSTM pass (O(T) sequential steps) or one
                   causal attention pass (O(layers) sequential steps for the whole sequence).
  ``step``         h̃_t from y_{t−1} and pos_t and a state, for a loop over t in which y_t is only known
                   once h̃_t is (AF sampling, IAF density). The LSTM's state is its (h, c) per layer;
                   the attention's is a cache of the keys and values of rows < t (``initial_cache``).
                   Both read the pair (y_{t−1}, pos_t) at step t (the LSTM's input [y_{t−1}, pos_t] of
                   its step t − 1 in the parallel form), from which h̃_t follows; y_{−1} is ignored.

Sequence-level work (pos_t's share of the first layer: the LSTM gates' pos_t W or the attention's
pos_t W_c + b) is ``step_inputs``, computed once per sequence for all steps before a loop.

The prior owns these networks' layers under the attribute names of ``layers()`` (its checkpoint
layout): a time context is not a layer of its own, so the LSTM's weights keep the paths and the
``*.weights.h5`` places they had when they were the prior's attributes, and older checkpoints load.

Shapes: y [S, N, T, H] (S samples of each of N sequences); lengths [N]; h̃ [S, N, T, U]; in a step
loop the rows are S·N (sample-major).
"""

from __future__ import annotations

import tensorflow as tf

from tflatent.config import SEQUENCE_NETWORKS
from tflatent.layers.attention import CausalAttentionContext
from tflatent.layers.feed_forward import FeedForwardNet
from tflatent.layers.lstm import LSTMStack


class TimeContext:
    """The interface of the prior's time context h̃_t = g(y_<t, pos_≤t) (module docstring).

    Attributes:
      units: U, the width of h̃_t.
      position: the model's shared ``PositionFeatures``.
    """

    units: int

    def __init__(self, position):
        self.position = position

    def layers(self) -> dict:
        """{attribute name: Keras layer}: the layers the prior tracks (and saves) under these names."""
        raise NotImplementedError

    def build(self, input_size):
        """Creates every weight now, for y_t of ``input_size`` H (the flow in time calls it later)."""
        raise NotImplementedError

    def parallel(self, y, lengths, training=False):
        """h̃_t for every t from y [S, N, T, H] and lengths [N]: [S, N, T, U]."""
        raise NotImplementedError

    def step_inputs(self, lengths, num_steps):
        """What ``step`` t reads from pos_t, for every step at once: [N, T, K] (K: the network's)."""
        raise NotImplementedError

    def initial_state(self, lengths, num_samples, num_steps):
        """The state before step 0 for S·N rows (S = ``num_samples``): a nest of tensors."""
        raise NotImplementedError

    def step_weights(self):
        """The weights every ``step`` reads, as a nest of tensors prepared for it, for a loop over steps
        to compute once before the loop (slices, concatenations and casts of the variables, whose
        gradients would otherwise be taken, at full size, at every step of a differentiated loop)."""
        raise NotImplementedError

    def step(self, t, y_prev, step_input, state, weights=None, training=False):
        """h̃_t [S·N, U] and the state after step t, from y_{t−1} [S·N, H] (ignored at t = 0) and
        ``step_input`` [S·N, K] (row t of ``step_inputs``); equal to ``parallel``'s h̃_t.
        ``weights``: ``step_weights()``, or None to read them in this step."""
        raise NotImplementedError

    def finish_steps(self, weights, state):
        """Called by a loop over ``step`` with its ``weights`` and its final state once it has run, before
        any gradient of it is taken. Nothing to do for a state that is the last step's alone (the LSTM's);
        the attention's gradient reads the final cache (``tflatent.layers.attention.cached_attention``)."""


class LSTMTimeContext(TimeContext):
    """The paper's time context: an LSTM over [y_t, pos_{t+1}] started from MLP(pos_0).

    Args:
      position: the model's ``PositionFeatures``.
      units, num_layers: the LSTM (500 × 2 in the paper).
      dropout: rate between LSTM layers (reference location "prior_rnn").
      init, impl: the LSTM's initialisation and whole-sequence implementation (``tflatent.layers.lstm``).
    """

    def __init__(self, position, units=500, num_layers=2, dropout=0.0, init="pytorch", impl="auto"):
        super().__init__(position)
        self.units = units
        self.num_layers = num_layers
        # The initial (h, c) of every LSTM layer from pos_0 (reference: 2·max_T → U → ReLU →
        # layers·U·2, laid out [layer][unit][h/c]).
        self.initial_state_net = FeedForwardNet(units, 2 * units * num_layers, hidden_layers=1,
                                                name="initial_state")
        self.rnn = LSTMStack(units, num_layers, dropout_between_layers=dropout, init=init, impl=impl,
                             name="lstm")

    def layers(self):
        return {"initial_state_net": self.initial_state_net, "rnn": self.rnn}

    def build(self, input_size):
        features = self.position.feature_size
        self.initial_state_net.build((None, features))
        self.rnn.build((None, None, input_size), (None, None, features))

    def _initial_states(self, lengths, num_samples=1):
        """[(h0, c0)] per layer, each [S·N, U] (sample-major), from pos_0."""
        pos0 = self.position(lengths, num_steps=1)[:, 0]  # [N, F]
        out = tf.reshape(self.initial_state_net(pos0), [-1, self.num_layers, self.units, 2])
        out = tf.tile(out, [num_samples, 1, 1, 1])  # [S·N, layers, U, 2]
        return [(out[:, i, :, 0], out[:, i, :, 1]) for i in range(self.num_layers)]

    def parallel(self, y, lengths, training=False):
        num_samples = tf.shape(y)[0]
        states = self._initial_states(lengths, num_samples)
        pos_next = self.position.compact(lengths, num_steps=tf.shape(y)[2], shift=1)  # [N, T, F]
        outputs = self.rnn(y, context=pos_next, initial_state=states, training=training)  # [S, N, T, U]
        first = tf.reshape(states[-1][0], tf.stack([num_samples, -1, 1, self.units]))  # h̃_0
        return tf.concat([first, outputs[..., :-1, :]], axis=-2)

    def step_inputs(self, lengths, num_steps):
        # pos_t's share of the first layer's gates: a step then multiplies only y_{t−1} (H wide) instead
        # of [y_{t−1}, pos_t] (H + 2·max_T wide for one-hot).
        return self.rnn.project_context(self.position.compact(lengths, num_steps=num_steps))  # [N, T, 4U]

    def initial_state(self, lengths, num_samples, num_steps):
        # The steps run outside Keras's autocast scope, in the variables' dtype (that of the gates);
        # under mixed precision the initial states (from a layer call) come in the compute dtype.
        return [tuple(tf.cast(s, self.rnn.variable_dtype) for s in state)
                for state in self._initial_states(lengths, num_samples)]

    def step_weights(self):
        # The first layer's kernel rows for y (pos_t's share is in step_input), and every U and b.
        return self.rnn.step_weights(self.position.feature_size)

    def step(self, t, y_prev, step_input, state, weights=None, training=False):
        # Step t ≥ 1 reads [y_{t−1}, pos_t]; h̃_0 is the initial state's (the step at t = 0 is discarded).
        _, stepped = self.rnn.step(tf.cast(y_prev, step_input.dtype), state, context_gates=step_input,
                                   training=training, weights=weights)
        state = tf.nest.map_structure(lambda new, old: tf.where(t > 0, new, old), stepped, state)
        return state[-1][0], state


class AttentionTimeContext(TimeContext):
    """Causal self-attention over y_<t with the position features pos_≤t (``CausalAttentionContext``).

    Args:
      position: the model's ``PositionFeatures``.
      units, num_layers, num_heads, feed_forward_units: d, blocks, heads and d_ff.
      dropout: rate on the embedding and on every branch's output (reference location "prior_rnn",
        as between the LSTM's layers).
    """

    def __init__(self, position, units=256, num_layers=2, num_heads=4, feed_forward_units=1024, dropout=0.0):
        super().__init__(position)
        self.units = units
        self.attention = CausalAttentionContext(units, num_layers=num_layers, num_heads=num_heads,
                                                feed_forward_units=feed_forward_units, dropout=dropout,
                                                name="attention")

    def layers(self):
        return {"attention": self.attention}

    def build(self, input_size):
        self.attention.build((None, None, input_size), (None, None, self.position.feature_size))

    def parallel(self, y, lengths, training=False):
        num_steps = tf.shape(y)[2]
        return self.attention(y, mask=tf.sequence_mask(lengths, num_steps),
                              context=self.position.compact(lengths, num_steps=num_steps), training=training)

    def step_inputs(self, lengths, num_steps):
        return self.attention.project_context(self.position.compact(lengths, num_steps=num_steps))  # [N, T, d]

    def initial_state(self, lengths, num_samples, num_steps):
        return self.attention.initial_cache(num_samples * tf.shape(lengths)[0], num_steps)

    def step_weights(self):
        return self.attention.step_weights()

    def finish_steps(self, weights, state):
        self.attention.finish_steps(weights, state)

    def step(self, t, y_prev, step_input, state, weights=None, training=False):
        # The cache's own index is t (the loop's step count); x̃_0 = s replaces y_{−1} at t = 0. The step
        # computes in the attention's compute dtype (it casts), as its parallel pass does.
        return self.attention.step(y_prev, state, context_projection=step_input, training=training,
                                   weights=weights)


def make_time_context(network, position, lstm_units=500, lstm_layers=2, lstm_init="pytorch", lstm_impl="auto",
                      attention_units=256, attention_layers=2, attention_heads=4, attention_feed_forward_units=1024,
                      dropout=0.0) -> TimeContext:
    """The time context ``network`` ("lstm" or "transformer", config ``model.prior_network``)."""
    if network not in SEQUENCE_NETWORKS:
        raise ValueError(f"prior network {network!r} is not allowed; choose one of {SEQUENCE_NETWORKS} "
                         "(config: model.prior_network)")
    if network == "lstm":
        return LSTMTimeContext(position, lstm_units, lstm_layers, dropout=dropout, init=lstm_init, impl=lstm_impl)
    return AttentionTimeContext(position, attention_units, attention_layers, attention_heads,
                                attention_feed_forward_units, dropout=dropout)

