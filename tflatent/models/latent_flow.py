"""LatentFlowModel: the latent normalizing-flow model of discrete sequences, and ``build_model``.

Paper §5, reference docs/reference.md §2–5. The generative model is

    T ~ p(T),   z_1..z_T ~ p(z | T) (a flow prior, ``TimeFlowPrior``),   x_t ~ p(x_t | z) independently,

trained by amortised variational inference with q(z | x) = Π_t N(z_t; μ_t(x), σ_t²(x)). Per sequence b
the objective (docs/reference.md §4.2) is

    L_b = [ (1/S) Σ_s Σ_{t<T_b} ( −log p(x_t | z^s) + β (log q(z_t^s | x) − log p(z_t^s | z_<t^s, T_b)) ) − log p(T_b) ] / (T_b + 1)

averaged over the batch, with S = ``elbo_samples`` samples z^s ~ q and β the KL weight (annealed by a
callback through ``model.beta``). The KL term is a Monte-Carlo estimate per step, since the prior is a
flow. Evaluation uses the importance-sampled likelihood (``tflatent.models.likelihood``).

Shapes: text x [B, T] int32 (pad id 0); music x [B, T, 88] float32; lengths [B] int32; samples z
[S, B, T, Z]. The prior and the emission take the S samples as a leading axis and compute what
depends only on the sequence (position features and their share of the LSTM gates) once per
sequence; per-step terms are reported as [S, B, T].
"""

from __future__ import annotations

import functools
import itertools

import keras
import numpy as np
import tensorflow as tf

from tflatent.models import likelihood
from tflatent.data.length_prior import sample_lengths
from tflatent.models.emission import EmissionNetwork
from tflatent.models.inference import InferenceNetwork
from tflatent.layers.embedding import SequenceEmbedding
from tflatent.layers.position import PositionFeatures
from tflatent.priors.time_flow import TimeFlowPrior
from tflatent.seeds import stateless_seed


def length_log_prob_table(length_prior, max_time):
    """log p(T) for T = 0..max_time as a float32 numpy table (−inf where p(T) = 0)."""
    return np.asarray(length_prior.log_prob(np.arange(max_time + 1, dtype=np.int32)), dtype=np.float32)


