"""NLSq bijector: round trips, log-dets against autodiff, the cubic's branch boundaries."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.bijectors import NLSq, nlsq
from tflatent.bijectors.nlsq import NLSQ_C_BOUND, _depressed_cubic_root

NUM_DRAWS = 100_000
TOLERANCE = {tf.float32: 1e-5, tf.float64: 1e-9}


def random_bijector_and_z(dtype, seed=0):
    """Raw parameters ~ N(0, 2²), z ~ U(−50, 50), one draw per element."""
    rng = np.random.default_rng(seed)
    raw = tf.constant(rng.normal(0.0, 2.0, (NUM_DRAWS, 5)), dtype)
    z = tf.constant(rng.uniform(-50.0, 50.0, NUM_DRAWS), dtype)
    return NLSq.from_raw_params(raw), z


def exact_bijector(a, b, c, d, g, dtype=tf.float64):
    return NLSq(*(tf.constant(v, dtype) for v in (a, b, c, d, g)))


def jacobian_diagonals(bijector, z, eps):
    """Elementwise derivatives ∂ε/∂z of ``inverse`` and ∂z/∂ε of ``forward`` by autodiff."""
    z, eps = tf.identity(z), tf.identity(eps)  # new tensors: no hit in the bijector's cache
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, eps])
        eps_of_z = bijector.inverse(z)
        z_of_eps = bijector.forward(eps)
    return tape.gradient(eps_of_z, z), tape.gradient(z_of_eps, eps)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_inverse_then_forward_round_trips(dtype):
    bijector, z = random_bijector_and_z(dtype)
    eps = bijector.inverse(z)
    z_back = bijector.forward(eps)
    assert eps.dtype == dtype and z_back.dtype == dtype
    assert np.isfinite(eps.numpy()).all() and np.isfinite(z_back.numpy()).all()
    error = np.abs(z_back.numpy() - z.numpy()) / (1.0 + np.abs(z.numpy()))
    assert error.max() <= TOLERANCE[dtype], f"max relative error {error.max():.3g}"


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_log_dets_match_autodiff_and_slope_is_positive(dtype):
    bijector, z = random_bijector_and_z(dtype, seed=1)
    eps = tf.identity(bijector.inverse(z))
    d_eps_d_z, d_z_d_eps = jacobian_diagonals(bijector, z, eps)
    assert np.isfinite(d_eps_d_z.numpy()).all() and np.isfinite(d_z_d_eps.numpy()).all()
    assert d_eps_d_z.numpy().min() > 0.0 and d_z_d_eps.numpy().min() > 0.0
    ildj = bijector.inverse_log_det_jacobian(z, event_ndims=0).numpy()
    fldj = bijector.forward_log_det_jacobian(eps, event_ndims=0).numpy()
    np.testing.assert_allclose(ildj, np.log(d_eps_d_z.numpy()), rtol=0, atol=1e-5)
    np.testing.assert_allclose(fldj, np.log(d_z_d_eps.numpy()), rtol=0, atol=1e-5)


def test_log_dets_sum_over_event_dims_and_are_opposite():
    rng = np.random.default_rng(2)
    bijector = NLSq.from_raw_params(tf.constant(rng.normal(0, 2, (4, 3, 5)), tf.float64))
    z = tf.constant(rng.normal(0, 3, (4, 3)), tf.float64)
    ildj = bijector.inverse_log_det_jacobian(z, event_ndims=1)
    fldj = bijector.forward_log_det_jacobian(bijector.inverse(z), event_ndims=1)
    assert ildj.shape == (4,)
    np.testing.assert_allclose(fldj, -ildj, atol=1e-12)
    np.testing.assert_allclose(ildj, tf.reduce_sum(bijector.inverse_log_det_jacobian(z, 0), -1))


def test_raw_parameterisation_follows_the_notes():
    raw = tf.constant([[0.3, -1.2, 2.5, 0.7, -0.4]], tf.float64)
    bijector = NLSq.from_raw_params(raw)
    b, d = np.exp(0.4 * -1.2), np.exp(0.4 * 0.7)
    expected = [0.3, b, np.tanh(0.3 * 2.5) * (8 * np.sqrt(3) / 9 - 0.05) * b / d, d, -0.4]
    actual = [bijector.a, bijector.b, bijector.c, bijector.d, bijector.g]
    np.testing.assert_allclose(np.concatenate(actual), expected, rtol=1e-14)
    assert NLSq.num_params == 5


def test_c_stays_inside_the_invertibility_bound():
    bijector, _ = random_bijector_and_z(tf.float64, seed=3)
    ratio = np.abs(bijector.c.numpy()) * bijector.d.numpy() / bijector.b.numpy()
    assert ratio.max() < NLSQ_C_BOUND < 8 * np.sqrt(3) / 9


def test_q_zero_is_solved_without_nan():
    # b = d = 1, g = 0.5, c = 1.25, ε = 1 give w = 1.5 and q = 1.25 − 1 − 0.25 = 0 exactly
    # (p = 0.25); the root is u = 0.5, i.e. z = 0.
    for dtype in (tf.float32, tf.float64):
        bijector = exact_bijector(0.0, 1.0, 1.25, 1.0, 0.5, dtype)
        eps = tf.constant([1.0], dtype)
        _, d_z_d_eps = jacobian_diagonals(bijector, tf.zeros([1], dtype), eps)
        np.testing.assert_allclose(bijector.forward(eps), [0.0], atol=1e-15)
        assert np.isfinite(d_z_d_eps.numpy()).all()
        np.testing.assert_allclose(d_z_d_eps, 1.0 / np.exp(bijector.inverse_log_det_jacobian(
            tf.zeros([1], dtype), event_ndims=0)), rtol=1e-6)


def test_depressed_cubic_root_at_the_branch_boundaries():
    # (p, q) = (0, 0), a triple root, cannot occur for NLSq: |q| > 0.048 wherever |p| is small.
    p = tf.constant([0.0, 0.0, 1e-15, -1e-15, 1e-13, -1e-13, 0.25, -2.0], tf.float64)
    q = tf.constant([0.3, -0.3, 0.05, 0.05, -0.05, -0.05, 0.0, 2.0], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([p, q])
        s = _depressed_cubic_root(p, q)
    grads = tape.gradient(s, [p, q])
    np.testing.assert_allclose(s ** 3 + p * s + q, 0.0, atol=1e-14)
    h = 1e-7  # central differences, across the branch boundaries
    np.testing.assert_allclose(
        grads[0], (_depressed_cubic_root(p + h, q) - _depressed_cubic_root(p - h, q)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(
        grads[1], (_depressed_cubic_root(p, q + h) - _depressed_cubic_root(p, q - h)) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_forward_is_continuous_across_p_zero(sign):
    # w = d(ε − a)/b + g = ±√3 is where p = 1 − w²/3 changes sign; walk ε across it.
    a, b, c, d, g = 0.2, 1.3, 0.4, 0.8, -0.6
    offsets = np.array([-1e-6, -1e-10, -1e-14, 0.0, 1e-14, 1e-10, 1e-6])
    w = sign * np.sqrt(3.0) + offsets
    eps = tf.constant(a + b * (w - g) / d, tf.float64)
    bijector = exact_bijector(a, b, c, d, g)
    z = bijector.forward(eps)
    _, d_z_d_eps = jacobian_diagonals(bijector, z, eps)
    np.testing.assert_allclose(bijector.inverse(z), eps, rtol=0, atol=1e-13)
    assert np.isfinite(d_z_d_eps.numpy()).all()
    np.testing.assert_allclose(np.log(d_z_d_eps), bijector.forward_log_det_jacobian(eps, 0), atol=1e-9)


def test_parameter_gradients_through_the_cubic_are_finite():
    rng = np.random.default_rng(4)
    raw = tf.constant(rng.normal(0, 2, (1000, 5)), tf.float64)
    eps = tf.constant(rng.normal(0, 20, 1000), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(raw)
        z = NLSq.from_raw_params(raw).forward(eps)
    assert np.isfinite(tape.gradient(z, raw).numpy()).all()


def test_runs_in_tf_function_and_xla():
    rng = np.random.default_rng(5)
    raw = tf.constant(rng.normal(0, 2, (64, 5)), tf.float32)
    z = tf.constant(rng.uniform(-5, 5, 64), tf.float32)

    def round_trip(raw, z):
        bijector = NLSq.from_raw_params(raw)
        eps = bijector.inverse(z)
        return bijector.forward(eps), bijector.inverse_log_det_jacobian(z, event_ndims=0)

    eager = round_trip(raw, z)
    for compiled in (tf.function(round_trip), tf.function(round_trip, jit_compile=True)):
        for expected, actual in zip(eager, compiled(raw, z)):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_validate_args_rejects_a_non_invertible_c():
    with pytest.raises(tf.errors.InvalidArgumentError, match="invertible"):
        NLSq(0.0, 1.0, 2.0, 1.0, 0.0, validate_args=True).inverse(tf.zeros([1]))


def test_raw_params_with_the_wrong_last_axis_are_rejected():
    with pytest.raises(ValueError, match=r"\[\.\.\., D, 5\]"):
        NLSq.from_raw_params(tf.zeros([3, 4]))


def raw_parameter_grid(seed=0):
    """Raw parameters over the range ``from_raw_params`` maps (b, d ∈ [e^−4, e^4]), with near-degenerate ones.

    r1, r3 ~ U(−10, 10); r2 ~ U(−20, 20), so that tanh(0.3·r2) = ±1 to float32 precision (|k| at the
    bound: the slope's minimum 0.0325·b) for a quarter of the draws; a, g ~ U(−20, 20); ε ~ U(−60, 60).
    A tenth of the draws put w = d(ε − a)/b + g at ±√3 (p = 0, where the closed form changes branch).
    """
    rng = np.random.default_rng(seed)
    raw = np.stack([rng.uniform(-20, 20, NUM_DRAWS), rng.uniform(-10, 10, NUM_DRAWS),
                    rng.uniform(-20, 20, NUM_DRAWS), rng.uniform(-10, 10, NUM_DRAWS),
                    rng.uniform(-20, 20, NUM_DRAWS)], axis=-1)
    eps = rng.uniform(-60.0, 60.0, NUM_DRAWS)
    b, d = np.exp(0.4 * raw[:, 1]), np.exp(0.4 * raw[:, 3])
    at_branch = rng.random(NUM_DRAWS) < 0.1
    w = np.sqrt(3.0) * rng.choice([-1.0, 1.0], NUM_DRAWS) * (1.0 + rng.uniform(-1e-6, 1e-6, NUM_DRAWS))
    eps = np.where(at_branch, raw[:, 0] + (w - raw[:, 4]) * b / d, eps)
    return raw, eps


@pytest.mark.parametrize("solver", ["float32", "float64"])
def test_forward_then_inverse_round_trips_to_the_stated_bound(solver):
    """The float32 solver (for TPUs) meets FLOAT32_ROUND_TRIP over the raw parameters' range."""
    raw, eps = raw_parameter_grid()
    bijector = NLSq.from_raw_params(tf.constant(raw, tf.float32), solver=solver)
    assert bijector.solver == solver
    z = bijector.forward(tf.constant(eps, tf.float32))
    assert z.dtype == tf.float32 and np.isfinite(z.numpy()).all()
    # ε of the float32 z, evaluated exactly (float64) from the float32 parameters: only the solver's error.
    a, b, c, d, g = (tf.cast(t, tf.float64).numpy() for t in (bijector.a, bijector.b, bijector.c, bijector.d,
                                                               bijector.g))
    z64 = z.numpy().astype(np.float64)
    eps_back = a + b * z64 + c / (1.0 + (d * z64 + g) ** 2)
    eps32 = np.float32(eps).astype(np.float64)
    error = np.abs(eps_back - eps32) / (1.0 + np.abs(eps32) + np.abs(a) + np.abs(c))
    assert error.max() <= nlsq.FLOAT32_ROUND_TRIP, f"max relative error {error.max():.3g}"


def test_the_float32_solver_has_the_float64_solvers_gradient():
    raw, eps = raw_parameter_grid(seed=1)
    raw, eps = tf.constant(raw[:2000], tf.float32), tf.constant(eps[:2000], tf.float32)
    grads = {}
    for solver in ("float32", "float64"):
        with tf.GradientTape() as tape:
            tape.watch([raw, eps])
            z = NLSq.from_raw_params(raw, solver=solver).forward(eps)
        grads[solver] = [g.numpy() for g in tape.gradient(z, [raw, eps])]
    for g32, g64 in zip(grads["float32"], grads["float64"]):
        assert np.isfinite(g32).all()
        np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=1e-3)  # float32 evaluation of the same formula


def test_auto_picks_float64_off_a_tpu_and_bad_solvers_are_named():
    assert NLSq.from_raw_params(tf.zeros([1, 5])).solver == "float64"
    with pytest.raises(ValueError, match="solver='float16' is not allowed; choose one of"):
        NLSq(0.0, 1.0, 0.0, 1.0, 0.0, solver="float16")
