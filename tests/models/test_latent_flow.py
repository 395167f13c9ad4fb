"""LatentFlowModel: gradients, padding invariance, ELBO ≤ IS estimate, training on real chorales, sizes."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from graph_helpers import loops, traced_op_types

from tflatent import config as config_lib
from tflatent.layers.lstm import LSTMStack, keras_rnn
from tflatent.models.latent_flow import LatentFlowModel
from tflatent.models.registry import build_model

PRIORS = {"af_af": ("af", "af"), "af_scf": ("af", "scf"), "iaf_scf": ("iaf", "scf")}
TINY = dict(embedding_size=16, z_size=4, hidden_size=12, prior_rnn_units=12, hidden_flow_layers=2,
            hidden_flow_units=8, position_encoding="sinusoidal", position_encoding_size=8)
ATTENTION = dict(attention_units=8, attention_layers=1, attention_heads=2, attention_feed_forward_units=16)


def tiny_model(bundle, prior="af_af", seed=0, elbo_samples=2, **overrides):
    keras.utils.set_random_seed(seed)
    time_flow, hidden_flow = PRIORS[prior]
    model = LatentFlowModel(bundle.vocab_size, bundle.is_music, bundle.max_time,
                            bundle.length_prior.log_prob,
                            elbo_samples=elbo_samples, time_flow=time_flow, hidden_flow=hidden_flow,
                            **{**TINY, **overrides})
    model.build()
    return model


def first_batch(bundle, split="train", batch_size=4, limit_steps=None):
    x, lengths = next(iter(bundle.batches(split, training=False, batch_size=batch_size)))
    if limit_steps:
        lengths = tf.minimum(lengths, limit_steps)
        x = x[:, :limit_steps]
    return x, lengths


@pytest.mark.parametrize("prior,prior_network", [(prior, "lstm") for prior in sorted(PRIORS)]
                         + [("af_af", "transformer"), ("iaf_scf", "transformer")])
def test_every_weight_gets_a_finite_nonzero_gradient_from_one_step(jsb_bundle, prior, prior_network):
    attention = dict(attention_units=8, attention_heads=2, attention_feed_forward_units=16)
    model = tiny_model(jsb_bundle, prior, dropout_locations=[], prior_network=prior_network, **attention)
    x, lengths = first_batch(jsb_bundle, limit_steps=12)
    model.beta.assign(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.objective(x, lengths, training=True)[0])
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(model.trainable_variables) > 20
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None, var.path
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)), var.path
        assert np.abs(grad).max() > 0, var.path


@pytest.mark.parametrize("prior,networks", [(prior, "lstm") for prior in sorted(PRIORS)] + [("iaf_scf", "transformer")])
def test_padding_with_extra_steps_changes_no_loss_or_metric(ptb_bundle, prior, networks):
    model = tiny_model(ptb_bundle, prior, inference_network=networks, emission_network=networks, **ATTENTION)
    x, lengths = first_batch(ptb_bundle, split="valid", batch_size=3)
    padded = tf.pad(x, [[0, 0], [0, 5]], constant_values=7)  # garbage past every end
    mu, logvar = model.inference_net(x, lengths)
    mu_p, logvar_p = model.inference_net(padded, lengths)
    np.testing.assert_allclose(mu_p[:, :x.shape[1]], mu, atol=1e-5)
    z = mu + tf.exp(0.5 * logvar) * tf.random.normal([2, *mu.shape], seed=1)
    z_p = tf.concat([z, 3.0 * tf.ones([2, 3, 5, z.shape[-1]])], axis=2)
    terms = model.step_terms_at(x, lengths, z, model.inference_net.log_prob(z, mu, logvar))
    terms_p = model.step_terms_at(padded, lengths, z_p, model.inference_net.log_prob(z_p, mu_p, logvar_p))
    for a, b in zip(terms, terms_p):
        np.testing.assert_allclose(b[..., :x.shape[1]], a, rtol=1e-5, atol=1e-4)
        assert np.all(b.numpy()[..., x.shape[1]:] == 0)


@pytest.mark.parametrize("prior,network", [("af_af", "lstm"), ("iaf_scf", "lstm"), ("iaf_scf", "transformer")])
def test_training_compiled_with_xla_runs_on_batches_of_any_length(jsb_bundle, prior, network):
    """``train.jit_compile``: fit traces the step once for the data set's element spec (time axis
    unknown) and XLA compiles that trace per batch shape. The IAF density's step loop failed to compile
    there: inside the loop, the gradients of a ``broadcast_to`` (the SCF conditioner) and of Keras's
    ``tensordot`` (dense layers on [N, 1, d] in the attention step) read shapes computed in the forward
    pass back from the loop's accumulators, which XLA refuses."""
    model = tiny_model(jsb_bundle, prior, prior_network=network, inference_network=network, emission_network=network,
                       **ATTENTION)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    batches = [first_batch(jsb_bundle, limit_steps=steps) for steps in (6, 9)]
    spec = (tf.TensorSpec([None, None, 88], tf.float32), tf.TensorSpec([None], tf.int32))
    data = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    losses = model.fit(data, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0]


