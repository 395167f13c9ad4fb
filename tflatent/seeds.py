"""Seeds for stateless sampling: the one convention every sampling method here accepts.

``seed`` is None (fresh randomness on every call, from TensorFlow's global generator), a Python int
(reproducible: the stateless seed [seed, 0]), or a stateless seed, an int tensor of shape [2].

Two derived seeds make runs repeat under ``tf.distribute``, where a stateful seed would differ from
replica to replica and from run to run:

* :func:`replica_step_seed` for training noise: one seed per (base seed, step, replica), so the
  replicas draw different noise and a rerun draws the same.
* :func:`sequence_seeds` for evaluation noise: one seed per sequence, from its content and length, so
  a sequence's importance samples do not depend on which batch or replica it lands in (a split's
  estimate is the same on one device and on N).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp


def stateless_seed(seed=None):
    """None | int | [2] int tensor → a [2] int32 stateless seed."""
    if seed is None:
        return tfp.random.sanitize_seed(None)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(tf.reshape(seed, [2]), tf.int32)


def replica_step_seed(base, step):
    """[2] seed of one training step on the current replica: fold_in(fold_in([base, 0], step), replica id)."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    seed = tf.random.experimental.stateless_fold_in(stateless_seed(base), tf.cast(step, tf.int64))
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int32))


# Odd multipliers of the content key (a 32-bit multiplicative hash; collisions only share noise).
_KEY_STEP = 0x9E3779B1
_KEY_NOTE = 0x85EBCA77


def sequence_seeds(seed, x, lengths):
    """Per-sequence seeds [B, 2]: ``seed`` folded with a key of each sequence's valid steps and length.

    x: [B, T] int token ids or [B, T, V] binary frames; lengths [B]. The key wraps around in 32-bit
    integer arithmetic (defined under XLA, as on CPUs and GPUs), uses only the first L_b steps, so
    padding and batch composition never change it, and needs no string op or float64 (TPU-safe).
    """
    x = tf.convert_to_tensor(x)  # numpy arrays and lists too
    steps = tf.shape(x)[1]
    if x.shape.rank == 3:  # a frame → Σ_n x_n·(n + 1)·K_note
        notes = tf.range(1, tf.shape(x)[2] + 1) * tf.constant(_KEY_NOTE - 2**32, tf.int32)
        codes = tf.reduce_sum(tf.cast(x, tf.int32) * notes, axis=-1)
    else:
        codes = tf.cast(x, tf.int32)
    weights = (tf.range(steps) + 1) * tf.constant(_KEY_STEP - 2**32, tf.int32)  # [T]
    mask = tf.sequence_mask(lengths, steps, tf.int32)
    keys = tf.reduce_sum((codes + 1) * weights * mask, axis=1) + tf.cast(lengths, tf.int32)  # [B]
    # stateless_fold_in(base, key) for every key at once: it is [a full-range int drawn from base, key]
    # (TensorFlow's definition), and a map_fn over an empty batch (a replica's share) fails under XLA.
    first = tf.random.stateless_uniform([], seed=stateless_seed(seed), minval=None, maxval=None, dtype=tf.int32)
    return tf.stack([tf.fill(tf.shape(keys), first), keys], axis=1)
