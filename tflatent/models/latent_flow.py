"""LatentFlowModel: the latent normalizing-flow model of discrete sequences.

Paper §5, reference docs/reference.md §2–5. The generative model is

    T ~ p(T),   z_1..z_T ~ p(z | T) (a flow prior, ``TimeFlowPrior``),   x_t ~ p(x_t | z) independently,

trained by amortised variational inference with q(z | x) = Π_t N(z_t; μ_t(x), σ_t²(x)). Per sequence b
the objective (docs/reference.md §4.2) is

    L_b = [ (1/S) Σ_s Σ_{t<T_b} ( −log p(x_t | z^s) + β (log q(z_t^s | x) − log p(z_t^s | z_<t^s, T_b)) )
            − log p(T_b) ] / (T_b + 1)

averaged over the batch, with S = ``elbo_samples`` samples z^s ~ q and β the KL weight (annealed by a
callback through ``model.kl_weight``). The KL term is a Monte-Carlo estimate per step, since the prior is a
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
import tensorflow as tf

from tflatent.data.length_prior import sample_lengths
from tflatent.layers.embedding import SequenceEmbedding
from tflatent.layers.position import PositionFeatures
from tflatent.layers.sequence_network import bidirectional_network
from tflatent.models import likelihood
from tflatent.models.base import SequenceModel
from tflatent.models.emission import EmissionNetwork
from tflatent.models.inference import InferenceNetwork
from tflatent.priors.time_flow import TimeFlowPrior
from tflatent.seeds import replica_step_seed, sequence_seeds, stateless_seed


@keras.saving.register_keras_serializable(package="tflatent")
class LatentFlowModel(SequenceModel):
    """q(z|x), the flow prior p(z|T), p(x|z) and p(T), trained by a custom ``train_step``.

    Args:
      vocab_size: V, the number of token ids (text) or 88 (music).
      music: whether x is a sequence of 88-dim binary frames (independent Bernoullis) or token ids.
      max_time: the size of the position features' range (the longest T the model accepts).
      length_log_prob: log p(T), a callable or a table for T = 0..max_time (``SequenceModel``).
      elbo_samples: S, the number of z samples per sequence in the training objective.
      The remaining arguments are the fields of ``tflatent.config.ModelConfig`` the flow model uses.
    """

    has_latent = True

    def __init__(self, vocab_size, music, max_time, length_log_prob, elbo_samples=1, embedding_size=500,
                 z_size=50, hidden_size=500, q_rnn_layers=2, gen_rnn_layers=2, time_flow="af",
                 hidden_flow="af", transform="nlsq", prior_rnn_units=500, prior_rnn_layers=2,
                 hidden_flow_layers=5, hidden_flow_hidden_layers=2, hidden_flow_units=100, dropout=0.2,
                 dropout_locations=("prior_rnn",), tie_weights=True, position_encoding="onehot",
                 position_encoding_size=64, lstm_init="pytorch", lstm_impl="auto", seed=0,
                 inference_network="lstm", emission_network="lstm", prior_network="lstm", attention_units=256,
                 attention_layers=2, attention_heads=4, attention_feed_forward_units=1024, **kwargs):
        super().__init__(vocab_size, music, max_time, length_log_prob, **kwargs)
        self.seed = int(seed)
        self.elbo_samples = elbo_samples
        self.z_size = z_size
        locations = set(dropout_locations)
        rate = lambda where: dropout if where in locations else 0.0  # noqa: E731
        self._config = dict(
            elbo_samples=elbo_samples,
            embedding_size=embedding_size, z_size=z_size, hidden_size=hidden_size,
            q_rnn_layers=q_rnn_layers, gen_rnn_layers=gen_rnn_layers, time_flow=time_flow,
            hidden_flow=hidden_flow, transform=transform, prior_rnn_units=prior_rnn_units,
            prior_rnn_layers=prior_rnn_layers, hidden_flow_layers=hidden_flow_layers,
            hidden_flow_hidden_layers=hidden_flow_hidden_layers, hidden_flow_units=hidden_flow_units,
            dropout=dropout, dropout_locations=list(dropout_locations), tie_weights=tie_weights,
            position_encoding=position_encoding, position_encoding_size=position_encoding_size,
            lstm_init=lstm_init, lstm_impl=lstm_impl, seed=self.seed, inference_network=inference_network,
            emission_network=emission_network, prior_network=prior_network, attention_units=attention_units,
            attention_layers=attention_layers, attention_heads=attention_heads,
            attention_feed_forward_units=attention_feed_forward_units)
        self.beta = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="kl_weight")

        self.position = PositionFeatures(max_time, kind=position_encoding, size=position_encoding_size)
        self.embedding = SequenceEmbedding(vocab_size, embedding_size, music=music, dropout=rate("embedding"))
        network = functools.partial(  # q(z|x)'s and p(x|z)'s: BiLSTM or self-attention
            bidirectional_network, hidden_size=hidden_size, lstm_init=lstm_init, lstm_impl=lstm_impl,
            attention_units=attention_units, attention_layers=attention_layers, attention_heads=attention_heads,
            attention_feed_forward_units=attention_feed_forward_units)
        self.inference_net = InferenceNetwork(
            z_size, network(inference_network, num_layers=q_rnn_layers, dropout=rate("rnn_x")),
            embedding=self.embedding, position=self.position, dropout=rate("rnn_x"), name="inference")
        self.prior = TimeFlowPrior(
            z_size, self.position, time_flow=time_flow, hidden_flow=hidden_flow, transform=transform,
            rnn_units=prior_rnn_units, rnn_layers=prior_rnn_layers, hidden_flow_layers=hidden_flow_layers,
            hidden_flow_hidden_layers=hidden_flow_hidden_layers, hidden_flow_units=hidden_flow_units,
            dropout=rate("prior_rnn"), hidden_flow_dropout=rate("prior_ff"), lstm_init=lstm_init,
            lstm_impl=lstm_impl, network=prior_network, attention_units=attention_units,
            attention_layers=attention_layers, attention_heads=attention_heads,
            attention_feed_forward_units=attention_feed_forward_units, name="prior")
        self.emission = EmissionNetwork(
            vocab_size, z_size, network(emission_network, num_layers=gen_rnn_layers, dropout=rate("rnn_outp")),
            music=music, position=self.position, embedding=self.embedding if tie_weights else None,
            hidden_size=hidden_size, dropout=rate("rnn_outp"), output_dropout=rate("outp_ff"), name="emission")

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @classmethod
    def from_config_fields(cls, config, bundle):
        """The flow model of ``config.model`` (and ``train.elbo_samples``) on ``bundle``, built."""
        m = config.model
        skip = ("type", "lstm_layers")
        model = cls(bundle.vocab_size, bundle.is_music, bundle.max_time, bundle.length_prior.log_prob,
                    elbo_samples=config.train.elbo_samples, seed=config.train.seed,
                    **{k: v for k, v in vars(m).items() if k not in skip})
        model.build()
        return model

    @property
    def kl_weight(self):
        """β, the KL term's weight in the training objective (annealed by ``KLAnnealing``)."""
        return self.beta

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

    def encode(self, x, lengths):
        """q(z | x): (μ, log σ²) [B, T, Z] each, at inference (no dropout)."""
        return self.inference_net(x, lengths)

    def elbo_terms(self, x, lengths):
        """``sequence_terms`` with the training objective's ``elbo_samples`` samples: (recon, kl) [B] each.

        Each sequence draws from its own seed (``sequence_seeds`` of the model's seed), so the terms of
        a sequence do not depend on its batch or replica."""
        seed = sequence_seeds(tf.random.experimental.stateless_fold_in(stateless_seed(self.seed), -1), x, lengths)
        return self.sequence_terms(x, lengths, self.elbo_samples, seed=seed)

    def objective(self, x, lengths, training=False, seed=None):
        """The reference's per-sequence objective and its parts, divided by T_b + 1: (loss, recon, kl) [B]."""
        recon, kl = self.sequence_terms(x, lengths, self.elbo_samples, training=training, seed=seed)
        denominator = tf.cast(lengths, recon.dtype) + 1.0
        loss = recon + self.beta * kl - self.length_log_prob(lengths)
        return loss / denominator, recon / denominator, kl / denominator

    def log_weights(self, x, lengths, num_samples, seed=None):
        """Importance weights log p(x|z) + log p(z|T) − log q(z|x), summed over steps: [K, B]."""
        recon, kl = self.step_terms(x, lengths, num_samples, seed=seed)
        return -tf.reduce_sum(recon + kl, axis=-1)

    # ------------------------------------------------------------------ Keras training
    def update_metrics(self, loss, recon, kl):
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def training_loss(self, x, lengths):
        """The objective of one training step with its replica's noise: (loss [B], (loss, recon, kl))."""
        terms = self.objective(x, lengths, training=True,
                               seed=replica_step_seed(self.seed, self.optimizer.iterations))
        return terms[0], terms

    def evaluation_terms(self, x, lengths):
        return self.objective(x, lengths, seed=sequence_seeds(self.seed, x, lengths))

    def call(self, inputs, training=False):
        """The per-sequence objective for (x, lengths): [B]."""
        x, lengths = inputs
        return self.objective(x, lengths, training=training)[0]

    # ------------------------------------------------------------------ evaluation and generation
    def log_likelihood(self, x, lengths, *, num_samples=None, chunk=None, seed=None):
        """Importance-sampled log p̂(x | T) + log p(T) per sequence [B] (docs/reference.md §5.1).

        ``num_samples`` K is required; ``chunk`` samples are drawn at a time (None: all K). ``seed``:
        None (the model's seed), an int or a stateless [2] seed (``tflatent.seeds``); chunk i draws each
        sequence's samples from ``sequence_seeds`` of the seed folded with i, so a given seed, K and
        chunk size give the same estimate for a sequence in any batch, on any replica.
        """
        if num_samples is None:
            raise ValueError("LatentFlowModel.log_likelihood needs num_samples, the importance samples K "
                             "(config: train.nll_samples)")
        base_seed = stateless_seed(self.seed if seed is None else seed)
        chunk_index = itertools.count()
        log_px = likelihood.importance_sampled_log_likelihood(
            lambda k: self.log_weights(x, lengths, k, seed=sequence_seeds(
                tf.random.experimental.stateless_fold_in(base_seed, next(chunk_index)), x, lengths)),
            num_samples, chunk or num_samples)
        return log_px + self.length_log_prob(lengths)

    def generate(self, lengths=None, num_samples=None, temperature=1.0, seed=None, sample_x=False):
        """Samples sequences from the model, compiled (one trace per T_max).

        The prior's sampling from its base noise is compiled with XLA, which turns its sequential
        loops (over t, and for an AF hidden flow over the dims) into fused code without per-op
        dispatch (the cost that dominates at small batches: AF/AF at T = 256 takes about a second
        instead of tens); so are the emission's LSTM loops. The noise itself is drawn outside XLA
        (whose random numbers differ), so ``generate_for_lengths`` starts from the same ε, with or
        without XLA; its z agree with these to float rounding.

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
            lengths = sample_lengths(self.length_log_prob_table, num_samples, length_seed)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        generate = self._function(("generate",), lambda: tf.function(functools.partial(self._generate, compiled=True)))
        x = generate(lengths, int(tf.reduce_max(lengths)), tf.constant(temperature, tf.float32),
                     noise_seed, emission_seed, bool(sample_x))
        return x, lengths

    def generate_for_lengths(self, lengths, temperature=1.0, seed=None, sample_x=False, compiled=False):
        """``generate`` for given lengths [N] as graph code, returning x only.

        T_max = max(lengths) stays a tensor, so one trace (e.g. a SavedModel signature) serves every T;
        the draw equals ``generate(lengths, temperature=temperature, seed=seed)``'s for the same seed.
        ``compiled``: run the prior's sampling and the emission's loops under XLA, as ``generate`` does
        (XLA then compiles once per input shape when the graph runs); otherwise the graph has no XLA
        part, which a server without XLA needs (TF Serving unless ``--xla_cpu_compilation_enabled``).
        """
        _, noise_seed, emission_seed = _generation_seeds(seed)
        return self._generate(lengths, tf.reduce_max(lengths), temperature, noise_seed, emission_seed, sample_x,
                              compiled)

    def _generate(self, lengths, num_steps, temperature, noise_seed, emission_seed, sample_x, compiled):
        eps = self.prior.noise(lengths, seed=noise_seed, num_steps=num_steps) * temperature
        sample_from_noise = self.prior.sample_from_noise
        if compiled:
            sample_from_noise = self._function(("sample_from_noise",),
                                               lambda: tf.function(sample_from_noise, jit_compile=True))
        z, _ = sample_from_noise(eps, lengths)
        return self.emission.decode(z, lengths, sample=sample_x, seed=emission_seed, compiled=compiled)

    def get_config(self):
        return {**super().get_config(), **self._config}


def _generation_seeds(seed):
    """The stateless seeds of the lengths, the prior's noise and the emission: one ``seed`` → three [2] seeds."""
    return tf.unstack(tf.random.experimental.stateless_split(stateless_seed(seed), 3))