def test_objective_is_the_reference_normalisation(jsb_bundle):
    model = tiny_model(jsb_bundle, elbo_samples=1)
    x, lengths = first_batch(jsb_bundle, limit_steps=10)
    model.beta.assign(0.25)
    tf.random.set_seed(3)
    loss, recon, kl = model.objective(x, lengths)
    tf.random.set_seed(3)
    recon_t, kl_t = model.step_terms(x, lengths, 1)
    expected = (tf.reduce_sum(recon_t[0] + 0.25 * kl_t[0], axis=-1) - model.length_log_prob(lengths)) / (
        tf.cast(lengths, tf.float32) + 1.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_elbo_is_below_the_importance_sampled_estimate_which_grows_with_k(jsb_bundle):
    model = tiny_model(jsb_bundle, elbo_samples=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = jsb_bundle.batches("train", training=True, batch_size=8, seed=0).take(30)
    model.fit(data, epochs=1, verbose=0)
    x, lengths = first_batch(jsb_bundle, split="valid", batch_size=8)
    elbo, by_k = [], {1: [], 4: [], 32: []}
    for seed in range(4):
        tf.random.set_seed(seed)
        recon, kl = model.sequence_terms(x, lengths, 64)
        elbo.append(-(recon + kl))
        for k in by_k:
            by_k[k].append(model.log_likelihood(x, lengths, num_samples=k, chunk=8) - model.length_log_prob(lengths))
    elbo = np.mean(elbo, axis=0)
    means = {k: np.mean(v, axis=0) for k, v in by_k.items()}
    assert np.all(elbo <= means[32] + 1e-3)
    assert np.mean(means[1]) < np.mean(means[4]) < np.mean(means[32])


def test_loss_goes_down_on_32_real_jsb_chorales(data_dir, tfds_dir):
    """A small AF/AF (hidden 32, z 8), β = 1 throughout, Adam 3e-3 over the first 32 training chorales
    (bucketed batches of 8): the training loss (the negative ELBO with −log p(T), per Σ(T + 1)) falls
    from 59.7 nats per frame in the first epoch (88 fair coins: 61) to 10.6 after 240 steps (~30 s)."""
    from tflatent.config import DataConfig
    from tflatent.data import load_dataset
    bundle = load_dataset(DataConfig(dataset="jsb_chorales", data_dir=str(data_dir), tfds_dir=str(tfds_dir),
                                     length_prior_smoothing=1.0, train_limit=32), seed=0)
    model = tiny_model(bundle, elbo_samples=1, embedding_size=32, hidden_size=32, prior_rnn_units=32, z_size=8,
                       hidden_flow_units=16, dropout_locations=[])
    model.beta.assign(1.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    data = bundle.batches("train", training=True, batch_size=8, seed=0, repeat=True)
    history = model.fit(data, epochs=60, steps_per_epoch=4, verbose=0).history["loss"]
    print(f"first epoch {history[0]:.2f}, last {history[-1]:.2f}")
    assert history[0] > 40.0 and history[-1] < 15.0


def test_evaluate_nll_reports_every_term(jsb_bundle):
    model = tiny_model(jsb_bundle)
    data = jsb_bundle.batches("valid", training=False, batch_size=32).take(2)
    result = model.evaluate_nll(data, num_samples=3, chunk=2)
    assert set(result) >= {"nll", "nats_per_frame", "elbo", "recon", "kl", "tokens"}
    assert result["nll"] <= result["elbo"] + 0.5  # IS estimate is (nearly) below the bound
    assert np.isfinite(result["nll"])


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_generate_gives_sequences_of_the_requested_lengths(ptb_bundle, prior):
    model = tiny_model(ptb_bundle, prior)
    x, lengths = model.generate(lengths=[5, 9], seed=4)
    assert x.shape == (2, 9) and x.dtype == tf.int32
    assert np.all(x.numpy()[0, 5:] == 0) and np.all(x.numpy()[:, :5] > 0)
    again, _ = model.generate(lengths=[5, 9], seed=4)
    np.testing.assert_array_equal(x, again)
    x, lengths = model.generate(num_samples=3, seed=5, sample_x=True)
    assert x.shape[0] == 3 and np.all(lengths.numpy() >= 1)


def test_build_model_reads_the_config(jsb_bundle):
    config = config_lib.load("configs/jsb_chorales_iaf_scf_small.yaml")
    model = build_model(config, jsb_bundle)
    assert model.prior.time_flow == "iaf" and model.prior.flow.kind == "scf"
    assert model.elbo_samples == config.train.elbo_samples


class _Sizes:
    """A stand-in data bundle with the paper's sizes (no data needed to count parameters)."""

    def __init__(self, vocab_size, music, max_time):
        self.vocab_size, self.is_music, self.max_time = vocab_size, music, max_time
        self.length_prior = lambda: None
        self.length_prior.log_prob = lambda t: np.zeros(np.shape(t), np.float32)


# The reference's own counts (docs/reference.md §7.3). Keras LSTMs have one bias vector where
# PyTorch has two: 4H fewer parameters per LSTM layer and direction.
REFERENCE_COUNTS = [
    ("ptb_af_af.yaml", 51, False, 288, 29_493_901, 2 * 2 + 2 * 2 + 2),
    ("ptb_af_scf.yaml", 51, False, 288, 29_418_276, 2 * 2 + 2 * 2 + 2),
    ("ptb_iaf_scf.yaml", 51, False, 288, 29_267_626, 2 * 2 + 2 * 2 + 2),
    ("ptb_lstm.yaml", 51, False, 288, 5_436_051, 2),
    ("jsb_chorales_af_af.yaml", 88, True, 180, 27_244_939, 2 * 2 + 2 * 2 + 2),
]


@pytest.mark.parametrize("name,vocab,music,max_time,reference,lstm_layer_directions", REFERENCE_COUNTS)
def test_paper_size_parameter_counts_match_the_reference(name, vocab, music, max_time, reference,
                                                         lstm_layer_directions):
    config = config_lib.load(f"configs/{name}")
    model = build_model(config, _Sizes(vocab, music, max_time))
    count = model.count_params()
    bias_difference = 4 * config.model.hidden_size * lstm_layer_directions
    expected = reference - bias_difference
    if music:  # the reference's dummy 89th input/output column: one embedding row and one output bias
        expected -= config.model.embedding_size + 1
    assert abs(count - reference) / reference < 0.005
    assert count == expected, (count, expected, reference)


# ---------------------------------------------------------------- model.lstm_impl: loop vs cudnn
def bucketed_batch(bundle, batch_size=4, max_steps=40):
    """The first seed-0 training batch (bucketed by length) with unequal lengths of at most max_steps."""
    for x, lengths in bundle.batches("train", training=True, batch_size=batch_size, seed=0):
        if len(set(lengths.numpy())) > 1 and max(lengths.numpy()) <= max_steps:
            return x, lengths
    raise AssertionError("no bucketed batch with unequal lengths")


def lstm_stacks(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, LSTMStack)]


def impl_figures(model, x, lengths):
    """Per-step terms, per-sequence ELBO and IS NLL at fixed seeds, and the ELBO's gradients (eagerly:
    cheaper than tracing for one call)."""
    with tf.GradientTape() as tape:
        recon, kl = model.step_terms(x, lengths, 2, training=True, seed=7)  # [S, B, T] each
        elbo = tf.reduce_mean(tf.reduce_sum(recon + kl, axis=-1), axis=0) - model.length_log_prob(lengths)
        loss = tf.reduce_mean(elbo / (tf.cast(lengths, tf.float32) + 1.0))
    nll = -model.log_likelihood(x, lengths, num_samples=3, chunk=3, seed=5)
    return recon, kl, elbo, nll, tape.gradient(loss, model.trainable_variables)


def assert_same_figures(ours, theirs):
    *values, grads = ours
    *their_values, their_grads = theirs
    for a, b in zip(values, their_values):  # per-step terms (zero at padding), ELBO, IS NLL
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(b))))
    assert len(grads) == len(their_grads) > 20
    for a, b in zip(grads, their_grads):
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(b))))


