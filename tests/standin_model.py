"""A tiny stand-in for the model contract and the data bundle, for testing the training machinery.

``StandInModel`` is a ``SequenceModel`` (``tflatent.models.base``) with what training relies on: a KL
weight, a custom ``train_step`` / ``test_step`` logging ``loss``, ``recon`` and ``kl`` per token,
``log_likelihood`` and ``elbo_terms`` (so the contract's ``evaluate_nll``) and ``generate``. Its
"latent" part is a learned scale ``a`` with KL(a) = a² per step, so β visibly changes the loss, and its
emission is one learned logit vector shared by all steps; its log p(T) is 0. ``StandInBundle`` serves
random sequences through the data API (``batches``, ``num_examples``, ``length_prior``, ...).
``parts()`` gives both as the ``build_model`` / ``load_dataset`` arguments of the entry points'
``main`` (``python tests/standin_model.py train|evaluate|generate ARGS...`` runs one on them).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tflatent.models.base import SequenceModel


class StandInModel(SequenceModel):
    """Per-token loss ``(recon + β·KL − log p(T)) / (T + 1)`` of a position-independent emission."""

    has_latent = True

    def __init__(self, vocab_size: int, music: bool, nan_at_step: int = 0, seconds_per_step: float = 0.0,
                 max_time: int = 8):
        super().__init__(vocab_size, music, max_time, np.zeros(max_time + 1, np.float32))
        self.nan_at_step = nan_at_step  # > 0: the loss becomes NaN from this training step on
        self.seconds_per_step = seconds_per_step  # > 0: each training step sleeps (to kill a run mid-way)
        self.beta = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="kl_weight")
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="steps")
        self.logits = self.add_weight(shape=(vocab_size,), initializer="zeros", name="logits")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.trackers = {name: keras.metrics.Mean(name) for name in ("loss", "recon", "kl")}

    @property
    def kl_weight(self):
        return self.beta

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        self.built = True

    def terms(self, x, lengths):
        """Per-sequence recon and KL sums and the per-sequence normaliser T + 1."""
        mask = tf.sequence_mask(lengths, tf.shape(x)[1], tf.float32)
        if self.music:
            step = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=x, logits=tf.broadcast_to(self.logits, tf.shape(x))), -1)
        else:
            step = -tf.gather(tf.nn.log_softmax(self.logits), x)
        recon = tf.reduce_sum(step * mask, 1)
        kl = tf.square(self.scale) * tf.cast(lengths, tf.float32)
        return recon, kl, tf.cast(lengths, tf.float32) + 1.0

    def _step(self, data, training):
        x, lengths = data
        with tf.GradientTape() as tape:
            recon, kl, norm = self.terms(x, lengths)
            per_sequence = (recon + self.beta * kl) / norm
            if training and self.nan_at_step:
                per_sequence += tf.where(self.steps + 1 >= self.nan_at_step, math.nan, 0.0)
            loss = tf.nn.compute_average_loss(per_sequence)
        if training and self.seconds_per_step:
            tf.numpy_function(lambda: time.sleep(self.seconds_per_step) or np.float32(0), [], tf.float32)
        if training:
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.steps.assign_add(1)
        self.trackers["loss"].update_state(per_sequence)
        self.trackers["recon"].update_state(recon / norm)
        self.trackers["kl"].update_state(kl / norm)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        return self._step(data, training=True)

    def test_step(self, data):
        return self._step(data, training=False)

    def call(self, inputs):
        return self.logits

    def elbo_terms(self, x, lengths):
        return self.terms(x, lengths)[:2]

    def log_likelihood(self, x, lengths, *, num_samples=None, chunk=None, seed=None):
        """−(recon + KL): the ELBO at β = 1 stands in for the importance-sampled estimate."""
        recon, kl, _ = self.terms(x, lengths)
        return -(recon + kl) + self.length_log_prob(lengths)

    def generate(self, lengths=None, num_samples=None, temperature=1.0, seed=None):
        rng = np.random.default_rng(seed)
        if lengths is None:
            lengths = rng.integers(2, 6, size=num_samples)
        lengths = np.asarray(lengths, np.int32)
        shape = (len(lengths), int(lengths.max()))
        if self.music:
            p = tf.sigmoid(self.logits / temperature).numpy()
            x = (rng.random(shape + (self.vocab_size,)) < p).astype(np.float32)
        else:
            x = rng.integers(2, self.vocab_size, size=shape).astype(np.int32)
        return x, lengths


class _LengthPrior:
    def __init__(self, max_time):
        self.max_time = max_time

    def log_prob(self, lengths):
        return tf.fill(tf.shape(lengths), -math.log(self.max_time))


class _Vocabulary:
    tokens = ["<pad>", "<unk>"] + list("abcdef")

    def decode(self, ids):
        return "".join(self.tokens[i] for i in np.asarray(ids).ravel() if i != 0)


class StandInBundle:
    """Random sequences with lengths 2..max_time, served through the data API."""

    def __init__(self, music: bool = True, sizes=(40, 12, 12), max_time: int = 8, seed: int = 0):
        self.is_music = music
        self.vocab_size = 88 if music else len(_Vocabulary.tokens)
        self.vocabulary = None if music else _Vocabulary()
        self.max_time = max_time
        self.length_prior = _LengthPrior(max_time)
        rng = np.random.default_rng(seed)
        self.splits = {}
        for split, size in zip(("train", "valid", "test"), sizes):
            lengths = rng.integers(2, max_time + 1, size=size).astype(np.int32)
            if music:
                x = (rng.random((size, max_time, 88)) < 0.1).astype(np.float32)
            else:
                x = rng.integers(2, self.vocab_size, size=(size, max_time)).astype(np.int32)
            x[np.arange(max_time)[None, :] >= lengths[:, None]] = 0
            self.splits[split] = (x, lengths)
        self.batch_size, self.eval_batch_size = 4, 6

    def num_examples(self, split):
        return len(self.splits[split][1])

    def batches(self, split, training, batch_size=None, seed=None, repeat=False):
        data = tf.data.Dataset.from_tensor_slices(self.splits[split])
        if training:
            data = data.shuffle(len(self.splits[split][1]), seed=seed)
        data = data.batch(batch_size or (self.batch_size if training else self.eval_batch_size))
        return data.repeat() if repeat else data


def parts(model_kwargs=None, bundle_kwargs=None) -> dict:
    """``build_model`` and ``load_dataset`` making the stand-ins, for an entry point's ``main(argv, **parts)``."""
    def build_model(config, bundle):
        model = StandInModel(bundle.vocab_size, bundle.is_music, max_time=bundle.max_time,
                             **(model_kwargs or {}))
        model.build()
        return model

    def load_dataset(config, seed=0):
        return StandInBundle(music=config.dataset != "ptb", **(bundle_kwargs or {}))

    return {"build_model": build_model, "load_dataset": load_dataset}


if __name__ == "__main__":  # python tests/standin_model.py train|evaluate|generate ARGS...: on the stand-ins
    import importlib

    entry = importlib.import_module(f"tflatent.{sys.argv[1]}")
    sys.exit(entry.main(sys.argv[2:], **parts(json.loads(os.environ.get("STANDIN_MODEL_KWARGS", "{}")))))