class LatentFlowModel(keras.Model):
    """q(z|x), the flow prior p(z|T), p(x|z) and p(T), trained by a custom ``train_step``.

    Args:
      vocab_size: V, the number of token ids (text) or 88 (music).
      music: whether x is a sequence of 88-dim binary frames (independent Bernoullis) or token ids.
      max_time: the size of the position features' range (the longest T the model accepts).
      log_p_T: log p(T) for T = 0..max_time (see ``length_log_prob_table``).
      elbo_samples: S, the number of z samples per sequence in the training objective.
      The remaining arguments are the fields of ``tflatent.config.ModelConfig``.
    """

    def __init__(self, vocab_size, music, max_time, log_p_T, elbo_samples=1, embedding_size=500,
                 z_size=50, hidden_size=500, q_rnn_layers=2, gen_rnn_layers=2, time_flow="af",
                 hidden_flow="af", transform="nlsq", prior_rnn_units=500, prior_rnn_layers=2,
                 hidden_flow_layers=5, hidden_flow_hidden_layers=2, hidden_flow_units=100, dropout=0.2,
                 dropout_locations=("prior_rnn",), tie_weights=True, position_encoding="onehot",
                 position_encoding_size=64, lstm_init="pytorch", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.music = music
        self.max_time = max_time
        self.elbo_samples = elbo_samples
        self.z_size = z_size
        locations = set(dropout_locations)
        rate = lambda where: dropout if where in locations else 0.0  # noqa: E731
        self._config = dict(
            vocab_size=vocab_size, music=music, max_time=max_time, elbo_samples=elbo_samples,
            embedding_size=embedding_size, z_size=z_size, hidden_size=hidden_size,
            q_rnn_layers=q_rnn_layers, gen_rnn_layers=gen_rnn_layers, time_flow=time_flow,
            hidden_flow=hidden_flow, transform=transform, prior_rnn_units=prior_rnn_units,
            prior_rnn_layers=prior_rnn_layers, hidden_flow_layers=hidden_flow_layers,
            hidden_flow_hidden_layers=hidden_flow_hidden_layers, hidden_flow_units=hidden_flow_units,
            dropout=dropout, dropout_locations=list(dropout_locations), tie_weights=tie_weights,
            position_encoding=position_encoding, position_encoding_size=position_encoding_size,
            lstm_init=lstm_init)
        self.log_p_T = tf.constant(log_p_T, dtype=tf.float32)
        self.beta = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="kl_weight")

        self.position = PositionFeatures(max_time, kind=position_encoding, size=position_encoding_size)
        self.embedding = SequenceEmbedding(vocab_size, embedding_size, music=music, dropout=rate("embedding"))
        self.inference_net = InferenceNetwork(
            z_size, hidden_size, q_rnn_layers, embedding=self.embedding, position=self.position,
            dropout=rate("rnn_x"), lstm_init=lstm_init, name="inference")
        self.prior = TimeFlowPrior(
            z_size, self.position, time_flow=time_flow, hidden_flow=hidden_flow, transform=transform,
            rnn_units=prior_rnn_units, rnn_layers=prior_rnn_layers, hidden_flow_layers=hidden_flow_layers,
            hidden_flow_hidden_layers=hidden_flow_hidden_layers, hidden_flow_units=hidden_flow_units,
            dropout=rate("prior_rnn"), hidden_flow_dropout=rate("prior_ff"), lstm_init=lstm_init,
            name="prior")
        self.emission = EmissionNetwork(
            vocab_size, z_size, hidden_size, gen_rnn_layers, music=music, position=self.position,
            embedding=self.embedding if tie_weights else None, dropout=rate("rnn_outp"),
            output_dropout=rate("outp_ff"), lstm_init=lstm_init, name="emission")

        self._generate_fn = None
        self._xla_sample_from_noise = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker]

    def build(self, input_shape=None):
        """Builds every sub-layer eagerly (TFP bijectors must never be the first to call a layer)."""
        self.embedding.build()
        self.inference_net.build()
        self.prior.build()
        self.emission.build()
        self.built = True

    # ------------------------------------------------------------------ the model's terms
    def length_log_prob(self, lengths):
        """log p(T) [B] for lengths [B]."""
        return tf.gather(self.log_p_T, lengths)

    def step_terms(self, x, lengths, num_samples, training=False, seed=None):
        """Per-step −log p(x_t|z) and log q(z_t|x) − log p(z_t|z_<t, T) for S samples z ~ q: [S, B, T] each."""
        mu, logvar = self.inference_net(x, lengths, training=training)  # [B, T, Z] each
        z, log_q = self.inference_net.sample(mu, logvar, num_samples, seed=seed)  # [S, B, T, Z], [S, B, T]
        return self.step_terms_at(x, lengths, z, log_q, training=training)

    def step_terms_at(self, x, lengths, z, log_q, training=False):
        """The per-step terms at given samples z [S, B, T, Z] with log q(z_t|x) [S, B, T]; zero at padding."""
        log_p_z = self.prior.log_prob(z, lengths, training=training)  # [S, B, T]
        log_p_x = self.emission.log_prob(x, z, lengths, training=training)  # [S, B, T]
        mask = tf.sequence_mask(lengths, tf.shape(z)[2], dtype=z.dtype)
        return -log_p_x * mask, (log_q - log_p_z) * mask

    def sequence_terms(self, x, lengths, num_samples, training=False, seed=None):
        """Per-sequence −log p(x|z) and log q(z|x) − log p(z|T), averaged over S samples: [B] each."""
        recon, kl = self.step_terms(x, lengths, num_samples, training=training, seed=seed)
        return (tf.reduce_mean(tf.reduce_sum(recon, axis=-1), axis=0),
                tf.reduce_mean(tf.reduce_sum(kl, axis=-1), axis=0))

    def objective(self, x, lengths, training=False):
        """The reference's per-sequence objective and its parts, divided by T_b + 1: (loss, recon, kl) [B]."""
        recon, kl = self.sequence_terms(x, lengths, self.elbo_samples, training=training)
        denominator = tf.cast(lengths, recon.dtype) + 1.0
        loss = recon + self.beta * kl - self.length_log_prob(lengths)
        return loss / denominator, recon / denominator, kl / denominator

    def log_weights(self, x, lengths, num_samples, seed=None):
        """Importance weights log p(x|z) + log p(z|T) − log q(z|x), summed over steps: [K, B]."""
        recon, kl = self.step_terms(x, lengths, num_samples, seed=seed)
        return -tf.reduce_sum(recon + kl, axis=-1)

    # ------------------------------------------------------------------ Keras training
    def _update_metrics(self, loss, recon, kl):
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, lengths = data
        with tf.GradientTape() as tape:
            loss, recon, kl = self.objective(x, lengths, training=True)
            scaled = tf.nn.compute_average_loss(loss)  # ÷ the global batch under tf.distribute
            scaled = self.optimizer.scale_loss(scaled)  # mixed precision's loss scaling (else identity)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(loss, recon, kl)

    def test_step(self, data):
        x, lengths = data
        return self._update_metrics(*self.objective(x, lengths))

    def call(self, inputs, training=False):
        """The per-sequence objective for (x, lengths): [B]."""
        x, lengths = inputs
        return self.objective(x, lengths, training=training)[0]

    # ------------------------------------------------------------------ evaluation and generation
    def log_likelihood(self, x, lengths, num_samples, chunk, seed=None):
        """Importance-sampled log p̂(x | T) + log p(T) per sequence [B] (docs/reference.md §5.1).

        ``seed``: None, an int or a stateless [2] seed (``tflatent.seeds``); chunk i draws its samples
        with the seed folded with i, so a given seed, K and chunk size give the same estimate.
        """
        base_seed = stateless_seed(seed)
        chunk_index = itertools.count()
        log_px = likelihood.importance_sampled_log_likelihood(
            lambda k: self.log_weights(
                x, lengths, k, seed=tf.random.experimental.stateless_fold_in(base_seed, next(chunk_index))),
            num_samples, chunk)
        return log_px + self.length_log_prob(lengths)

    def evaluate_nll(self, dataset, num_samples, chunk=10):
        """Importance-sampled NLL of (x, lengths) batches, with the ELBO and its terms at β = 1.

        Returns {"nll", "bpc" | "nats_per_frame", "elbo", "recon", "kl", "sequences", "tokens"}, every
        figure per token (frame) with the Σ(T + 1) normaliser (docs/reference.md §5.1). As in the reference, the
        ELBO terms come from a separate pass with ``elbo_samples`` samples.
        """
        specs = self._input_signature()
        log_likelihood = tf.function(lambda x, lengths: self.log_likelihood(x, lengths, num_samples, chunk),
                                     input_signature=specs)
        terms = tf.function(lambda x, lengths: self.sequence_terms(x, lengths, self.elbo_samples),
                            input_signature=specs)
        recon_total = kl_total = log_p_T_total = 0.0
        accumulator = likelihood.LikelihoodAccumulator()
        for x, lengths in dataset:
            accumulator.update(log_likelihood(x, lengths), lengths)
            recon, kl = terms(x, lengths)
            recon_total += float(tf.reduce_sum(recon))
            kl_total += float(tf.reduce_sum(kl))
            log_p_T_total += float(tf.reduce_sum(self.length_log_prob(lengths)))
        result = accumulator.result(music=self.music)
        tokens = result["tokens"]
        result.update(recon=recon_total / tokens, kl=kl_total / tokens,
                      elbo=(recon_total + kl_total - log_p_T_total) / tokens)
        return result

    def _input_signature(self):
        x = (tf.TensorSpec([None, None, self.vocab_size], tf.float32) if self.music
             else tf.TensorSpec([None, None], tf.int32))
        return [x, tf.TensorSpec([None], tf.int32)]

    def generate(self, lengths=None, num_samples=None, temperature=1.0, seed=None, sample_x=False):
        """Samples sequences from the model, compiled (one trace per T_max).

        The prior's sampling from its base noise is compiled with XLA, which turns its sequential
        loops (over t, and for an AF hidden flow over the dims) into fused code without per-op
        dispatch (the cost that dominates at small batches: AF/AF at T = 256 takes about a second
        instead of tens). The noise itself is drawn outside XLA (whose random numbers differ), so
        ``generate_for_lengths``, which runs without XLA, starts from the same ε; its z agree with
        these to float rounding.

        Args:
          lengths: [N] lengths, or None to draw ``num_samples`` of them from p(T).
          temperature: scales the prior's base noise.
          seed: None, an int or a stateless [2] seed (``tflatent.seeds``).
          sample_x: draw x ~ p(x | z) instead of the reference's mode (argmax token, or the notes
            with p > 0.5).

        Returns:
          x [N, T_max] int32 (text) or [N, T_max, V] float32 (music), zero at padding; lengths [N].
        """
        length_seed, noise_seed, emission_seed = _generation_seeds(seed)
        if lengths is None:
            lengths = sample_lengths(self.log_p_T, num_samples, length_seed)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        if self._generate_fn is None:
            self._generate_fn = tf.function(functools.partial(self._generate, xla_prior=True))
        x = self._generate_fn(lengths, int(tf.reduce_max(lengths)), tf.constant(temperature, tf.float32),
                              noise_seed, emission_seed, bool(sample_x))
        return x, lengths

    def generate_for_lengths(self, lengths, temperature=1.0, seed=None, sample_x=False):
        """``generate`` for given lengths [N] as graph code, returning x only.

        T_max = max(lengths) stays a tensor, so one trace (e.g. a SavedModel signature) serves every T;
        the draw equals ``generate(lengths, temperature=temperature, seed=seed)``'s for the same seed.
        """
        _, noise_seed, emission_seed = _generation_seeds(seed)
        return self._generate(lengths, tf.reduce_max(lengths), temperature, noise_seed, emission_seed, sample_x)

    def _generate(self, lengths, num_steps, temperature, noise_seed, emission_seed, sample_x, xla_prior=False):
        eps = self.prior.noise(lengths, seed=noise_seed, num_steps=num_steps) * temperature
        sample_from_noise = self.prior.sample_from_noise
        if xla_prior:
            if self._xla_sample_from_noise is None:
                self._xla_sample_from_noise = tf.function(sample_from_noise, jit_compile=True)
            sample_from_noise = self._xla_sample_from_noise
        z, _ = sample_from_noise(eps, lengths)
        return self.emission.decode(z, lengths, sample=sample_x, seed=emission_seed)

    def get_config(self):
        return {**super().get_config(), **self._config, "log_p_T": self.log_p_T.numpy().tolist()}


def _generation_seeds(seed):
    """The stateless seeds of the lengths, the prior's noise and the emission: one ``seed`` → three [2] seeds."""
    return tf.unstack(tf.random.experimental.stateless_split(stateless_seed(seed), 3))


def build_model(config, bundle):
    """Builds the model a config asks for on a data bundle (``tflatent.data.load_dataset``)."""
    m = config.model
    log_p_T = length_log_prob_table(bundle.length_prior, bundle.max_time)
    if m.type == "lstm":
        from tflatent.models.lstm_baseline import LSTMBaseline
        return LSTMBaseline.from_config_fields(config, bundle, log_p_T)
    model = LatentFlowModel(
        bundle.vocab_size, bundle.is_music, bundle.max_time, log_p_T,
        elbo_samples=config.train.elbo_samples,
        **{k: v for k, v in vars(m).items() if k != "type"})
    model.build()
    return model
