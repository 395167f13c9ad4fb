"""Position features: how every network in the model is conditioned on the length T.

Reference docs/reference.md §2.2 (``utils.make_pos_cond``). For a sequence of length L the feature at step t is the
pair (position t, steps remaining L − 1 − t):

    onehot      pos[t] = [one_hot(t, max_T), one_hot(L − 1 − t, max_T)]                 size 2·max_T
    sinusoidal  pos[t] = [sinusoid(t, size), sinusoid(L − 1 − t, size)]                 size 2·size

where sinusoid(p, d) = [sin(p·ω_0..ω_{d/2−1}), cos(p·ω_0..ω_{d/2−1})] with ω_i = 10000^(−2i/d)
(Vaswani et al. 2017). The one-hot pair is the reference's encoding; the sinusoidal pair is the compact
alternative for long music pieces, whose max_T runs into the thousands.

Padding positions (t ≥ L) follow the reference for ``shift=0``: one_hot(t) and the "remaining" index
set to max_T − 1 (onehot) or all zeros (sinusoidal). No valid output depends on them, because every
LSTM over these features is packed by length.

``shift=1`` gives pos[t + 1], the input the prior's LSTM and the LSTM baseline read at step t, and is
zero wherever t + 1 ≥ L. The reference shifts the batch tensor instead, which leaves the padding pattern
at t = L − 1 for all but the longest sequence; the value at t = L − 1 only ever feeds the (unused)
prediction for step L, so the two agree on every quantity the model uses, and this one is also padding
invariant.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.config import POSITION_ENCODINGS


@keras.saving.register_keras_serializable(package="tflatent")
class PositionFeatures(keras.layers.Layer):
    """Features of (t, L − 1 − t) for every step of a batch: lengths [B] → [B, T, feature_size].

    Args:
      max_time: max_T, the longest length the model accepts (``data.max_time``); the one-hot size.
      kind: "onehot" (reference, 2·max_time features) or "sinusoidal" (2·size features).
      size: features per half for "sinusoidal" (even); ignored for "onehot".
    """

    def __init__(self, max_time, kind="onehot", size=64, **kwargs):
        super().__init__(**kwargs)
        if kind not in POSITION_ENCODINGS:
            raise ValueError(f"PositionFeatures: kind={kind!r} is not allowed; choose one of "
                             f"{POSITION_ENCODINGS} (config: model.position_encoding)")
        if int(max_time) < 1:
            raise ValueError(f"PositionFeatures: max_time={max_time} must be >= 1 (config: data.max_time)")
        if kind == "sinusoidal" and (size < 2 or size % 2):
            raise ValueError(f"PositionFeatures: size={size} must be a positive even number for sinusoidal "
                             "features (config: model.position_encoding_size)")
        self.max_time = int(max_time)
        self.kind = kind
        self.size = int(size)
        self.built = True

    @property
    def feature_size(self):
        return 2 * (self.max_time if self.kind == "onehot" else self.size)

    def call(self, lengths, num_steps=None, shift=0):
        """pos[t + shift] for t = 0..num_steps−1.

        Args:
          lengths: [B] int, each L ≤ max_time.
          num_steps: T, a scalar tensor or (as a keyword: Keras takes only tensors positionally) a
            Python int; None for max(lengths).
          shift: 0 for pos[t]; 1 for pos[t + 1], zero where t + 1 ≥ L.

        Returns:
          [B, T, feature_size] float32.
        """
        lengths = tf.cast(lengths, tf.int32)
        if num_steps is None:
            num_steps = tf.reduce_max(lengths)
        tf.debugging.Assert(
            tf.reduce_all(lengths <= self.max_time),
            ["PositionFeatures: a sequence of length", tf.reduce_max(lengths),
             f"exceeds max_time = {self.max_time}; set data.max_time to at least the longest sequence "
             "length (or leave it unset to derive it from the data)"])
        position = tf.range(num_steps, dtype=tf.int32) + shift  # [T]
        remaining = lengths[:, None] - 1 - position[None, :]  # [B, T]
        valid = remaining >= 0
        if self.kind == "onehot":
            batch = tf.shape(lengths)[0]
            plus = tf.one_hot(position, self.max_time)  # [T, max_T], shared by the batch
            plus = tf.broadcast_to(plus[None], tf.stack([batch, tf.shape(position)[0], self.max_time]))
            minus = tf.one_hot(tf.where(valid, remaining, self.max_time - 1), self.max_time)
            features = tf.concat([plus, minus], axis=-1)
            if shift == 0:
                return features
        else:
            plus = self._sinusoid(position)[None]  # [1, T, size]
            plus = plus + tf.zeros_like(remaining, dtype=plus.dtype)[..., None]
            features = tf.concat([plus, self._sinusoid(remaining)], axis=-1)
        return features * tf.cast(valid, features.dtype)[..., None]

    def _sinusoid(self, position):
        """[...] int → [..., size]: sin and cos of position·ω_i, ω_i = 10000^(−2i/size)."""
        half = self.size // 2
        frequencies = tf.exp(-tf.range(half, dtype=tf.float32) * (2.0 / self.size) * tf.math.log(10000.0))
        angles = tf.cast(position, tf.float32)[..., None] * frequencies
        return tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "max_time": self.max_time, "kind": self.kind, "size": self.size}