@pytest.mark.parametrize("dataset,prior", [("ptb", "af_scf"), ("jsb", "af_af")])
def test_loop_and_cudnn_agree_on_real_batches_and_checkpoints_cross_both_ways(
        dataset, prior, ptb_bundle, jsb_bundle, tmp_path):
    """Same per-step terms, ELBO and IS NLL (1e-5) and ELBO gradients (1e-4) from one checkpoint.

    On this CPU "cudnn" runs Keras's generic masked loop, which computes what cuDNN computes.
    PTB keeps the paper's one-hot position features (the CPU's sparse product in "loop"). A "loop"
    checkpoint loads into the "cudnn" model, which gives the loop's figures; that model's checkpoint
    loads back into a third (differently initialised) "loop" model and restores every weight exactly,
    so it gives the first model's figures (not recomputed: the eager figures are what this test costs).
    """
    bundle = ptb_bundle if dataset == "ptb" else jsb_bundle
    sizes = dict(dropout_locations=[], elbo_samples=1)
    if dataset == "ptb":
        sizes.update(position_encoding="onehot")
    x, lengths = bucketed_batch(bundle)
    models = [tiny_model(bundle, prior, seed=seed, lstm_impl=impl, **sizes)
              for seed, impl in enumerate(("loop", "cudnn", "loop"))]
    for model, impl in zip(models, ("loop", "cudnn", "loop")):
        assert {stack.implementation for stack in lstm_stacks(model)} == {impl}
    initial = models[2].get_weights()
    for saved, loaded in zip(models[:2], models[1:]):  # loop → cudnn, then cudnn → loop
        path = str(tmp_path / f"{saved.name}.weights.h5")
        saved.save_weights(path)
        loaded.load_weights(path)
    assert_same_figures(impl_figures(models[1], x, lengths), impl_figures(models[0], x, lengths))
    weights = models[0].get_weights()
    assert len(weights) > 20 and not all(np.array_equal(a, b) for a, b in zip(initial, weights))
    for a, b in zip(models[2].get_weights(), weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,vocab,music,max_time", [("ptb_af_scf.yaml", 51, False, 288),
                                                        ("jsb_chorales_af_af.yaml", 88, True, 180)])
