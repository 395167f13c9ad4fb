"""The length model p(T): the empirical distribution of sequence lengths (docs/reference.md §5.3).

    p(T) = (c_T + k) / Σ_{t=0}^{max_time} (c_t + k),    T ∈ {0, 1, …, max_time},

where c_T counts the sequences of length T (train + valid in the reference, or train only) and k is
add-k smoothing. The reference uses k = 0 for PTB (a test length never seen gives log p(T) = −inf)
and k = 1 for music, over the bins 0..max_time. Lengths outside 0..max_time have probability 0.

The same log p(T) is added to the flow model's and the baseline's log-likelihoods.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class LengthPrior:
    """p(T) from length counts (``counts[T]``) or from a list of lengths.

    Args:
      counts: [max_time + 1] counts c_T (positional), or None when ``lengths`` is given.
      max_time: the largest length with support; None: ``len(counts) - 1`` or ``max(lengths)``.
      smoothing: k ≥ 0, added to every count c_0..c_max_time.
      lengths: the observed lengths, as an alternative to ``counts``.
    """

    def __init__(self, counts: Optional[np.ndarray] = None, max_time: Optional[int] = None,
                 smoothing: float = 0.0, *, lengths: Optional[np.ndarray] = None):
        if (counts is None) == (lengths is None):
            raise ValueError("give exactly one of counts (per length 0..max_time) and lengths")
        if lengths is not None:
            lengths = np.asarray(lengths).ravel()
            if lengths.size and lengths.min() < 0:
                raise ValueError(f"lengths must be >= 0; got {lengths.min()}")
            max_time = int(lengths.max()) if max_time is None and lengths.size else max_time
            if max_time is None:
                raise ValueError("max_time is needed when lengths is empty")
            if lengths.size and lengths.max() > max_time:
                raise ValueError(f"a length of {lengths.max()} exceeds max_time = {max_time}")
            counts = np.bincount(lengths.astype(np.int64), minlength=max_time + 1)
        counts = np.asarray(counts, np.float64)
        max_time = len(counts) - 1 if max_time is None else int(max_time)
        if counts.ndim != 1 or len(counts) != max_time + 1:
            raise ValueError(f"counts must have shape [max_time + 1] = [{max_time + 1}]; got {counts.shape}")
        if (counts < 0).any() or smoothing < 0:
            raise ValueError("counts and smoothing must be >= 0")
        total = counts.sum() + smoothing * len(counts)
        if total <= 0:
            raise ValueError("p(T) needs at least one length or a positive smoothing")
        self.counts = counts
        self.max_time = max_time
        self.smoothing = float(smoothing)
        with np.errstate(divide="ignore"):
            self.probs = (counts + smoothing) / total
            self._log_probs = tf.constant(np.log(self.probs), tf.float32)  # [max_time + 1]

    def log_prob(self, lengths) -> tf.Tensor:
        """log p(T) for a tensor of lengths (any shape, any integer dtype), float32 of the same shape."""
        lengths = tf.convert_to_tensor(lengths)
        inside = (lengths >= 0) & (lengths <= self.max_time)
        values = tf.gather(self._log_probs, tf.clip_by_value(tf.cast(lengths, tf.int32), 0, self.max_time))
        return tf.where(inside, values, tf.constant(-np.inf, tf.float32))

    def sample(self, n: int, seed) -> tf.Tensor:
        """[n] int32 lengths drawn from p(T | T ≥ 1); ``seed`` is an int or a [2] stateless seed."""
        seed = tf.convert_to_tensor(seed)
        seed = tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed
        return sample_lengths(self._log_probs, n, seed)

    def as_distribution(self) -> tfd.Categorical:
        """p(T) as a TFP distribution over the lengths 0..max_time (int32 samples)."""
        return tfd.Categorical(logits=self._log_probs, dtype=tf.int32, name="LengthPrior")


def sample_lengths(log_probs, num_samples, seed) -> tf.Tensor:
    """T ~ p(T | T ≥ 1) from a table of log p(T) for T = 0..max_time: [num_samples] int32.

    A sequence has at least one step, so T = 0 is never drawn, even where add-one smoothing gives it
    mass. ``seed`` is a [2] stateless seed.
    """
    log_probs = tf.convert_to_tensor(log_probs, tf.float32)
    return tf.random.stateless_categorical(log_probs[tf.newaxis, 1:], num_samples, seed, dtype=tf.int32)[0] + 1
