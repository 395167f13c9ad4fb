"""The bidirectional sequence network of q(z|x) and p(x|z): the paper's BiLSTM or self-attention.

Both parts read a whole right-padded sequence and give every step a summary of all of it
(``model.inference_network``, ``model.emission_network``; docs/architecture.md, "Self-attention
encoders"). One interface, ``BidirectionalNetwork``, with two implementations:

  ``BidirectionalLSTM``       the paper's 2-layer BiLSTM (docs/reference.md §3.2, §3.3), packed by length;
                              outputs h_t = [h→_t, h←_t], D = 2H.
  ``BidirectionalAttention``  the pre-norm self-attention encoder of ``tflatent.layers.attention``
                              (``AttentionEncoder``): h_t = Enc(x)_t with padding keys masked in every
                              block, D = d.

Both read the position features pos[t] (position t and remaining length L − 1 − t) as their
``context``: the BiLSTM beside each input, the encoder added to each input's projection (its only
positional signal). Both are zero at padding, and no valid output depends on padding.

``neighbour_states`` is what the emission reads beside z_t (``tflatent.models.emission``): the
BiLSTM's states one step before in each direction, [h→_{t−1}, h←_{t+1}] (the reference's shift); the
encoder's outputs as they are (self-attention has no direction to shift: each output has read every
step). ``bidirectional_network`` builds either from the config fields.
"""

from __future__ import annotations

from typing import Protocol

import keras
import tensorflow as tf

from tflatent.config import SEQUENCE_NETWORKS
from tflatent.layers.attention import AttentionEncoder
from tflatent.layers.lstm import LSTMStack


class BidirectionalNetwork(Protocol):
    """A layer over a right-padded batch whose output at every step has read the whole valid sequence.

    ``build(inputs_shape, context_shape)`` creates every weight; ``output_size`` is D.
    """

    output_size: int

    def __call__(self, inputs, mask=None, context=None, training=False, compiled=False):
        """inputs [B, T, F] or [S, B, T, F]; mask [B, T] bool (True on each sequence's first L steps);
        context [B, T, C] (the position features, shared by the S samples); ``compiled``: run any
        sequential loop as an XLA executable (inference only) → [B, T, D] or [S, B, T, D], zero at padding."""

    def neighbour_states(self, outputs):
        """What a reader that also takes step t's own input directly reads beside it: [..., T, D]."""


@keras.saving.register_keras_serializable(package="tflatent")
class BidirectionalLSTM(LSTMStack):
    """``LSTMStack(bidirectional=True)`` with both directions concatenated: [h→_t, h←_t], D = 2H.

    The same variables, names and checkpoint layout as the stack it specialises. Args as ``LSTMStack``.
    """

    def __init__(self, units, num_layers=1, dropout_between_layers=0.0, init="pytorch", impl="auto", **kwargs):
        kwargs.pop("bidirectional", None)  # from a config written by ``get_config``: always True here
        super().__init__(units, num_layers, bidirectional=True, dropout_between_layers=dropout_between_layers,
                         init=init, impl=impl, **kwargs)

    @property
    def output_size(self):
        return 2 * self.units

    def call(self, inputs, mask=None, context=None, training=False, compiled=False):
        """``LSTMStack.call`` → [h→, h←] concatenated, [..., T, 2H], zero at padding."""
        forward, backward = super().call(inputs, mask=mask, context=context, training=training, compiled=compiled)
        return tf.concat([forward, backward], axis=-1)

    def neighbour_states(self, outputs):
        """[h→_{t−1}, h←_{t+1}] from [h→_t, h←_t]: h→_{−1} = 0, and h←_L = 0 as the outputs are 0 at padding."""
        forward, backward = tf.split(outputs, 2, axis=-1)
        zeros = tf.zeros_like(forward[..., :1, :])
        return tf.concat([tf.concat([zeros, forward[..., :-1, :]], axis=-2),
                          tf.concat([backward[..., 1:, :], zeros], axis=-2)], axis=-1)


@keras.saving.register_keras_serializable(package="tflatent")
class BidirectionalAttention(AttentionEncoder):
    """``AttentionEncoder`` under the ``BidirectionalNetwork`` interface: D = d. Args as ``AttentionStack``."""

    @property
    def output_size(self):
        return self.units

    def call(self, inputs, mask=None, context=None, training=False, compiled=False):
        """``AttentionEncoder.call``; ``compiled`` changes nothing: one parallel pass has no loop to compile."""
        del compiled
        return super().call(inputs, mask=mask, context=context, training=training)

    def neighbour_states(self, outputs):
        """The outputs themselves: each has read every valid step (no direction to shift)."""
        return outputs


def bidirectional_network(kind, *, hidden_size, num_layers, lstm_init, lstm_impl, attention_units,
                          attention_layers, attention_heads, attention_feed_forward_units, dropout):
    """The network of ``kind`` (``tflatent.config.SEQUENCE_NETWORKS``) from the model's config fields.

    Args:
      kind: "lstm" (``BidirectionalLSTM`` named "bilstm") or "transformer" (``BidirectionalAttention``
        named "encoder").
      hidden_size, num_layers, lstm_init, lstm_impl: the BiLSTM's units per direction, layers, init, impl.
      attention_units, attention_layers, attention_heads, attention_feed_forward_units: the encoder's
        d, blocks, heads and d_ff.
      dropout: between the BiLSTM's layers, or on the encoder's input and every branch of its blocks
        (the part's own rate: "rnn_x" for q(z|x), "rnn_outp" for p(x|z)).
    """
    if kind == "lstm":
        return BidirectionalLSTM(hidden_size, num_layers, dropout_between_layers=dropout, init=lstm_init,
                                 impl=lstm_impl, name="bilstm")
    if kind == "transformer":
        return BidirectionalAttention(attention_units, attention_layers, attention_heads,
                                      attention_feed_forward_units, dropout=dropout, name="encoder")
    raise ValueError(f"bidirectional_network: kind={kind!r} is not one of {', '.join(SEQUENCE_NETWORKS)} "
                     "(config: model.inference_network, model.emission_network)")