def test_paper_size_cudnn_models_are_kerass_cudnn_lstms_and_train_without_loops(name, vocab, music, max_time):
    """Every whole-sequence LSTM passes Keras's cuDNN argument check, and the training step traced for a GPU
    runs each layer-direction as one CudnnRNNV3 op (forward) and one CudnnRNNBackpropV3 (backward) and
    holds no while loop at all: none in q(z|x) (4 layer-directions), p(x|z) (4) or the AF prior's
    density (2). The traced graph is inspected, not run (this machine has no GPU)."""
    config = config_lib.load(f"configs/{name}", ["model.lstm_impl=cudnn"])
    model = build_model(config, _Sizes(vocab, music, max_time))
    stacks = lstm_stacks(model)
    assert {stack.name for stack in stacks} == {"bilstm", "lstm"} and len(stacks) == 3
    cells = [cell for stack in stacks for directions in stack.cells for cell in directions]
    assert len(cells) == 10 and {stack.implementation for stack in stacks} == {"cudnn"}
    for cell in cells:
        assert keras_rnn._do_lstm_arguments_support_cudnn(
            activation=cell.activation, recurrent_activation=cell.recurrent_activation, unroll=cell.unroll,
            use_bias=cell.use_bias)
        assert not cell.recurrent_dropout
    model.compile(optimizer=keras.optimizers.Adam())
    model.optimizer.build(model.trainable_variables)
    x = tf.TensorSpec([None, None, vocab], tf.float32) if music else tf.TensorSpec([None, None], tf.int32)
    lengths = tf.TensorSpec([None], tf.int32)
    ops = traced_op_types(lambda x, lengths: model.train_step((x, lengths)), x, lengths, device="/GPU:0")
    assert ops["CudnnRNNV3"] == ops["CudnnRNNBackpropV3"] == len(cells)
    assert loops(ops) == 0


