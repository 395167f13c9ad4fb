"""Importance-sampled likelihood: exact chunking, brute force in numpy, units and the split accumulator."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tflatent.models import likelihood

K, B = 30, 4


def weights(seed=0):
    """Log weights [K, B] with a wide spread, as real ELBO terms have (hundreds of nats)."""
    rng = np.random.default_rng(seed)
    return rng.normal(-300.0, 40.0, size=(K, B))


def brute_force(log_weights):
    """log mean exp in float64 with numpy, shifting by the max."""
    top = log_weights.max(axis=0)
    return top + np.log(np.mean(np.exp(log_weights - top), axis=0))


class Sampler:
    """log_weight_fn that serves successive rows of a fixed table and records the chunk sizes."""

    def __init__(self, table):
        self.table = tf.constant(table, tf.float32)
        self.used = 0
        self.sizes = []

    def __call__(self, num_samples):
        rows = self.table[self.used:self.used + num_samples]
        self.used += num_samples
        self.sizes.append(num_samples)
        return rows


def test_one_chunk_is_the_log_mean_exp():
    table = weights()
    estimate = likelihood.importance_sampled_log_likelihood(lambda k: tf.constant(table), K, K)
    np.testing.assert_allclose(estimate, brute_force(table), rtol=1e-12)


@pytest.mark.parametrize("chunk, sizes", [(30, [30]), (10, [10, 10, 10]), (7, [7, 7, 7, 7, 2]), (1, [1] * 30),
                                          (64, [30])])
def test_chunking_is_exact(chunk, sizes):
    table = weights()
    sampler = Sampler(table)
    chunked = likelihood.importance_sampled_log_likelihood(sampler, K, chunk).numpy()
    assert sampler.sizes == sizes and sampler.used == K
    whole = likelihood.importance_sampled_log_likelihood(Sampler(table), K, K).numpy()
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    np.testing.assert_allclose(chunked, brute_force(table.astype(np.float32).astype(np.float64)), rtol=1e-6)


def test_chunking_is_exact_inside_tf_function():
    table = tf.constant(weights(1), tf.float32)
    graph = tf.function(lambda: likelihood.importance_sampled_log_likelihood(Sampler(table.numpy()), K, 7))
    np.testing.assert_allclose(graph(), brute_force(table.numpy().astype(np.float64)), rtol=1e-6)


def test_chunks_run_one_after_another_in_a_graph():
    """Each chunk's ops wait for the previous chunk's logsumexp (bounded memory under tf.function)."""
    graph = tf.function(lambda: likelihood.importance_sampled_log_likelihood(
        lambda k: tf.random.normal([k, B]), 10, 4)).get_concrete_function().graph

    def upstream(op):  # every op that must run before ``op``, through data and control edges
        seen, stack = set(), [op]
        while stack:
            current = stack.pop()
            for parent in [t.op for t in current.inputs] + list(current.control_inputs):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    noise = [op for op in graph.get_operations() if op.type == "RandomStandardNormal"]
    totals = [op for op in graph.get_operations() if op.type == "Max" and "ReduceLogSumExp" in op.name]
    assert len(noise) == 3 and len(totals) >= 3
    for i in (1, 2):
        assert totals[i - 1] in upstream(noise[i])
    assert not any(total in upstream(noise[0]) for total in totals)


def test_estimate_grows_towards_the_truth_with_k_on_average():
    """A proper IS estimate: E[log p̂_K] increases with K (here towards log E[exp w] = 0 for w = log-normal
    weights with mean 1)."""
    rng = np.random.default_rng(0)
    sigma = 1.5
    draws = rng.normal(-0.5 * sigma ** 2, sigma, size=(2000, 64))  # E[exp w] = 1 for every column
    estimates = [likelihood.importance_sampled_log_likelihood(lambda k: tf.constant(draws[:k]), k, k)
                 .numpy().mean() for k in (1, 4, 16, 64, 2000)]
    assert all(a < b for a, b in zip(estimates, estimates[1:])) and abs(estimates[-1]) < 0.05


def test_bad_sample_counts_name_the_config_fields():
    with pytest.raises(ValueError, match="train.nll_chunk"):
        likelihood.importance_sampled_log_likelihood(lambda k: tf.zeros([k, 1]), 10, 0)


def test_units_use_the_plus_one_normaliser():
    accumulator = likelihood.LikelihoodAccumulator()
    accumulator.update(tf.constant([-10.0, -20.0]), tf.constant([4, 5]))
    result = accumulator.result()
    assert result["nll"] == pytest.approx(30.0 / (5 + 6)) and result["tokens"] == 11
    assert result["bpc"] == likelihood.bits_per_character(result["nll"])
    assert result["bpc"] == pytest.approx(30.0 / 11 / math.log(2))


def test_accumulator_over_batches_equals_the_whole_split():
    rng = np.random.default_rng(3)
    log_likelihood = rng.normal(-100, 10, size=12)
    lengths = rng.integers(1, 50, size=12)
    accumulator = likelihood.LikelihoodAccumulator()
    for part in np.array_split(np.arange(12), 4):
        accumulator.update(tf.constant(log_likelihood[part], tf.float32), tf.constant(lengths[part]))
    text = accumulator.result()
    expected = -log_likelihood.astype(np.float32).astype(np.float64).sum() / (lengths + 1).sum()
    assert text["nll"] == pytest.approx(expected, rel=1e-12)
    assert text["bpc"] == pytest.approx(expected / math.log(2), rel=1e-12)
    assert (text["sequences"], text["tokens"]) == (12, int((lengths + 1).sum()))
    music = accumulator.result(music=True)
    assert music["nats_per_frame"] == music["nll"] and "bpc" not in music


def test_accumulator_edge_cases():
    accumulator = likelihood.LikelihoodAccumulator()
    with pytest.raises(ValueError, match="empty"):
        accumulator.result()
    accumulator.update([-np.inf, -3.0], [2, 3])  # a length p(T) never saw: inf, as in the reference
    assert accumulator.result()["nll"] == np.inf
    accumulator.reset()
    accumulator.update([-3.0], [2])
    assert accumulator.result()["nll"] == 1.0


def test_evaluate_split():
    batches = [(tf.zeros([2, 3]), tf.constant([3, 1])), (tf.zeros([1, 2]), tf.constant([2]))]
    result = likelihood.evaluate_split(lambda x, lengths: -tf.cast(lengths, tf.float32), batches,
                                       terms_fn=lambda x, lengths: {"twice": 2 * lengths})
    assert result["nll"] == pytest.approx(6.0 / 9.0) and result["twice"] == pytest.approx(12.0 / 9.0)
