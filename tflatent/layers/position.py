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

Every network multiplies these features by a kernel W [2·max_T, K] (the first layer of each LSTM, the
attention's context projection). For the one-hot pair that product is the sum of two rows of W,

    pos[t] W = W[t] + W[max_T + L − 1 − t],

so ``PositionFeatures.compact`` gives the features in index form (``OneHotPair``) and ``project`` takes the
product as two gathers: the [B, T, 2·max_T] matrix is never built, nor scanned, nor multiplied. For
music max_T runs into the thousands (Nottingham's one-hot pair is ~3,000 wide), where that matrix and
its product were a third of a training step on a CPU.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.config import POSITION_ENCODINGS


class OneHotPair:
    """One-hot pair features in index form: pos = [a · one_hot(plus, M), b · one_hot(minus, M)].

    What ``PositionFeatures.compact`` gives for "onehot": ``project`` multiplies it by a kernel by
    gathering rows, and ``to_dense`` gives the features ``PositionFeatures`` returns.

    Args:
      plus, minus: [...] int32 in [0, M), the positions of the two ones.
      plus_scale, minus_scale: [...] float32 (0 or 1), the values of the two ones.
      max_time: M.
    """

    def __init__(self, plus, minus, plus_scale, minus_scale, max_time):
        self.plus, self.minus = plus, minus
        self.plus_scale, self.minus_scale = plus_scale, minus_scale
        self.max_time = max_time

    @property
    def shape(self):
        """The dense features' static shape, [..., 2M]."""
        return self.plus.shape.concatenate([2 * self.max_time])

    def matmul(self, kernel):
        """pos W for kernel W [2M, K] → [..., K]: a · W[plus] + b · W[M + minus]."""
        plus_scale, minus_scale = (tf.cast(scale, kernel.dtype)[..., None]
                                   for scale in (self.plus_scale, self.minus_scale))
        return tf.gather(kernel, self.plus) * plus_scale + tf.gather(kernel, self.minus + self.max_time) * minus_scale

    def transpose(self, perm):
        """The features with their leading (index) axes permuted, e.g. [1, 0] for time-major."""
        return OneHotPair(*(tf.transpose(x, perm) for x in (self.plus, self.minus, self.plus_scale,
                                                            self.minus_scale)), self.max_time)

    def to_dense(self):
        """[..., 2M] float32."""
        return tf.concat([tf.one_hot(self.plus, self.max_time) * self.plus_scale[..., None],
                          tf.one_hot(self.minus, self.max_time) * self.minus_scale[..., None]], axis=-1)


def project(features, kernel):
    """features [..., C] · kernel [C, K] → [..., K]; the features dense or a ``OneHotPair`` (gathers)."""
    if isinstance(features, OneHotPair):
        return features.matmul(kernel)
    flat = tf.reshape(features, tf.stack([-1, tf.shape(features)[-1]]))
    return tf.reshape(tf.matmul(flat, kernel), tf.concat([tf.shape(features)[:-1], tf.shape(kernel)[-1:]], axis=0))


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
        features = self.compact(lengths, num_steps, shift)
        return features.to_dense() if isinstance(features, OneHotPair) else features

    def compact(self, lengths, num_steps=None, shift=0):
        """``call``'s features in the form a product with a kernel reads fastest (``project``).

        A ``OneHotPair`` [B, T] for "onehot" (the module docstring), the dense [B, T, 2·size] features
        for "sinusoidal". Arguments as ``call``.
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
            plus = tf.broadcast_to(position[None], tf.shape(remaining))  # [B, T]
            # one_hot(p, M) is zero for p ≥ M (t + shift past every length): the row is kept in range
            # and its scale is 0. At padding, shift 0 keeps one_hot(t) and one_hot(M − 1), as the
            # reference does; shift 1 is zero.
            plus_scale = tf.cast(plus < self.max_time, tf.float32)
            minus_scale = tf.ones_like(plus_scale)
            if shift:
                plus_scale *= tf.cast(valid, tf.float32)
                minus_scale = tf.cast(valid, tf.float32)
            return OneHotPair(tf.minimum(plus, self.max_time - 1), tf.where(valid, remaining, self.max_time - 1),
                              plus_scale, minus_scale, self.max_time)
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