def test_each_sequences_importance_samples_are_its_own(jsb_bundle):
    """The IS estimate of a sequence does not depend on its batch: what makes N replicas agree with one."""
    model = tiny_model(jsb_bundle, "af_af")
    x, lengths = first_batch(jsb_bundle, split="valid", batch_size=4, limit_steps=10)
    lengths = tf.constant([10, 7, 10, 4])
    whole = model.log_likelihood(x, lengths, num_samples=5, chunk=2, seed=3).numpy()
    parts = [model.log_likelihood(x[i:j, :int(tf.reduce_max(lengths[i:j]))], lengths[i:j], num_samples=5,
                                  chunk=2, seed=3).numpy()
             for i, j in ((0, 1), (1, 3), (3, 4))]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5)
    other = model.log_likelihood(x, lengths, num_samples=5, chunk=2, seed=4).numpy()
    assert not np.allclose(other, whole, rtol=1e-5)


# ---------------------------------------------------------------- model.prior_network: transformer
ATTENTION_PRIOR = dict(prior_network="transformer", attention_units=8, attention_layers=2, attention_heads=2,
                       attention_feed_forward_units=16)


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_an_attention_prior_generates_and_scores_sequences(ptb_bundle, prior):
    model = tiny_model(ptb_bundle, prior, **ATTENTION_PRIOR)
    assert type(model.prior.time_context).__name__ == "AttentionTimeContext"
    x, lengths = model.generate(lengths=[5, 9], seed=4)  # the prior's sampler compiled with XLA
    assert x.shape == (2, 9) and np.all(x.numpy()[0, 5:] == 0) and np.all(x.numpy()[:, :5] > 0)
    graph = tf.function(model.generate_for_lengths)(tf.constant([5, 9]), seed=4)  # T_max a tensor, no XLA
    assert graph.shape == (2, 9) and np.all(graph.numpy()[0, 5:] == 0)
    x, lengths = first_batch(ptb_bundle, split="valid", batch_size=3)
    log_likelihood = model.log_likelihood(x, lengths, num_samples=4, chunk=2, seed=1).numpy()
    assert log_likelihood.shape == (3,) and np.all(np.isfinite(log_likelihood)) and np.all(log_likelihood < 0)


def test_an_attention_prior_model_round_trips_through_a_weights_file(jsb_bundle, tmp_path):
    model = tiny_model(jsb_bundle, "iaf_scf", **ATTENTION_PRIOR)
    x, lengths = first_batch(jsb_bundle, split="valid", batch_size=3, limit_steps=10)
    path = str(tmp_path / "attention.weights.h5")
    model.save_weights(path)
    copy = tiny_model(jsb_bundle, "iaf_scf", seed=1, **ATTENTION_PRIOR)
    assert not np.allclose(copy.log_weights(x, lengths, 2, seed=3), model.log_weights(x, lengths, 2, seed=3))
    copy.load_weights(path)
    np.testing.assert_array_equal(copy.log_weights(x, lengths, 2, seed=3), model.log_weights(x, lengths, 2, seed=3))


def test_build_model_wires_the_prior_network_and_the_attention_sizes(jsb_bundle):
    config = config_lib.load("configs/jsb_chorales_iaf_scf_small.yaml", overrides=[
        "model.prior_network=transformer", "model.attention_units=16", "model.attention_layers=1",
        "model.attention_heads=2", "model.attention_feed_forward_units=24"])
    attention = build_model(config, jsb_bundle).prior.attention
    assert (attention.units, attention.num_layers, attention.num_heads, attention.feed_forward_units) == (16, 1, 2, 24)
    assert attention.dropout_rate == (config.model.dropout if "prior_rnn" in config.model.dropout_locations else 0)


# ---------------------------------------------------------------- self-attention q(z|x) and p(x|z) (issue 16)
PARTS = {"both": ("transformer", "transformer"), "inference": ("transformer", "lstm"),
         "emission": ("lstm", "transformer")}


def attention_model(bundle, parts="both", prior="af_af", seed=0, **overrides):
    inference, emission = PARTS[parts]
    return tiny_model(bundle, prior, seed=seed, inference_network=inference, emission_network=emission,
                      **{**ATTENTION, **overrides})


