"""HiddenFlow: log-dets against autodiff Jacobians, round trips, normalisation, gradients, XLA."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import randomize_weights

from tflatent.priors import AutoregressiveHiddenFlow, make_hidden_flow
from tflatent.priors.hidden_flow import standard_normal_log_prob

DIM, CONTEXT = 5, 3
CASES = list(itertools.product(["af", "scf", "none"], ["nlsq", "affine"]))


def make_flow(kind, transform="nlsq", dim=DIM, context_dim=CONTEXT, num_layers=3, scale=0.3, **kwargs):
    """A small flow whose weights are random enough that every path matters."""
    flow = make_hidden_flow(kind, dim=dim, context_dim=context_dim, num_layers=num_layers, hidden_units=16,
                            transform=transform, **kwargs)
    flow.build()
    if scale:
        randomize_weights(flow, scale)
    return flow


def random_inputs(batch_shape=(4,), dim=DIM, context_dim=CONTEXT, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=batch_shape + (dim,)), tf.float32),
            tf.constant(rng.normal(size=batch_shape + (context_dim,)), tf.float32))


@pytest.mark.parametrize("kind,transform", CASES)
def test_log_dets_match_autodiff_jacobians(kind, transform):
    flow = make_flow(kind, transform)
    z, context = random_inputs()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        eps, inverse_log_det = flow.inverse(z, context)
        eps = tf.identity(eps)
        tape.watch(eps)
        z_back, forward_log_det = flow.forward(eps, context)
    np.testing.assert_allclose(inverse_log_det, tf.linalg.slogdet(tape.batch_jacobian(eps, z))[1], atol=1e-4)
    np.testing.assert_allclose(forward_log_det, tf.linalg.slogdet(tape.batch_jacobian(z_back, eps))[1],
                               atol=1e-4)


@pytest.mark.parametrize("kind,transform", CASES)
def test_single_pass_inverse_equals_the_tfp_bijector(kind, transform):
    flow = make_flow(kind, transform)
    z, context = random_inputs()
    eps, log_det = flow.inverse(z, context)
    bijector = flow.bijector(context)
    np.testing.assert_allclose(eps, bijector.inverse(z), atol=1e-6)
    np.testing.assert_allclose(log_det, bijector.inverse_log_det_jacobian(z, event_ndims=1), atol=1e-5)


@pytest.mark.parametrize("kind,transform", CASES)
def test_forward_equals_the_tfp_bijector(kind, transform):
    flow = make_flow(kind, transform, scale=0.5)
    eps, context = random_inputs(batch_shape=(2, 4), seed=4)
    np.testing.assert_allclose(flow.forward(eps, context)[0], flow.bijector(context).forward(eps),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,transform", CASES)
def test_sample_log_prob_inverse_round_trip(kind, transform):
    flow = make_flow(kind, transform)
    eps, context = random_inputs(batch_shape=(64,), seed=1)
    z, log_det = flow.forward(eps, context)
    eps_back, _ = flow.inverse(z, context)
    np.testing.assert_allclose(eps_back, eps, atol=1e-4)
    np.testing.assert_allclose(flow.log_prob(z, context), standard_normal_log_prob(eps) - log_det, atol=1e-4)


@pytest.mark.parametrize("transform", ["nlsq", "affine"])
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_af_sampling_loop_equals_the_tfp_bijector(transform, dtype, rtol):
    # Same algorithm, so equal up to rounding: Eigen evaluates the cubic's transcendental functions
    # through SIMD packets or a scalar tail depending on the array size, which can move the last bit.
    flow = make_flow("af", transform, scale=0.5, dtype=dtype)  # 3 layers: both input orders
    eps, context = (tf.cast(x, dtype) for x in random_inputs(batch_shape=(2, 3, 4), seed=2))
    expected = flow.bijector(context).forward(eps)
    np.testing.assert_allclose(flow.forward(eps, context)[0], expected, rtol=rtol, atol=rtol)
    compiled = tf.function(lambda eps, context: flow.forward(eps, context)[0])
    np.testing.assert_allclose(compiled(eps, context), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kind,transform", CASES)
def test_every_trainable_weight_gets_a_gradient(kind, transform):
    flow = make_flow(kind, transform, scale=0.0)  # the reference initialisation
    z, context = random_inputs(batch_shape=(32,), seed=2)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow.log_prob(z, context))
    grads = tape.gradient(loss, flow.trainable_weights)
    assert len(grads) == len(flow.trainable_weights) > 0
    for weight, grad in zip(flow.trainable_weights, grads):
        assert grad is not None and np.any(grad.numpy() != 0), weight.path


@pytest.mark.parametrize("num_layers,kept", [(1, slice(0, 2)), (2, slice(2, 4))])
def test_gradient_flows_through_the_pass_through_half(num_layers, kept):
    # With zero output kernels the parameters depend on the context only, and with zero raw
    # parameters a layer is the identity. So the half kept by the last coupling reaches ε as z_kept
    # and ∂ log p/∂z_kept = −z_kept exactly; a detached copy (the reference under PyTorch >= 1.0)
    # would give 0. The 2-layer case checks the reversed layer, which keeps the last half.
    flow = make_flow("scf", dim=4, num_layers=num_layers)
    for k, conditioner in enumerate(flow.conditioners):
        output = conditioner.net.output_layer
        output.kernel.assign(tf.zeros_like(output.kernel))
        if k < num_layers - 1:
            output.bias.assign(tf.zeros_like(output.bias))
    z, context = random_inputs(dim=4)
    with tf.GradientTape() as tape:
        tape.watch(z)
        log_prob = flow.log_prob(z, context)
    np.testing.assert_allclose(tape.gradient(log_prob, z).numpy()[:, kept], -z.numpy()[:, kept], atol=1e-5)


def test_layers_alternate_the_order():
    af = make_flow("af", num_layers=3, scale=0.0)
    forward, backward = [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]
    assert [made.input_order.tolist() for made in af.conditioners] == [forward, backward, forward]
    scf = make_flow("scf", num_layers=2)
    z, context = random_inputs()
    layers = scf.bijector(context).bijectors  # layers[k] is the k-th applied to the data
    np.testing.assert_array_equal(layers[0].inverse(z)[:, :2], z[:, :2])  # keeps dims of order 1..2
    np.testing.assert_array_equal(layers[1].inverse(z)[:, 3:], z[:, 3:])  # reversed order: keeps the last 2
    assert not np.allclose(layers[1].inverse(z)[:, :3], z[:, :3])


def integrate(flow, context, axes):
    """∫ p(z | context) dz by the midpoint rule on the grid given per axis as (low, high, n)."""
    centres = [np.linspace(low, high, n, endpoint=False) + (high - low) / (2 * n) for low, high, n in axes]
    cell = np.prod([(high - low) / n for low, high, n in axes])
    points = np.stack(np.meshgrid(*centres, indexing="ij"), axis=-1).reshape(-1, len(axes))
    density = np.exp(flow.log_prob(tf.constant(points, tf.float32), context).numpy().astype(np.float64))
    return density.sum() * cell, density


@pytest.mark.parametrize("dim,kind,grid", [(1, "af", [(-16, 16, 32_000)]),
                                           (2, "af", [(-16, 16, 640)] * 2),
                                           (2, "scf", [(-16, 16, 640)] * 2)])
def test_density_integrates_to_one(dim, kind, grid):
    flow = make_flow(kind, dim=dim, num_layers=5, scale=0.3)
    context = tf.constant([[0.5, -1.0, 2.0]], tf.float32)
    mass, density = integrate(flow, context, grid)
    assert abs(mass - 1.0) < 1e-3, mass
    _, standard_normal = integrate(make_flow(kind, dim=dim, num_layers=0), context, grid)
    assert np.abs(density - standard_normal).max() > 0.05  # the flow is far from the identity


def test_leading_dims_broadcast_between_z_and_context():
    for kind in ("af", "scf", "none"):
        flow = make_flow(kind)
        z, _ = random_inputs(batch_shape=(2, 3, 4))
        _, context = random_inputs(batch_shape=(3, 4))  # shared by the 2 samples
        log_prob = flow.log_prob(z, context)
        assert log_prob.shape == (2, 3, 4)
        np.testing.assert_allclose(log_prob[1], flow.log_prob(z[1], context), atol=1e-5)
        assert flow.forward(z, context)[0].shape == (2, 3, 4, DIM)


@pytest.mark.parametrize("kind", ["af", "scf"])
def test_forward_and_inverse_compile_with_xla_inside_a_scan_over_time(kind):
    flow = make_flow(kind)
    eps, context = random_inputs(batch_shape=(6, 4))  # [T, B, ...]

    def scan_over_time(eps, context):
        def step(_, inputs):
            z_t, log_det_t = flow.forward(*inputs)
            eps_t, inverse_log_det_t = flow.inverse(z_t, inputs[1])
            return z_t, log_det_t, eps_t, inverse_log_det_t
        zeros = (tf.zeros([4, DIM]), tf.zeros([4]), tf.zeros([4, DIM]), tf.zeros([4]))
        return tf.scan(step, (eps, context), initializer=zeros)

    z, log_det, eps_back, inverse_log_det = tf.function(scan_over_time, jit_compile=True)(eps, context)
    expected_z, expected_log_det = flow.forward(eps, context)
    np.testing.assert_allclose(z, expected_z, atol=1e-5)
    np.testing.assert_allclose(log_det, expected_log_det, atol=1e-4)
    np.testing.assert_allclose(eps_back, eps, atol=1e-4)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-4)


def test_context_dim_zero_and_context_errors():
    for kind in ("af", "scf", "none"):
        flow = make_flow(kind, context_dim=0)
        z = tf.random.normal([7, DIM])
        assert flow.log_prob(z).shape == (7,)
        np.testing.assert_allclose(flow.log_prob(z), flow.log_prob(z, tf.zeros([7, 0])))
        np.testing.assert_allclose(flow.inverse(flow.forward(z)[0])[0], z, atol=1e-4)
    with pytest.raises(ValueError, match="pass a context"):
        make_flow("af").log_prob(tf.zeros([2, DIM]))
    with pytest.raises(ValueError, match=r"context of shape \[\.\.\., 3\]"):
        make_flow("af").log_prob(tf.zeros([2, DIM]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="last axis must be 5"):
        make_flow("scf").log_prob(tf.zeros([2, 4]), tf.zeros([2, CONTEXT]))
    with pytest.raises(ValueError, match="kind='maf'"):
        make_hidden_flow("maf", dim=DIM, context_dim=0)
    with pytest.raises(ValueError, match="transform='cubic'"):
        make_hidden_flow("af", dim=DIM, context_dim=0, transform="cubic")


@pytest.mark.parametrize("kind", ["af", "scf"])
def test_dropout_only_when_training_and_shared_by_eps_and_log_det(kind):
    flow = make_flow(kind, dropout=0.5)
    z, context = random_inputs()
    np.testing.assert_array_equal(flow.log_prob(z, context), flow.log_prob(z, context))
    assert not np.allclose(flow.log_prob(z, context, training=True), flow.log_prob(z, context))
    # one conditioner pass per layer: the log-det belongs to the ε drawn with the same dropout masks
    with tf.GradientTape() as tape:
        tape.watch(z)
        eps, log_det = flow.inverse(z, context, training=True)
    np.testing.assert_allclose(log_det, tf.linalg.slogdet(tape.batch_jacobian(eps, z))[1], atol=1e-4)


def test_sampling_projects_the_context_once_per_layer_not_per_dim(monkeypatch):
    flow = make_flow("af", num_layers=2)
    calls = []
    for made in flow.conditioners:
        def counted(context, training=None, project=made.project_context):
            calls.append(context)
            return project(context, training=training)
        monkeypatch.setattr(made, "project_context", counted)
    eps, context = random_inputs()
    flow.forward(eps, context)
    assert len(calls) == 2 * 2  # sampling + the log-det pass, for each of the 2 layers; D = 5 plays no part


@pytest.mark.parametrize("kind", ["af", "scf", "none"])
def test_dtype_policy_reaches_every_conditioner(kind):
    flow = make_hidden_flow(kind, dim=DIM, context_dim=CONTEXT, num_layers=2, hidden_units=16,
                            dtype="float64")
    flow.build()
    assert {w.dtype for w in flow.weights} == {"float64"}
    eps, context = (tf.cast(x, tf.float64) for x in random_inputs(seed=3))
    z, log_det = flow.forward(eps, context)
    eps_back, inverse_log_det = flow.inverse(z, context)
    assert z.dtype == log_det.dtype == tf.float64
    np.testing.assert_allclose(eps_back, eps, atol=1e-12)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-12)


def test_config_and_serialisation_round_trip():
    flow = make_flow("scf", transform="affine", dropout=0.1)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(flow))
    clone.build()
    clone.set_weights(flow.get_weights())
    z, context = random_inputs()
    np.testing.assert_allclose(clone.log_prob(z, context), flow.log_prob(z, context))
    np.testing.assert_allclose(clone(z, context), flow(z, context))
    assert clone.get_config() == flow.get_config()


def test_the_factory_gives_one_class_per_kind_and_keeps_the_variable_paths():
    """One class per config name; the conditioners keep the names of saved weights (made_k, coupling_k,
    elementwise) under the layer's name."""
    from tflatent import config as config_lib
    from tflatent.priors.hidden_flow import HIDDEN_FLOWS
    assert tuple(HIDDEN_FLOWS) == config_lib.HIDDEN_FLOWS
    expected = {"af": "hidden_flow/made_1/", "scf": "hidden_flow/coupling_1/",
                "none": "hidden_flow/elementwise/"}
    for kind, cls in HIDDEN_FLOWS.items():
        flow = make_hidden_flow(kind, dim=DIM, context_dim=CONTEXT, num_layers=2, hidden_units=16,
                                name="hidden_flow")
        flow.build()
        assert type(flow) is cls and flow.kind == kind
        assert any(w.path.startswith(expected[kind]) for w in flow.weights), [w.path for w in flow.weights]
    assert isinstance(make_hidden_flow("af", dim=DIM, context_dim=0), AutoregressiveHiddenFlow)
