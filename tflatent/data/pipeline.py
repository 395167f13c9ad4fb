"""From a split's sequences to ``tf.data`` batches of ``(x, lengths)``, padded batch-major.

Training batches follow the reference's bucketing (torchtext 0.2.3 ``BucketIterator``, docs/reference.md §6.2):

1. shuffle all N examples;
2. cut the shuffled list into chunks of ``chunk_batches · B`` examples;
3. sort each chunk by length and cut it into batches of B (only the very last batch may be short);
4. shuffle the batches within each chunk.

So a batch holds sequences of similar length (little padding) while the order stays random. The
permutations come from stateless random ops seeded per pass, and each pass draws a new seed from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``: a given seed gives the same
sequence of epochs in every run, and every epoch (every new iterator, or every repetition with
``repeat=True``) is shuffled afresh.

Evaluation batches are deterministic: all examples sorted by length (stable), cut into consecutive
batches of B, the last partial batch kept, so no example is ever dropped.

Each element is ``(x, lengths)``: ``x`` is ``[B, T]`` (tokens) or ``[B, T, D]`` (frames), padded with
``pad_value`` up to the longest sequence T of the batch; ``lengths`` is ``[B]`` int32.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


def bucketed_batch_indices(lengths: tf.Tensor, batch_size: int, chunk_batches: int,
                           seed: tf.Tensor) -> tf.RaggedTensor:
    """One training epoch's batches, as example indices: ragged [num_batches, (≤ B)] int32.

    Args:
      lengths: [N] int lengths of the examples.
      batch_size: B.
      chunk_batches: chunk size in batches (the reference: 100).
      seed: [2] int seed of the stateless random ops (one epoch).
    """
    lengths = tf.cast(lengths, tf.int64)
    n = tf.size(lengths, out_type=tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=seeds[0])  # 1.
    chunk = tf.range(n) // (batch_size * chunk_batches)  # 2.
    key = chunk * (tf.reduce_max(lengths) + 1) + tf.gather(lengths, order)
    order = tf.gather(order, tf.argsort(key, stable=True))  # 3. chunk by chunk, by length
    batches = _split_into_batches(order, batch_size)
    num_batches = batches.nrows()
    batch_chunk = tf.cast(tf.range(num_batches) // chunk_batches, tf.float64)
    noise = tf.random.stateless_uniform([num_batches], seed=seeds[1], dtype=tf.float64)
    return tf.gather(batches, tf.argsort(batch_chunk + noise))  # 4. noise < 1: batches stay in their chunk


def sorted_batch_indices(lengths: tf.Tensor, batch_size: int) -> tf.RaggedTensor:
    """Evaluation batches, as example indices: all examples sorted by length, cut into batches of B."""
    return _split_into_batches(tf.argsort(lengths, stable=True), batch_size)


def _split_into_batches(order: tf.Tensor, batch_size: int) -> tf.RaggedTensor:
    """[N] → ragged [ceil(N / B), (B)], the last row holding the remainder."""
    n = tf.size(order, out_type=tf.int64)
    starts = tf.range(0, n, batch_size)
    row_lengths = tf.minimum(starts + batch_size, n) - starts
    return tf.RaggedTensor.from_row_lengths(tf.cast(order, tf.int32), row_lengths)


def padded_length(steps, multiple: int, max_time: Optional[int] = None):
    """The time axis of a batch whose longest sequence has ``steps`` steps, with ``data.pad_to_multiple`` =
    ``multiple``: rounded up to a multiple, never beyond ``max_time`` (nor below ``steps``). A tensor."""
    padded = (steps + multiple - 1) // multiple * multiple
    if max_time is not None:
        padded = tf.maximum(tf.minimum(padded, max_time), steps)
    return tf.convert_to_tensor(padded)


def make_batches(sequences: tf.RaggedTensor, *, training: bool, batch_size: int, seed: int = 0,
                 repeat: bool = False, chunk_batches: int = 100, pad_value=0,
                 dtype: tf.DType = tf.int32, pad_to_multiple: int = 1,
                 max_time: Optional[int] = None) -> tf.data.Dataset:
    """Padded batches ``(x, lengths)`` of ``sequences`` (ragged ``[N, (T), ...]``).

    Args:
      sequences: the split, one row per example (``[N, (T)]`` tokens or ``[N, (T), D]`` frames).
      training: bucketed and reshuffled every epoch if True; sorted and deterministic if False.
      batch_size: B, examples per batch.
      seed: seeds the training shuffles (unused when ``training`` is False).
      repeat: repeat forever (each training repetition reshuffled) instead of one pass.
      chunk_batches: the training shuffle chunk, in batches.
      pad_value: the value of padded positions in ``x``.
      dtype: the dtype of ``x``.
      pad_to_multiple: pads each batch's time axis up to a multiple of this (1: to its longest
        sequence), so that batches take few distinct shapes: XLA (``train.jit_compile``) compiles once per
        shape. The lengths are unchanged; every model ignores padding.
      max_time: the padded time axis never exceeds it (the model's longest accepted length); None: no cap.
    """
    if batch_size < 1 or chunk_batches < 1 or pad_to_multiple < 1:
        raise ValueError(f"batch_size = {batch_size}, chunk_batches = {chunk_batches} and pad_to_multiple = "
                         f"{pad_to_multiple} must be >= 1")
    if sequences.nrows() == 0:
        raise ValueError("cannot batch an empty split (0 examples)")
    lengths = sequences.row_lengths()
    if training:
        epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        epoch_seeds = epoch_seeds.repeat() if repeat else epoch_seeds.take(1)
        indices = epoch_seeds.flat_map(lambda s: tf.data.Dataset.from_tensor_slices(
            bucketed_batch_indices(lengths, batch_size, chunk_batches, tf.stack([s, 0]))))
    else:
        indices = tf.data.Dataset.from_tensor_slices(sorted_batch_indices(lengths, batch_size))
        indices = indices.repeat() if repeat else indices

    def pad(batch_indices):
        rows = tf.gather(sequences, batch_indices)
        x = rows.to_tensor(default_value=tf.cast(pad_value, rows.dtype))
        if pad_to_multiple > 1:
            steps = tf.shape(x, out_type=tf.int64)[1]
            padded = padded_length(steps, pad_to_multiple, max_time)
            extra = tf.stack([tf.constant([0, 0], tf.int64), tf.stack([0, padded - steps])])
            extra = tf.concat([extra, tf.zeros([tf.rank(x) - 2, 2], tf.int64)], axis=0)
            x = tf.pad(x, extra, constant_values=tf.cast(pad_value, x.dtype))
        return tf.cast(x, dtype), tf.cast(rows.row_lengths(), tf.int32)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (indices.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE).with_options(options))
