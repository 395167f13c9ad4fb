"""Batching: the reference's bucketing for training, sorted complete batches for evaluation."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.data.pipeline import bucketed_batch_indices, make_batches, padded_length, sorted_batch_indices

N, B, CHUNK = 203, 5, 4  # 203 = 10 chunks of 20 examples + 3: the last chunk and batch are partial


@pytest.fixture(scope="module")
def lengths():
    return np.random.default_rng(0).integers(1, 40, size=N)


@pytest.fixture(scope="module")
def sequences(lengths):
    """Example i is the sequence [i + 1] * length_i, so a batch shows which examples it holds."""
    return tf.ragged.constant([[i + 1] * int(n) for i, n in enumerate(lengths)], dtype=tf.int32)


def epoch(dataset):
    """[(example indices, lengths)] of one pass, from x (values i + 1) and the lengths."""
    batches = []
    for x, batch_lengths in dataset:
        batches.append((x.numpy()[:, 0] - 1, batch_lengths.numpy()))
    return batches


def test_bucketing_is_shuffle_chunk_sort_cut_shuffle_batches(lengths):
    batches = bucketed_batch_indices(lengths, B, CHUNK, tf.constant([1, 2])).to_list()
    assert sorted(np.concatenate(batches).tolist()) == list(range(N))  # every example once
    assert [len(b) for b in batches].count(B) == len(batches) - 1
    for start in range(0, len(batches), CHUNK):  # each run of CHUNK batches is one chunk:
        chunk = batches[start:start + CHUNK]
        members = np.concatenate(chunk)
        assert len(members) == min(CHUNK * B, N - start * B)
        by_length = np.sort(lengths[members])  # its examples sorted by length, cut into batches of B,
        pieces = sorted(sorted(lengths[b].tolist()) for b in chunk)
        assert pieces == sorted(by_length[i:i + B].tolist() for i in range(0, len(by_length), B))
    starts = [int(min(lengths[b])) for b in batches[:CHUNK]]
    assert starts != sorted(starts)  # with the batches of a chunk in random order


def test_training_batches_are_padded_and_hold_their_examples(lengths, sequences):
    for indices, batch_lengths in epoch(make_batches(sequences, training=True, batch_size=B, seed=0,
                                                     chunk_batches=CHUNK)):
        np.testing.assert_array_equal(batch_lengths, lengths[indices])
    x, batch_lengths = next(iter(make_batches(sequences, training=True, batch_size=B)))
    assert x.dtype == tf.int32 and batch_lengths.dtype == tf.int32
    assert x.shape == (B, max(batch_lengths))
    mask = np.arange(x.shape[1])[None, :] < batch_lengths.numpy()[:, None]
    assert (x.numpy()[~mask] == 0).all() and (x.numpy()[mask] > 0).all()


def test_training_order_is_seeded_and_reshuffled_every_epoch(sequences):
    dataset = make_batches(sequences, training=True, batch_size=B, seed=7, chunk_batches=CHUNK)
    first, second = epoch(dataset), epoch(dataset)
    again = epoch(make_batches(sequences, training=True, batch_size=B, seed=7, chunk_batches=CHUNK))
    other = epoch(make_batches(sequences, training=True, batch_size=B, seed=8, chunk_batches=CHUNK))
    order = lambda batches: np.concatenate([indices for indices, _ in batches]).tolist()  # noqa: E731
    assert order(first) == order(again)
    assert order(first) != order(second) and order(first) != order(other)
    assert sorted(order(second)) == list(range(N))


def test_repeat_gives_fresh_complete_epochs(sequences):
    num_batches = -(-N // B)
    dataset = make_batches(sequences, training=True, batch_size=B, repeat=True, chunk_batches=CHUNK)
    batches = epoch(dataset.take(2 * num_batches))
    one, two = ([i for indices, _ in part for i in indices] for part in
                (batches[:num_batches], batches[num_batches:]))
    assert sorted(one) == sorted(two) == list(range(N)) and one != two


def test_evaluation_batches_are_sorted_complete_and_deterministic(lengths, sequences):
    dataset = make_batches(sequences, training=False, batch_size=B)
    batches = epoch(dataset)
    order = np.concatenate([indices for indices, _ in batches])
    np.testing.assert_array_equal(order, np.argsort(lengths, kind="stable"))
    assert [len(indices) for indices, _ in batches] == [B] * (N // B) + [N % B]  # last partial batch kept
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, epoch(dataset)))
    np.testing.assert_array_equal(np.concatenate(sorted_batch_indices(lengths, B).to_list()), order)


def test_frames_are_float32_batch_time_channel():
    rolls = tf.RaggedTensor.from_row_lengths(tf.ones([9, 88], tf.uint8), [2, 3, 4])
    x, batch_lengths = next(iter(make_batches(rolls, training=False, batch_size=8, dtype=tf.float32)))
    assert x.dtype == tf.float32 and x.shape == (3, 4, 88)
    np.testing.assert_array_equal(batch_lengths, [2, 3, 4])
    np.testing.assert_array_equal(x.numpy().sum(axis=(1, 2)), [2 * 88, 3 * 88, 4 * 88])


@pytest.mark.parametrize("training", [True, False])
def test_padding_to_a_multiple_keeps_examples_and_lengths_and_stops_at_max_time(lengths, sequences, training):
    exact = epoch(make_batches(sequences, training=training, batch_size=B, seed=0, chunk_batches=CHUNK))
    padded = make_batches(sequences, training=training, batch_size=B, seed=0, chunk_batches=CHUNK,
                          pad_to_multiple=8, max_time=36)
    shapes = set()
    for (x, batch_lengths), (indices, want) in zip(padded, exact):
        longest = int(max(batch_lengths))
        assert x.shape[1] == max(min(-(-longest // 8) * 8, 36), longest)
        shapes.add(x.shape[1])
        np.testing.assert_array_equal(x.numpy()[:, 0] - 1, indices)
        np.testing.assert_array_equal(batch_lengths, want)
        mask = np.arange(x.shape[1])[None, :] < batch_lengths.numpy()[:, None]
        assert (x.numpy()[~mask] == 0).all() and (x.numpy()[mask] > 0).all()
    assert shapes <= {8, 16, 24, 32, 36, 37, 38, 39}  # few shapes: multiples of 8, then max_time or longer


def test_frames_are_padded_to_a_multiple_along_time_only():
    rolls = tf.RaggedTensor.from_row_lengths(tf.ones([9, 88], tf.uint8), [2, 3, 4])
    x, _ = next(iter(make_batches(rolls, training=False, batch_size=8, dtype=tf.float32, pad_to_multiple=16)))
    assert x.shape == (3, 16, 88) and float(tf.reduce_sum(x)) == 9 * 88


def test_bad_arguments_are_errors(sequences):
    with pytest.raises(ValueError, match="pad_to_multiple = 0 must be >= 1"):
        make_batches(sequences, training=True, batch_size=2, pad_to_multiple=0)
    with pytest.raises(ValueError, match="batch_size = 0, .* must be >= 1"):
        make_batches(sequences, training=True, batch_size=0)
    with pytest.raises(ValueError, match="empty split"):
        make_batches(sequences[:0], training=False, batch_size=2)


def test_padded_length_rounds_up_within_max_time_for_ints_and_tensors():
    """The rule make_batches pads by (and benchmarks/attention_speed.py pads its fixed batches by)."""
    cases = [(57, 16, None, 64), (64, 16, None, 64), (1, 8, 36, 8), (33, 8, 36, 36), (40, 8, 36, 40)]
    for steps, multiple, max_time, expected in cases:
        assert int(padded_length(steps, multiple, max_time)) == expected
        assert int(padded_length(tf.constant(steps, tf.int64), multiple, max_time)) == expected
