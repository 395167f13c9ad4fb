"""The LSTM baseline: an autoregressive language model conditioned on the length T.

Reference docs/reference.md §7.2, §8.2 (``baseline_model.LSTMModel`` with T-conditioning and tied weights). With
e(x) the embedding (Xavier-uniform, dropout) and pos the position features:

    s_t = LSTM([e(x_t), pos[t + 1]])        t = 0..T−1, zero initial state, dropout between layers
    o_0 = 0,  o_t = s_{t−1}  (t ≥ 1)         the top layer's outputs shifted right by one step
    logits_t = (W dropout(o_t) + b) Eᵀ + c   W ~ U(±0.07), b = 0, no nonlinearity; E tied, c = 0
    p(x_t | x_<t, T) = Categorical(logits_t) (text) or Π_n Bernoulli(σ(logits_{t,n})) (music)

So x_0 is predicted from the zero state (it does not see T), and o_t has read x_<t and pos[1..t]; the
input at the last step only feeds the unused prediction of x_T. The objective per sequence is the
flow model's:

    L_b = [−Σ_{t<T_b} log p(x_t | x_<t, T_b) − log p(T_b)] / (T_b + 1),   averaged over the batch.

Metrics: ``loss`` is that average (what the optimiser minimises); ``nll`` is Σ_b [−log p(x_b | T_b)
− log p(T_b)] / Σ_b (T_b + 1) over the epoch, the figure the reference logs as its loss and the paper
reports (exact here: no sampling).

As in ``tflatent.models.emission``, music frames are the 88 notes; the reference's extra always-zero pad
column (and its Bernoulli term) is absent.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.data.length_prior import sample_lengths
from tflatent.layers.embedding import SequenceEmbedding
from tflatent.layers.initializers import uniform
from tflatent.layers.lstm import LSTMStack
from tflatent.layers.position import PositionFeatures
from tflatent.models.base import SequenceModel
from tflatent.models.emission import emission_distribution
from tflatent.seeds import stateless_seed


@keras.saving.register_keras_serializable(package="tflatent")
class LSTMBaseline(SequenceModel):
    """The T-conditioned LSTM language model with tied embeddings.

    Args:
      vocab_size: V, token ids (text) or 88 (music).
      max_time: max_T of the position features (the longest T the model accepts).
      length_log_prob: log p(T), a callable or a table for T = 0..max_time (``SequenceModel``).
      music: whether x is a sequence of 88-dim frames (independent Bernoullis).
      embedding_size: E (500 in the paper); also the width of W.
      hidden_size: H (500).
      num_layers: stacked LSTM layers (config ``model.lstm_layers``, 2; the reference's ``--p_rnn_layers``).
      dropout: on the embeddings, between the LSTM layers and on the LSTM outputs (0.1 in the README).
      tie_weights: whether the output matrix is the embedding (else an own Linear(E → V), U(±0.07)).
      position_encoding, position_encoding_size: see ``PositionFeatures``.
      lstm_init: "pytorch" or "keras" (``tflatent.layers.lstm``).
      lstm_impl: "auto", "cudnn" or "loop" (``tflatent.layers.lstm``): training and the likelihood; the
        generation steps the same variables.
    """

    def __init__(self, vocab_size, max_time, length_log_prob, music=False, embedding_size=500,
                 hidden_size=500, num_layers=2, dropout=0.1, tie_weights=True, position_encoding="onehot",
                 position_encoding_size=64, lstm_init="pytorch", lstm_impl="auto", **kwargs):
        super().__init__(vocab_size, music, max_time, length_log_prob, **kwargs)
        self.embedding_size = int(embedding_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout_rate = float(dropout)
        self.tie_weights = bool(tie_weights)
        self.lstm_init = lstm_init
        self.lstm_impl = lstm_impl

        self.position = PositionFeatures(max_time, kind=position_encoding, size=position_encoding_size)
        self.embedding = SequenceEmbedding(vocab_size, embedding_size, music=music, dropout=dropout,
                                           embeddings_initializer="glorot_uniform")
        self.rnn = LSTMStack(hidden_size, num_layers, dropout_between_layers=dropout, init=lstm_init,
                             impl=lstm_impl, name="lstm")
        self.output_dropout = keras.layers.Dropout(dropout)
        self.projection = keras.layers.Dense(
            embedding_size, kernel_initializer=uniform(),
            name="projection")
        if not self.tie_weights:
            self.output_layer = keras.layers.Dense(
                vocab_size, kernel_initializer=uniform(),
                name="output")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")

    @classmethod
    def from_config_fields(cls, config, bundle):
        """The baseline a ``tflatent.config.Config`` asks for on a data bundle, built."""
        m = config.model
        model = cls(bundle.vocab_size, bundle.max_time, bundle.length_prior.log_prob, music=bundle.is_music,
                    embedding_size=m.embedding_size, hidden_size=m.hidden_size, num_layers=m.lstm_layers,
                    dropout=m.dropout, tie_weights=m.tie_weights, position_encoding=m.position_encoding,
                    position_encoding_size=m.position_encoding_size, lstm_init=m.lstm_init,
                    lstm_impl=m.lstm_impl)
        model.build()
        return model

    @property
    def metrics(self):
        return [self.loss_tracker, self.nll_tracker]

    def build(self, input_shape=None):
        self.embedding.build()
        self.rnn.build((None, None, self.embedding_size), (None, None, self.position.feature_size))
        self.projection.build((None, self.hidden_size))
        if self.tie_weights:
            self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="output_bias")
        else:
            self.output_layer.build((None, self.embedding_size))
        self.built = True

    def _logits(self, h):
        """(W h + b) Eᵀ + c: [..., H] → [..., V]."""
        h = self.projection(h)
        if self.tie_weights:
            return self.embedding.reverse(h) + self.output_bias
        return self.output_layer(h)

    def call(self, inputs, training=False):
        """(x, lengths) → logits [B, T, V] of p(x_t | x_<t, T)."""
        x, lengths = inputs
        num_steps = tf.shape(x)[1]
        states = self.rnn(self.embedding(x, training=training), mask=tf.sequence_mask(lengths, num_steps),
                          context=self.position.compact(lengths, num_steps, shift=1), training=training)
        outputs = tf.concat([tf.zeros_like(states[:, :1]), states[:, :-1]], axis=1)  # o_t = s_{t−1}
        logits = self._logits(self.output_dropout(outputs, training=training))
        return tf.cast(logits, self.dtype_policy.variable_dtype)  # float32 under mixed precision

    # ------------------------------------------------------------------ likelihood
    def sequence_log_prob(self, x, lengths, training=False):
        """log p(x | T) = Σ_{t<T} log p(x_t | x_<t, T) per sequence: [B]."""
        log_p = emission_distribution(self((x, lengths), training=training), self.music).log_prob(x)
        return tf.reduce_sum(log_p * tf.sequence_mask(lengths, tf.shape(log_p)[1], dtype=log_p.dtype), axis=1)

    def log_likelihood(self, x, lengths, *, num_samples=None, chunk=None, seed=None):
        """The exact log p(x, T) = log p(x | T) + log p(T) per sequence: [B].

        No sampling, so ``chunk`` and ``seed`` do not apply; ``num_samples`` is refused, since asking for
        an importance-sampled estimate of this model is a mistake the caller should hear about.
        """
        if num_samples is not None:
            raise ValueError(f"LSTMBaseline.log_likelihood is exact: num_samples={num_samples} applies "
                             "only to a model with a latent (check model.has_latent)")
        return self.sequence_log_prob(x, lengths) + self.length_log_prob(lengths)

    # ------------------------------------------------------------------ training
    def _objective(self, x, lengths, training):
        """Per sequence: −log p(x, T) [B] and its normaliser T + 1 [B]."""
        nll = -(self.sequence_log_prob(x, lengths, training=training) + self.length_log_prob(lengths))
        return nll, tf.cast(lengths, nll.dtype) + 1.0

    def update_metrics(self, nll, tokens):
        self.loss_tracker.update_state(nll / tokens)
        self.nll_tracker.update_state(nll / tokens, sample_weight=tokens)
        return {m.name: m.result() for m in self.metrics}

    def training_loss(self, x, lengths):
        nll, tokens = self._objective(x, lengths, training=True)
        return nll / tokens, (nll, tokens)

    def evaluation_terms(self, x, lengths):
        return self._objective(x, lengths, training=False)

    # ------------------------------------------------------------------ sampling
    def generate(self, lengths=None, num_samples=None, temperature=1.0, seed=None):
        """Ancestral sampling: x_t ~ p(x_t | x_<t, T) with logits / temperature → (x, lengths).

        Args:
          lengths: [N] lengths, or None to draw ``num_samples`` of them from p(T).
          temperature: divides the logits.
          seed: None, an int or a stateless [2] seed (``tflatent.seeds``).

        Returns:
          x [N, T_max] int32 (text) or [N, T_max, V] float32 (music), zero at padding; lengths [N].
        """
        seed = stateless_seed(seed)
        if lengths is None:
            length_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            lengths = sample_lengths(self.length_log_prob_table, num_samples, length_seed)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        return self.generate_for_lengths(lengths, tf.constant(temperature, tf.float32), seed, compiled=True), lengths

    def generate_for_lengths(self, lengths, temperature=1.0, seed=None, compiled=False):
        """``generate`` for given lengths [N] as graph code, returning x only.

        T_max = max(lengths) stays a tensor, so one trace (e.g. a SavedModel signature) serves every T.
        ``compiled``: run the loop under XLA, as ``generate`` does (compiled once per input shape when the
        graph runs), so the draw is ``generate``'s for the same seed. Otherwise the graph has no XLA part
        (as a server without XLA needs), and since XLA's stateless random streams differ from
        TensorFlow's kernels, the draw has ``generate``'s distribution but not its values.
        """
        num_steps = tf.reduce_max(lengths)
        if not compiled:
            return self._sample(lengths, num_steps, temperature, stateless_seed(seed))
        # XLA needs T static: it reads it from the shape of a [T] tensor, fixed per compilation.
        sample = self._function(("sample",), lambda: tf.function(
            lambda lengths, steps, temperature, seed: self._sample(lengths, tf.shape(steps)[0], temperature, seed),
            jit_compile=True))
        return sample(lengths, tf.zeros(tf.reshape(num_steps, [1])), temperature, stateless_seed(seed))

    def _sample(self, lengths, num_steps, temperature, seed):
        batch = tf.shape(lengths)[0]
        # The position's share of the first layer's gates for every step at once, and the weights read
        # once: a step then multiplies only the embedding, not [embedding, pos] (E + 2·max_T wide).
        position = self.position.compact(lengths, num_steps=num_steps, shift=1)
        context_gates = tf.transpose(self.rnn.project_context(position), [1, 0, 2])  # [T, N, 4H]
        weights = self.rnn.step_weights(self.position.feature_size)
        step_seeds = tf.random.experimental.stateless_split(seed, num_steps)  # [T, 2]

        def body(t, output, states, samples):
            logits = self._logits(output) / temperature
            x_t = emission_distribution(logits, self.music).sample(seed=step_seeds[t])
            output, states = self.rnn.step(self.embedding(x_t), states, context_gates=context_gates[t],
                                           weights=weights)
            return t + 1, output, states, samples.write(t, x_t)

        dtype = tf.float32 if self.music else tf.int32
        _, _, _, samples = tf.while_loop(
            lambda t, *_: t < num_steps, body,
            (tf.constant(0), tf.zeros([batch, self.hidden_size]), self.rnn.zero_state(batch),
             tf.TensorArray(dtype, size=num_steps)),
            maximum_iterations=num_steps)
        x = samples.stack()  # [T, N] or [T, N, V]
        x = tf.transpose(x, [1, 0, 2] if self.music else [1, 0])
        mask = tf.sequence_mask(lengths, num_steps, dtype=dtype)
        return x * (mask[..., None] if self.music else mask)

    def get_config(self):
        return {**super().get_config(),
                "embedding_size": self.embedding_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "dropout": self.dropout_rate, "tie_weights": self.tie_weights,
                "position_encoding": self.position.kind, "position_encoding_size": self.position.size,
                "lstm_init": self.lstm_init, "lstm_impl": self.lstm_impl}
