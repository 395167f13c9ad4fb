"""``SequenceModel``: what every model of p(x, T) offers the training, evaluation and serving code.

Both models define the joint density of a sequence and its length, p(x, T) = p(x | T) p(T), and are
trained on the per-sequence objective [−log p(x | T) − log p(T)] / (T + 1) (docs/reference.md §4.2),
averaged over the batch. What the callers may rely on:

=======================  ==================================================================================
``has_latent``           whether the model has a latent z (an ELBO with a KL term, importance sampling)
``kl_weight``            the β of the KL term as a non-trainable variable (KL annealing assigns it), or
                         None for a model without a latent: there is nothing to anneal
``encode``               latent models: q(z | x)'s mean and log-variance per step
``length_log_prob``      log p(T) [B] for lengths [B], from the table over T = 0..max_time
``log_likelihood``       log p(x | T) + log p(T) per sequence [B]: exact, or importance-sampled with K =
                         ``num_samples`` for a latent model (a model without one refuses ``num_samples``)
``evaluate_nll``         the NLL of a split in the paper's units (one loop for both models, below)
``generate``             (x, lengths) sampled from the model
``from_config_fields``   the model a ``tflatent.config.Config`` asks for on a data bundle, built
=======================  ==================================================================================

Training is Keras's: ``train_step`` and ``test_step`` are written once, in ``SequenceModel``, on three
methods a model supplies (``training_loss``, ``evaluation_terms``, ``update_metrics``), so that XLA
(``compile(..., jit_compile=True)``, config ``train.jit_compile``) works the same on one device and on
several replicas (``compile`` says how).

``SequenceModel`` is a ``keras.Model`` subclass rather than a mixin or a ``typing.Protocol``: both
models are Keras models trained by that ``train_step`` (so ``fit``, callbacks and checkpoints treat
them alike), the contract's shared parts (the p(T) table, the split evaluation, the input signature) need
the model's state, and a stand-in for tests subclasses it the same way. Methods a model must supply
raise ``NotImplementedError`` here (an ``abc.ABCMeta`` would clash with Keras's own class machinery).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from tflatent.models import likelihood
from tflatent.training.distribute import global_average, global_count


class SequenceModel(keras.Model):
    """A model of p(x, T) with the contract in the module docstring.

    Args:
      vocab_size: V, token ids (text) or 88 (music).
      music: whether x is a sequence of V-dim binary frames (else token ids).
      max_time: max_T, the longest T the model accepts.
      length_log_prob: log p(T), either a callable on an int array of lengths (e.g. a data bundle's
        ``length_prior.log_prob``) or a table for T = 0..max_time; stored as the table
        ``length_log_prob_table`` (−inf where p(T) = 0).
      **kwargs: ``keras.Model`` arguments.
    """

    has_latent = False

    def __init__(self, vocab_size, music, max_time, length_log_prob, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.music = bool(music)
        self.max_time = int(max_time)
        if callable(length_log_prob):
            length_log_prob = length_log_prob(np.arange(self.max_time + 1, dtype=np.int32))
        table = np.asarray(length_log_prob, dtype=np.float32)
        if table.shape != (self.max_time + 1,):
            raise ValueError(f"{type(self).__name__}: length_log_prob must give log p(T) for T = 0..max_time "
                             f"({self.max_time + 1} values); got shape {table.shape}")
        self.length_log_prob_table = tf.constant(table)
        self._functions = {}  # traced functions kept between calls (``_function``)

    @classmethod
    def from_config_fields(cls, config, bundle):
        """The model ``config`` (a ``tflatent.config.Config``) asks for on ``bundle``, built."""
        raise NotImplementedError(f"{cls.__name__}.from_config_fields")

    @property
    def kl_weight(self):
        """β of the KL term (a non-trainable tf.Variable), or None when the model has no latent."""
        return None

    def length_log_prob(self, lengths):
        """log p(T) [B] for lengths [B]."""
        return tf.gather(self.length_log_prob_table, lengths)

    # ------------------------------------------------------------------ training (Keras)
    def compile(self, optimizer="rmsprop", *args, jit_compile="auto", run_eagerly=False, **kwargs):
        """``keras.Model.compile``, whose XLA (``jit_compile``) also runs under several replicas.

        Keras XLA-compiles its whole step, ``strategy.run`` included, into one program on the first
        device; with several replicas that program reads the other replicas' variables and fails
        ("Trying to access resource ... located in device CPU:1 from device CPU:0", also on GPUs;
        keras-team/keras#19005). There, Keras compiles nothing and each replica compiles its own forward
        and backward pass (``training_loss`` and its gradients) and its evaluation terms instead; the
        optimizer's update, which reduces the gradients across replicas, runs outside XLA. On one device
        Keras compiles the whole step. ``"auto"`` is Keras's choice (XLA on an accelerator).
        """
        if jit_compile == "auto":
            jit_compile = not run_eagerly and self._resolve_auto_jit_compile()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._xla_per_replica = bool(jit_compile) and not run_eagerly and replicas > 1
        self._functions = {}  # a step traced earlier read the optimizer this compile replaces
        super().compile(optimizer, *args, jit_compile=bool(jit_compile) and not self._xla_per_replica,
                        run_eagerly=run_eagerly, **kwargs)

    @property
    def xla_per_replica(self) -> bool:
        """Whether each replica XLA-compiles its own step (``compile``'s XLA under several replicas)."""
        return getattr(self, "_xla_per_replica", False)

    def _function(self, key, build):
        """``build()``, called once per ``key`` until the next ``compile``: a traced function is kept on
        the model, with the programs XLA compiled for it (one per batch shape), not traced again per call."""
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]

    def _replica_function(self, method):
        """``method``, XLA-compiled once per model when ``xla_per_replica`` (else as it is)."""
        if not self.xla_per_replica:
            return method
        return self._function(("replica", method.__name__),
                              lambda: tf.function(method, jit_compile=True, reduce_retracing=True))

    def train_step(self, data):
        x, lengths = data[:2]  # (x, lengths) batches; train_on_batch appends a (None) sample weight
        count = global_count(tf.cast(lengths, tf.float32))  # the global batch (an all-reduce: outside XLA)
        terms, grads = self._replica_function(self._terms_and_gradients)(x, lengths, count)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_metrics(*terms)

    def test_step(self, data):
        x, lengths = data[:2]
        return self.update_metrics(*self._replica_function(self.evaluation_terms)(x, lengths))

    def _terms_and_gradients(self, x, lengths, count):
        """(``training_loss``'s terms, gradients of the loss averaged over the global batch of ``count``)."""
        with tf.GradientTape() as tape:
            loss, terms = self.training_loss(x, lengths)
            scaled = global_average(loss, count)  # ÷ the global batch under tf.distribute, even or not
            scaled = self.optimizer.scale_loss(scaled)  # mixed precision's loss scaling (else identity)
        return terms, tape.gradient(scaled, self.trainable_variables)

    def training_loss(self, x, lengths):
        """(per-sequence training loss [B], the terms ``update_metrics`` takes) of one training batch."""
        raise NotImplementedError(f"{type(self).__name__}.training_loss")

    def evaluation_terms(self, x, lengths):
        """The terms ``update_metrics`` takes, of one validation batch."""
        raise NotImplementedError(f"{type(self).__name__}.evaluation_terms")

    def update_metrics(self, *terms):
        """Updates the metrics with one batch's terms; returns {name: value} of every metric."""
        raise NotImplementedError(f"{type(self).__name__}.update_metrics")

    def log_likelihood(self, x, lengths, *, num_samples=None, chunk=None, seed=None):
        """log p(x | T) + log p(T) per sequence [B] (docs/reference.md §5.1).

        Args:
          num_samples: K importance samples (latent models only; a model without a latent refuses it).
          chunk: samples drawn at a time (latent models; None: all K at once). Memory only: the
            estimate does not depend on it.
          seed: None, an int or a stateless [2] seed (``tflatent.seeds``) for the samples.
        """
        raise NotImplementedError(f"{type(self).__name__}.log_likelihood")

    def encode(self, x, lengths):
        """Latent models: the parameters of q(z | x), (mean, log-variance) [B, T, Z] each."""
        raise NotImplementedError(f"{type(self).__name__} has no latent to encode to")

    def elbo_terms(self, x, lengths):
        """Latent models: per-sequence −E_q log p(x | z) and the KL estimate (at β = 1), [B] each."""
        raise NotImplementedError(f"{type(self).__name__} has no latent, hence no ELBO terms")

    def evaluate_nll(self, dataset, *, num_samples=None, chunk=None, strategy=None, jit_compile=False):
        """The NLL of the (x, lengths) batches of a split, per token (frame), with the Σ(T + 1) normaliser.

        Returns {"nll", "bpc" | "nats_per_frame", "sequences", "tokens"} (``likelihood.evaluate_split``)
        and, for a latent model, the ELBO and its terms at β = 1: "elbo", "recon", "kl" per token. As in
        the reference, those come from a separate pass with the model's training samples. A model
        without a latent computes the exact NLL and ignores ``num_samples`` and ``chunk``. With a
        multi-replica ``strategy`` the batches are global ones that each replica evaluates its share of
        (``likelihood.split_sums``); the flow model's per-sequence seeds make the figures equal the
        one-device ones on the same weights.

        ``jit_compile`` (config ``train.jit_compile``) XLA-compiles the per-batch functions, once per
        batch shape; under several replicas each replica compiles its own, as ``compile`` does for the
        training step. XLA draws other random numbers than TensorFlow's kernels, so the estimate is
        another (equally valid) one than without it; with it, one device and several replicas agree.
        """
        per_replica = strategy is not None and strategy.num_replicas_in_sync > 1
        # kept: a validation every few epochs traces (and XLA compiles) once
        log_likelihood, terms = self._function(
            ("evaluation", num_samples, chunk, bool(jit_compile), per_replica),
            lambda: self._evaluation_function_pair(num_samples, chunk, jit_compile, per_replica))
        return likelihood.evaluate_split(log_likelihood, dataset, music=self.music, terms_fn=terms,
                                         strategy=strategy if per_replica else None)

    def _evaluation_function_pair(self, num_samples, chunk, jit_compile, per_replica):
        """(log_likelihood, terms or None) for ``likelihood.evaluate_split``, as ``evaluate_nll`` asks.

        On one device they are traced once for any batch shape (XLA still compiles per shape); per replica
        (called inside ``strategy.run``) they are XLA-compiled per shape when asked, else traced there.
        """
        def compiled(function):
            options = dict(reduce_retracing=True) if per_replica else dict(input_signature=self.input_signature())
            return tf.function(function, jit_compile=bool(jit_compile), **options)

        if self.has_latent:
            log_likelihood = functools.partial(self.log_likelihood, num_samples=num_samples, chunk=chunk)
            elbo_terms = compiled(self.elbo_terms)

            def terms(x, lengths):
                recon, kl = elbo_terms(x, lengths)
                return {"recon": recon, "kl": kl, "elbo": recon + kl - self.length_log_prob(lengths)}
        else:
            log_likelihood, terms = self.log_likelihood, None
        if per_replica and not jit_compile:
            return log_likelihood, terms
        return compiled(log_likelihood), terms

    def input_signature(self):
        """[x, lengths] specs: x [B, T] int32 (text) or [B, T, V] float32 (music); lengths [B] int32."""
        x = (tf.TensorSpec([None, None, self.vocab_size], tf.float32) if self.music
             else tf.TensorSpec([None, None], tf.int32))
        return [x, tf.TensorSpec([None], tf.int32)]

    def generate(self, lengths=None, num_samples=None, temperature=1.0, seed=None):
        """Samples (x, lengths): for the given lengths [N], or ``num_samples`` lengths drawn from p(T)."""
        raise NotImplementedError(f"{type(self).__name__}.generate")

    # ------------------------------------------------------------------ saving
    # A model's config rebuilds it with its shared layers shared (the embedding and the tied output);
    # ``keras.saving.load_model`` then builds it (below) and loads the weights of a ``.keras`` file.
    def get_build_config(self):
        return {"built": self.built}

    def build_from_config(self, config):
        if config.get("built") and not self.built:
            self.build()

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "music": self.music,
                "max_time": self.max_time, "length_log_prob": self.length_log_prob_table.numpy().tolist()}
