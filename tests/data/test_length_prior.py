"""p(T): probabilities, smoothing, support, sampling and the TFP distribution."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.data import LengthPrior


def test_log_prob_is_the_log_of_the_empirical_frequency():
    prior = LengthPrior(lengths=[2, 3, 3, 5], max_time=6)
    np.testing.assert_allclose(prior.counts, [0, 0, 1, 2, 0, 1, 0])
    expected = np.log([1 / 4, 2 / 4, 1 / 4])
    np.testing.assert_allclose(prior.log_prob(tf.constant([2, 3, 5])).numpy(), expected, rtol=1e-6)
    assert prior.log_prob(3).dtype == tf.float32 and prior.log_prob(3).shape == ()
    assert np.isclose(prior.probs.sum(), 1.0)


def test_without_smoothing_unseen_and_out_of_range_lengths_are_minus_inf():
    prior = LengthPrior(lengths=[2, 3, 3, 5], max_time=6)
    assert np.isneginf(prior.log_prob([0, 4, 6, 7, -1]).numpy()).all()


def test_add_k_smoothing_covers_every_length_0_to_max_time():
    prior = LengthPrior(np.array([0, 0, 1, 2, 0, 1, 0]), 6, smoothing=1.0)
    total = 4 + 7  # counts + one per bin 0..6
    np.testing.assert_allclose(prior.log_prob(np.arange(7)).numpy(),
                               np.log(np.array([1, 1, 2, 3, 1, 2, 1]) / total), rtol=1e-6)
    assert np.isneginf(prior.log_prob(7).numpy())  # beyond max_time: outside the support


def test_counts_and_lengths_give_the_same_prior_and_max_time_defaults():
    from_lengths = LengthPrior(lengths=np.array([1, 1, 4]))
    from_counts = LengthPrior(np.array([0, 2, 0, 0, 1]))
    assert from_lengths.max_time == from_counts.max_time == 4
    np.testing.assert_array_equal(from_lengths.probs, from_counts.probs)


def test_log_prob_works_on_a_tensor_inside_tf_function():
    prior = LengthPrior(lengths=[1, 2, 2], max_time=3)

    @tf.function
    def per_token(lengths):
        return prior.log_prob(lengths) / tf.cast(lengths + 1, tf.float32)

    result = per_token(tf.constant([[1, 2]], tf.int64))
    np.testing.assert_allclose(result.numpy(), [[np.log(1 / 3) / 2, np.log(2 / 3) / 3]], rtol=1e-6)


def test_samples_follow_the_distribution_and_are_seeded():
    prior = LengthPrior(np.array([0, 10, 30, 60]), smoothing=0.0)
    samples = prior.sample(20000, seed=3)
    assert samples.dtype == tf.int32 and samples.shape == (20000,)
    frequencies = np.bincount(samples.numpy(), minlength=4) / 20000
    np.testing.assert_allclose(frequencies, prior.probs, atol=0.015)
    np.testing.assert_array_equal(prior.sample(50, seed=3), prior.sample(50, seed=3))
    assert not np.array_equal(prior.sample(50, seed=3), prior.sample(50, seed=4))


def test_as_distribution_is_a_categorical_over_lengths():
    prior = LengthPrior(lengths=[1, 2, 2, 5], max_time=6, smoothing=0.5)
    distribution = prior.as_distribution()
    lengths = np.arange(7)
    np.testing.assert_allclose(distribution.log_prob(lengths).numpy(), prior.log_prob(lengths).numpy(),
                               rtol=1e-5)
    assert distribution.sample(3, seed=(1, 2)).dtype == tf.int32


def test_invalid_arguments_are_errors():
    with pytest.raises(ValueError, match="exactly one of counts"):
        LengthPrior(np.ones(3), lengths=[1])
    with pytest.raises(ValueError, match="a length of 9 exceeds max_time = 4"):
        LengthPrior(lengths=[1, 9], max_time=4)
    with pytest.raises(ValueError, match=r"counts must have shape \[max_time \+ 1\] = \[4\]"):
        LengthPrior(np.ones(3), max_time=3)
    with pytest.raises(ValueError, match="at least one length or a positive smoothing"):
        LengthPrior(np.zeros(3))


def test_sampled_lengths_are_never_zero_even_with_smoothing():
    prior = LengthPrior(np.array([0, 1, 0, 1]), smoothing=1.0)  # p(0) = 1/6 after smoothing
    samples = prior.sample(5000, seed=5).numpy()
    assert samples.min() >= 1
    frequencies = np.bincount(samples, minlength=4)[1:] / 5000
    np.testing.assert_allclose(frequencies, prior.probs[1:] / prior.probs[1:].sum(), atol=0.03)
