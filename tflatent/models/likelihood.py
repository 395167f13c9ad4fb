"""Importance-sampled likelihood and the units the paper reports.

Reference docs/reference.md §5.1 and §5.4. With K samples z⁽ᵏ⁾ ~ q(z | x) and the log importance weights

    w⁽ᵏ⁾ = Σ_{t<T} [log p(x_t | z⁽ᵏ⁾) + log p(z_t⁽ᵏ⁾ | z_<t⁽ᵏ⁾, T) − log q(z_t⁽ᵏ⁾ | x)]

the estimate is log p̂(x | T) = logsumexp_k w⁽ᵏ⁾ − log K, and over a split

    NLL = −Σ_i [log p̂(x_i | T_i) + log p(T_i)] / Σ_i (T_i + 1)

in nats per token (text) or nats per frame (music: the same formula, per time step, not per note);
the "+1" stands in for an end-of-sequence token. Bits per character = NLL / ln 2.

The K samples are drawn in chunks so that memory stays bounded; the chunks combine exactly, since
logsumexp over all K equals logsumexp over the chunks' logsumexps.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def importance_sampled_log_likelihood(log_weight_fn, num_samples, chunk_size):
    """log p̂(x | T) [B] from ``num_samples`` importance samples drawn ``chunk_size`` at a time.

    Args:
      log_weight_fn: k (a Python int) → log weights [k, B] of k fresh samples (e.g. a model's
        ``log_weights(x, lengths, k)``).
      num_samples: K.
      chunk_size: samples per call; the last chunk takes the remainder.

    Returns:
      logsumexp over all K weights − log K, [B]. Under ``tf.function`` each chunk waits for the
      previous one (control dependencies), so at most one chunk's tensors are alive at a time.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"importance sampling needs num_samples >= 1 and chunk_size >= 1; got "
                         f"num_samples={num_samples}, chunk_size={chunk_size} (config: train.nll_samples, "
                         "train.nll_chunk)")
    sizes = [chunk_size] * (num_samples // chunk_size)
    if num_samples % chunk_size:
        sizes.append(num_samples % chunk_size)
    chunk_totals = []  # logsumexp of each chunk, [B] each
    for size in sizes:
        with tf.control_dependencies(chunk_totals[-1:]):
            chunk_totals.append(tf.reduce_logsumexp(log_weight_fn(size), axis=0))
    return tf.reduce_logsumexp(tf.stack(chunk_totals), axis=0) - math.log(num_samples)


def bits_per_character(nats):
    """Nats per token → bits per character (text)."""
    return nats / math.log(2.0)


class LikelihoodAccumulator:
    """Sums −log p̂(x, T) and Σ (T + 1) over the batches of a split, in float64.

    ``update`` takes eager tensors or arrays: the per-sequence log p̂(x | T) + log p(T) [B] and the
    lengths [B]. A sequence with log p̂ = −inf (e.g. a length p(T) never saw) makes the result inf,
    as in the reference.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.neg_log_likelihood = 0.0
        self.tokens = 0
        self.sequences = 0

    def update(self, log_likelihood, lengths):
        lengths = np.asarray(lengths, dtype=np.int64)
        self.neg_log_likelihood -= float(np.sum(np.asarray(log_likelihood, dtype=np.float64)))
        self.tokens += int(np.sum(lengths + 1))
        self.sequences += int(lengths.size)

    def update_sums(self, log_likelihood_sum, tokens, sequences):
        """Adds already summed figures: Σ log p̂(x, T), Σ (T + 1) and the number of sequences."""
        self.neg_log_likelihood -= float(log_likelihood_sum)
        self.tokens += int(round(float(tokens)))
        self.sequences += int(round(float(sequences)))

    def result(self, music=False):
        """{"nll": nats per token, "bpc" (text) or "nats_per_frame" (music), "sequences", "tokens"}."""
        if not self.tokens:
            raise ValueError("LikelihoodAccumulator.result() before any update: the split was empty")
        nats = self.neg_log_likelihood / self.tokens
        unit = {"nats_per_frame": nats} if music else {"bpc": bits_per_character(nats)}
        return {"nll": nats, **unit, "sequences": self.sequences, "tokens": self.tokens}


def evaluate_split(log_likelihood_fn, batches, music=False, terms_fn=None, strategy=None):
    """The NLL of a split: ``LikelihoodAccumulator.result`` over (x, lengths) batches.

    Args:
      log_likelihood_fn: (x, lengths) → log p̂(x | T) + log p(T) [B].
      batches: (x, lengths) pairs.
      music: report nats per frame (else bits per character).
      terms_fn: optional (x, lengths) → {name: per-sequence value [B]}; each is summed over the split
        and reported per token (frame), Σ value / Σ (T + 1), under its name.
      strategy: with more than one replica, ``batches`` are global batches that every replica takes its
        share of (:func:`split_sums`).
    """
    accumulator = LikelihoodAccumulator()
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        def per_sequence(x, lengths):
            return {"log_likelihood": log_likelihood_fn(x, lengths), **(terms_fn(x, lengths) if terms_fn else {})}
        totals = split_sums(per_sequence, batches, strategy)
        accumulator.update_sums(totals.pop("log_likelihood"), totals.pop("tokens"), totals.pop("sequences"))
        result = accumulator.result(music)
        result.update({name: total / result["tokens"] for name, total in totals.items()})
        return result
    totals = {}
    for x, lengths in batches:
        accumulator.update(log_likelihood_fn(x, lengths), lengths)
        for name, value in (terms_fn(x, lengths) if terms_fn else {}).items():
            totals[name] = totals.get(name, 0.0) + float(np.sum(np.asarray(value, dtype=np.float64)))
    result = accumulator.result(music)
    result.update({name: total / result["tokens"] for name, total in totals.items()})
    return result


def split_sums(per_sequence_fn, batches, strategy):
    """Sums of per-sequence figures over a split, each replica taking its share of every batch.

    Args:
      per_sequence_fn: (x, lengths) → {name: [B] float tensor}, run on each replica's share.
      batches: (x, lengths) global batches; ``strategy.experimental_distribute_dataset`` splits each
        across the replicas (a share may be uneven or empty) and, across workers, shards them as
        the dataset's options say (``tflatent.train`` shards by data).
      strategy: the ``tf.distribute`` strategy the model's variables live in.

    Returns:
      {name: Σ over the split} plus "tokens" (Σ (T + 1)) and "sequences", as Python floats. Each
      replica sums its sequences in float32 (no float64 on a TPU); one SUM reduction per batch adds
      the replicas' sums exactly once; the batches are added in float64.
    """
    def replica_sums(x, lengths):
        values = dict(per_sequence_fn(x, lengths))
        values.update(tokens=tf.cast(lengths, tf.float32) + 1.0, sequences=tf.ones_like(lengths, tf.float32))
        return {name: tf.reduce_sum(tf.cast(value, tf.float32)) for name, value in values.items()}

    @tf.function(reduce_retracing=True)
    def step(x, lengths):
        per_replica = strategy.run(replica_sums, args=(x, lengths))
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)

    totals = {}
    for x, lengths in strategy.experimental_distribute_dataset(batches):
        for name, value in step(x, lengths).items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals
