"""TimeFlowPrior: densities against step-by-step brute force, causality by Jacobian, sampling, with either
time context (the paper's LSTM, or causal self-attention: ``model.prior_network``)."""

import io

import h5py
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import randomize_weights
from graph_helpers import loop_accumulators, loops, traced_op_types

from tflatent.layers.position import PositionFeatures
from tflatent.priors import TimeFlowPrior
from tflatent.priors.hidden_flow import standard_normal_log_prob
from tflatent.training import checkpoint_files

Z, MAX_T = 4, 9
VARIANTS = [("af", "af", "nlsq"), ("af", "scf", "nlsq"), ("iaf", "scf", "nlsq"), ("af", "none", "nlsq"),
            ("af", "af", "affine"), ("none", "af", "nlsq")]
LENGTHS = tf.constant([7, 3, 5])
NETWORKS = ("lstm", "transformer")
ATTENTION = dict(attention_units=16, attention_layers=2, attention_heads=2, attention_feed_forward_units=16)


def make_prior(time_flow, hidden_flow, transform, dropout=0.0, seed=0, network="lstm"):
    tf.keras.utils.set_random_seed(seed)
    prior = TimeFlowPrior(Z, PositionFeatures(MAX_T), time_flow=time_flow, hidden_flow=hidden_flow,
                          transform=transform, rnn_units=8, rnn_layers=2, hidden_flow_layers=3,
                          hidden_flow_units=8, dropout=dropout, network=network, **ATTENTION)
    prior.build()
    randomize_weights(prior, scale=0.3, seed=seed)
    return prior


def brute_force_log_prob(prior, z, lengths):
    """log p(z_t | z_<t, T) one step at a time, as the reference's generation loop runs it."""
    if prior.time_flow == "none":
        pos = prior.position(lengths, num_steps=z.shape[1])
        return tf.stack([prior.flow.log_prob(z[:, t], pos[:, t]) for t in range(z.shape[1])], axis=1)
    pos_next = prior.position(lengths, num_steps=z.shape[1], shift=1)
    states = prior.time_context._initial_states(lengths)
    out = []
    for t in range(z.shape[1]):
        context = states[-1][0]
        eps_t, log_det = prior.flow.inverse(z[:, t], context)
        out.append(standard_normal_log_prob(eps_t) + log_det)
        y_t = eps_t if prior.time_flow == "iaf" else z[:, t]
        _, states = prior.rnn.step(y_t, states, context=pos_next[:, t])
    return tf.stack(out, axis=1)