def checkpoint_layout(model, tmp_path):
    """The variables' paths and the ``.weights.h5`` entries of q(z|x) and p(x|z)."""
    import h5py
    path = str(tmp_path / "layout.weights.h5")
    model.save_weights(path)
    with h5py.File(path) as f:
        entries = []
        f.visititems(lambda name, item: entries.append(name) if isinstance(item, h5py.Dataset) else None)
    parts = ("inference", "emission")
    return ([v.path.split("/", 1)[1] for v in model.weights if v.path.split("/")[1] in parts],  # after the model's name
            [e for e in entries if e.split("/")[0] in ("inference_net", "emission")])


def test_the_default_bilstms_keep_their_variable_paths_and_checkpoint_entries(jsb_bundle, tmp_path):
    """Checkpoints written before the networks became an argument load: the same paths and h5 entries."""
    paths, entries = checkpoint_layout(tiny_model(jsb_bundle), tmp_path)
    cells = [f"layer_{i}_{d}/{v}" for i in range(2) for d in ("forward", "backward")
             for v in ("kernel", "recurrent_kernel", "bias")]
    assert paths == ([f"inference/bilstm/{c}" for c in cells]
                     + ["inference/head/kernel", "inference/head/bias", "emission/output_bias"]
                     + [f"emission/bilstm/{c}" for c in cells]
                     + ["emission/projection/kernel", "emission/projection/bias"])
    h5_cells = [f"rnn/cells/{c}/{d}/vars/{v}" for c in ("container", "container_1") for d in ("lstm", "lstm_1")
                for v in range(3)]
    assert entries == (["emission/projection/vars/0", "emission/projection/vars/1"]
                       + [f"emission/{c}" for c in h5_cells] + ["emission/vars/0",
                                                               "inference_net/head/vars/0", "inference_net/head/vars/1"]
                       + [f"inference_net/{c}" for c in h5_cells])


@pytest.mark.parametrize("parts,prior", [("both", "af_af"), ("inference", "iaf_scf"), ("emission", "af_scf")])
def test_attention_parts_give_every_weight_a_gradient_in_a_training_step(jsb_bundle, parts, prior):
    model = attention_model(jsb_bundle, parts, prior, dropout=0.1, dropout_locations=["rnn_x", "rnn_outp"])
    x, lengths = first_batch(jsb_bundle, limit_steps=12)
    inference, emission = PARTS[parts]
    assert model.inference_net.rnn.name == ("encoder" if inference == "transformer" else "bilstm")
    assert model.emission.rnn.name == ("encoder" if emission == "transformer" else "bilstm")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [v.numpy() for v in model.trainable_variables]
    model.train_step((x, lengths))  # the custom step: its tape, its optimizer update
    for var, old in zip(model.trainable_variables, before):
        assert np.all(np.isfinite(var.numpy())), var.path
        assert np.any(var.numpy() != old), var.path  # Adam moves every weight with a non-zero gradient


def test_an_attention_model_round_trips_through_a_checkpoint_and_estimates_and_generates(jsb_bundle, tmp_path):
    model = attention_model(jsb_bundle, seed=0)
    x, lengths = first_batch(jsb_bundle, split="valid", batch_size=3, limit_steps=10)
    nll = model.log_likelihood(x, lengths, num_samples=4, chunk=2, seed=3).numpy()
    assert nll.shape == (3,) and np.all(np.isfinite(nll))
    path = str(tmp_path / "attention.weights.h5")
    model.save_weights(path)
    other = attention_model(jsb_bundle, seed=1)
    assert not np.allclose(other.log_likelihood(x, lengths, num_samples=4, chunk=2, seed=3), nll)
    other.load_weights(path)
    np.testing.assert_allclose(other.log_likelihood(x, lengths, num_samples=4, chunk=2, seed=3), nll, rtol=1e-5)
    generated, _ = other.generate(lengths=[5, 9], seed=4)
    again, _ = model.generate(lengths=[5, 9], seed=4)
    assert generated.shape == (2, 9, 88)
    np.testing.assert_array_equal(generated, again)
    np.testing.assert_array_equal(generated.numpy()[0, 5:], 0.0)
    np.testing.assert_array_equal(other.generate_for_lengths(tf.constant([5, 9]), seed=4), generated)