@pytest.mark.parametrize("time_flow,hidden_flow,transform", VARIANTS)
def test_log_prob_matches_step_by_step_brute_force(time_flow, hidden_flow, transform):
    prior = make_prior(time_flow, hidden_flow, transform)
    z = tf.random.normal([3, 7, Z], seed=1)
    mask = tf.sequence_mask(LENGTHS, 7, dtype=tf.float32)
    expected = brute_force_log_prob(prior, z, LENGTHS) * mask
    np.testing.assert_allclose(prior.log_prob(z, LENGTHS), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("time_flow,hidden_flow,transform", VARIANTS)
def test_sampling_then_log_prob_agrees_with_the_sampling_path(time_flow, hidden_flow, transform):
    prior = make_prior(time_flow, hidden_flow, transform)
    z, log_prob = prior.sample(LENGTHS, seed=[3, 4])
    assert z.shape == (3, 7, Z)
    np.testing.assert_allclose(prior.log_prob(z, LENGTHS), log_prob, atol=2e-3, rtol=1e-3)
    assert np.all(np.asarray(z)[1, 3:] == 0)


def noise_of(prior, z, lengths):
    """ε = f⁻¹(z) by the prior's own density direction (AF: one parallel context pass; IAF: the step loop)."""
    z = z[None]
    if prior.time_flow == "iaf":
        return prior._sequential(lambda z_t, context: prior.flow.inverse(z_t, context), z, lengths, False)[0][0]
    return prior.flow.inverse(z, prior._parallel_context(z, lengths, training=False))[0][0]


@pytest.mark.parametrize("time_flow,hidden_flow", [("af", "af"), ("af", "scf"), ("iaf", "scf")])
def test_attention_context_sampling_and_density_paths_agree_and_recover_the_noise(time_flow, hidden_flow):
    """The step-by-step path (AF sampling, IAF density) against the parallel one (AF density, IAF sampling)."""
    prior = make_prior(time_flow, hidden_flow, "nlsq", network="transformer")
    eps = prior.noise(LENGTHS, seed=[3, 4])
    z, log_prob = prior.sample_from_noise(eps, LENGTHS)
    mask = tf.sequence_mask(LENGTHS, 7, dtype=tf.float32)
    np.testing.assert_allclose(prior.log_prob(z, LENGTHS), log_prob, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(noise_of(prior, z, LENGTHS) * mask[..., None], eps * mask[..., None], atol=2e-4)
    assert np.all(np.asarray(z)[1, 3:] == 0) and np.all(np.asarray(log_prob)[1, 3:] == 0)


@pytest.mark.parametrize("time_flow,hidden_flow,network", [("af", "af", "lstm"), ("iaf", "scf", "lstm"),
                                                            ("none", "af", "lstm"), ("af", "af", "transformer"),
                                                            ("iaf", "scf", "transformer")])
def test_samples_on_a_leading_axis_equal_one_call_per_sample(time_flow, hidden_flow, network):
    prior = make_prior(time_flow, hidden_flow, "nlsq", network=network)
    z = tf.random.normal([2, 3, 7, Z], seed=5)  # [S, N, T, Z]: 2 samples of each sequence
    together = prior.log_prob(z, LENGTHS)
    assert together.shape == (2, 3, 7)
    for s in range(2):
        np.testing.assert_allclose(together[s], prior.log_prob(z[s], LENGTHS), atol=1e-5)
    eps = tf.random.normal([2, 3, 7, Z], seed=6)
    z_together, log_prob_together = prior.sample_from_noise(eps, LENGTHS)
    z_alone, log_prob_alone = prior.sample_from_noise(eps[1], LENGTHS)
    np.testing.assert_allclose(z_together[1], z_alone, atol=1e-5)
    np.testing.assert_allclose(log_prob_together[1], log_prob_alone, atol=1e-4)


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("time_flow,hidden_flow,transform", VARIANTS[:3])
def test_padding_with_extra_steps_changes_nothing(time_flow, hidden_flow, transform, network):
    prior = make_prior(time_flow, hidden_flow, transform, network=network)
    z = tf.random.normal([3, 7, Z], seed=2)
    padded = tf.concat([z, 50.0 * tf.ones([3, 2, Z])], axis=1)
    np.testing.assert_allclose(prior.log_prob(padded, LENGTHS)[:, :7], prior.log_prob(z, LENGTHS), atol=1e-5)
    assert np.all(np.asarray(prior.log_prob(padded, LENGTHS))[:, 7:] == 0)


def dependence(outputs_fn, z):
    """|∂ (w · outputs[0, t]) / ∂ z[0, s]| summed over features, for a random w: [T (outputs), T (z)].

    Zero exactly where the Jacobian block ∂outputs_t/∂z_s is zero (almost surely); one gradient per
    output step (``tape.jacobian``'s pfor crashes on the attention's einsums).
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        outputs = outputs_fn(z)[0]  # [T, ·] of the one sequence
        weighted = outputs * tf.random.stateless_normal(outputs.shape, seed=[7, 7])
        per_step = [tf.reduce_sum(weighted[t]) for t in range(outputs.shape[0])]
    return np.stack([tf.reduce_sum(tf.abs(tape.gradient(total, z)[0]), axis=-1).numpy() for total in per_step])


@pytest.mark.parametrize("network", NETWORKS)
def test_af_context_at_t_does_not_depend_on_z_from_t_on(network):
    prior = make_prior("af", "af", "nlsq", network=network)
    z = tf.random.normal([1, 6, Z], seed=3)
    found = dependence(lambda z: prior._parallel_context(z[None], tf.constant([6]), training=False)[0], z)
    before = np.tril(np.ones((6, 6), bool), k=-1)  # s < t
    assert np.all(found[~before] == 0) and np.all(found[before] > 0)


@pytest.mark.parametrize("network", NETWORKS)
def test_iaf_noise_at_t_depends_only_on_z_up_to_t(network):
    prior = make_prior("iaf", "scf", "nlsq", network=network)
    z = tf.random.normal([1, 6, Z], seed=4)

    def step(z_t, context):
        eps_t, log_det = prior.flow.inverse(z_t, context)
        return eps_t, log_det

    found = dependence(lambda z: prior._sequential(step, z[None], tf.constant([6]), training=False)[0][0], z)
    up_to = np.tril(np.ones((6, 6), bool))  # s ≤ t
    assert np.all(found[~up_to] == 0) and np.all(found[up_to] > 0)


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("time_flow,hidden_flow", [("af", "af"), ("iaf", "scf")])
def test_every_weight_gets_a_finite_nonzero_gradient(time_flow, hidden_flow, network):
    prior = make_prior(time_flow, hidden_flow, "nlsq", dropout=0.1, network=network)
    z = tf.random.normal([3, 7, Z], seed=5)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(prior.log_prob(z, LENGTHS, training=True))
    grads = tape.gradient(loss, prior.trainable_variables)
    for var, grad in zip(prior.trainable_variables, grads):
        assert grad is not None, var.path
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, var.path


@pytest.mark.parametrize("network", NETWORKS)
def test_the_iaf_density_gradient_keeps_no_weight_and_no_attention_cache_per_step(network):
    """What a differentiated step loop keeps per step is row-sized: the weights of the time context and of
    the hidden flow are read once before the loop (a copy per step otherwise) and the attention reads'
    gradients take the loop's final cache (``cached_attention``: one [N, n, T, d_k] cache per step
    otherwise)."""
    prior = make_prior("iaf", "scf", "nlsq", dropout=0.1, network=network)
    z = tf.random.normal([3, 7, Z], seed=5)

    def gradient(z):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(prior.log_prob(z, LENGTHS, training=True))
        return tape.gradient(loss, prior.trainable_variables)

    kept = set(loop_accumulators(tf.function(gradient).get_concrete_function(z).graph))
    prepared = [w for w in tf.nest.flatten([prior.time_context.step_weights(), prior.flow.step_weights()])
                if tf.is_tensor(w)]
    matrices = {tuple(w.shape) for w in prepared + prior.trainable_variables if len(w.shape) > 1}
    assert kept and not kept & matrices, kept & matrices
    if network == "transformer":
        heads = ATTENTION["attention_heads"]
        assert (3, heads, 7, ATTENTION["attention_units"] // heads) not in kept


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("time_flow,hidden_flow", [("af", "af"), ("iaf", "scf")])
def test_both_directions_compile_with_xla(time_flow, hidden_flow, network):
    prior = make_prior(time_flow, hidden_flow, "nlsq", network=network)
    z = tf.random.normal([3, 7, Z], seed=6)
    log_prob = tf.function(lambda z: prior.log_prob(z, LENGTHS), jit_compile=True)
    sample = tf.function(lambda eps: prior.sample_from_noise(eps, LENGTHS), jit_compile=True)
    np.testing.assert_allclose(log_prob(z), prior.log_prob(z, LENGTHS), atol=1e-4)
    z_xla, _ = sample(z)
    z_eager, _ = prior.sample_from_noise(z, LENGTHS)
    np.testing.assert_allclose(z_xla, z_eager, atol=1e-4)


def test_iaf_with_an_af_hidden_flow_is_refused():
    with pytest.raises(ValueError, match="scf"):
        TimeFlowPrior(Z, PositionFeatures(MAX_T), time_flow="iaf", hidden_flow="af")


def test_iaf_sampling_context_with_cudnn_equals_the_loop_and_is_one_cudnn_op_per_layer():
    """model.lstm_impl for the IAF prior's parallel direction (sampling); its density steps the same cells."""
    loop = make_prior("iaf", "scf", "nlsq")
    tf.keras.utils.set_random_seed(0)
    cudnn = TimeFlowPrior(Z, PositionFeatures(MAX_T), time_flow="iaf", hidden_flow="scf", transform="nlsq",
                          rnn_units=8, rnn_layers=2, hidden_flow_layers=3, hidden_flow_units=8, dropout=0.0,
                          lstm_impl="cudnn")
    cudnn.build()
    cudnn.set_weights(loop.get_weights())
    eps = tf.random.normal([2, 3, 7, Z], seed=2)
    for a, b in zip(cudnn.sample_from_noise(eps, LENGTHS), loop.sample_from_noise(eps, LENGTHS)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    z = cudnn.sample_from_noise(eps, LENGTHS)[0]
    np.testing.assert_allclose(cudnn.log_prob(z, LENGTHS), loop.log_prob(z, LENGTHS), rtol=1e-5, atol=1e-6)
    ops = traced_op_types(cudnn.sample_from_noise, tf.TensorSpec([None, None, None, Z]),
                          tf.TensorSpec([None], tf.int32), device="/GPU:0")
    assert ops["CudnnRNNV3"] == 2 and loops(ops) == 0


def test_the_lstm_context_keeps_the_weight_paths_order_and_checkpoint_places_it_always_had():
    """Checkpoints written before the time context became an interface still load: the LSTM's weights are
    the prior's own attributes' (``initial_state_net``, ``rnn``), with the same paths, after the flow's."""
    prior = make_prior("af", "af", "nlsq")
    paths = [v.path.split("/", 1)[1] for v in prior.weights]  # without the prior's own (numbered) name
    lstm = [f"lstm/layer_{i}_forward/{name}" for i in range(2) for name in ("kernel", "recurrent_kernel", "bias")]
    assert paths[-10:] == ["initial_state/hidden_0/kernel", "initial_state/hidden_0/bias",
                           "initial_state/output/kernel", "initial_state/output/bias", *lstm]
    assert all(path.startswith("hidden_flow/") for path in paths[:-10])
    with h5py.File(io.BytesIO(checkpoint_files.weights_bytes(prior)), "r") as stored:
        counts = {group: len(stored[group]) for group in ("initial_state_net/hidden/dense/vars",
                                                          "initial_state_net/output_layer/vars",
                                                          "rnn/cells/container/lstm/vars",
                                                          "rnn/cells/container_1/lstm/vars")}
    assert counts == {"initial_state_net/hidden/dense/vars": 2, "initial_state_net/output_layer/vars": 2,
                      "rnn/cells/container/lstm/vars": 3, "rnn/cells/container_1/lstm/vars": 3}
