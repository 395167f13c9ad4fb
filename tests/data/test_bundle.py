"""load_dataset / DataBundle on the real data: batches, max_time, p(T), limits and the text helpers."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from tflatent.config import DataConfig
from tflatent.data import load_dataset
from tflatent.errors import DataError


def jsb_config(data_dir, tfds_dir, **fields):
    return DataConfig(dataset="jsb_chorales", data_dir=str(data_dir), tfds_dir=str(tfds_dir), **fields)


def test_ptb_bundle_text_fields_and_max_time(ptb_bundle):
    assert not ptb_bundle.is_music and ptb_bundle.name == "ptb_char/length_1_288/1.1.0"
    assert ptb_bundle.max_time == 288  # the longest of train + valid (docs/reference.md §2.2)
    assert ptb_bundle.lengths("train").dtype == np.int32


def test_ptb_evaluation_batches_cover_every_sentence_once(ptb_bundle):
    lengths = np.concatenate([batch_lengths.numpy() for _, batch_lengths in ptb_bundle.valid(batch_size=64)])
    assert len(lengths) == 3356 and int((lengths + 1).sum()) == 388438
    assert (np.diff(lengths) >= 0).all()  # sorted by length


def test_ptb_training_batches(ptb_bundle):
    x, lengths = next(iter(ptb_bundle.train()))
    assert x.dtype == tf.int32 and x.shape == (15, int(max(lengths)))
    first = ptb_bundle.decode(x[0, :lengths[0]])
    assert len(first) == lengths[0] and first == first.strip()


def test_ptb_length_prior_is_train_plus_valid_without_smoothing(ptb_bundle):
    lengths = np.concatenate([ptb_bundle.lengths("train"), ptb_bundle.lengths("valid")])
    prior = ptb_bundle.length_prior
    assert prior.max_time == 288 and prior.smoothing == 0.0
    np.testing.assert_allclose(prior.log_prob(100).numpy(), np.log(np.mean(lengths == 100)), rtol=1e-5)
    assert np.isfinite(prior.log_prob(ptb_bundle.lengths("test")).numpy()).all()  # no unseen test length


def test_text_helpers_round_trip_and_map_unknown_characters(ptb_bundle):
    ids = ptb_bundle.encode("the n <unk> %")
    assert ids[-1] == ptb_bundle.unk_id and ptb_bundle.decode(ids[:-1]) == "the n <unk> "


def test_music_bundle(jsb_bundle):
    assert jsb_bundle.is_music and jsb_bundle.vocab is None and jsb_bundle.vocab_size == 88
    assert jsb_bundle.pad_id is None and jsb_bundle.unk_id is None
    longest = max(jsb_bundle.lengths("train").max(), jsb_bundle.lengths("valid").max())
    assert jsb_bundle.max_time == int(1.25 * longest)
    x, lengths = next(iter(jsb_bundle.batches("test", training=False)))
    assert x.dtype == tf.float32 and x.shape == (15, int(max(lengths)), 88)
    assert [jsb_bundle.num_examples(split) for split in ("train", "valid", "test")] == [229, 76, 77]
    with pytest.raises(TypeError, match="no vocabulary"):
        jsb_bundle.encode("abc")


def test_music_length_prior_has_add_one_smoothing_over_0_to_max_time(jsb_bundle):
    prior = jsb_bundle.length_prior
    assert np.isfinite(prior.log_prob(np.arange(jsb_bundle.max_time + 1)).numpy()).all()
    assert np.isclose(prior.probs.sum(), 1.0)


def test_limits_take_the_first_sequences_and_keep_the_derived_sizes(data_dir, tfds_dir, jsb_bundle):
    small = load_dataset(jsb_config(data_dir, tfds_dir, train_limit=20, eval_limit=7,
                                    length_prior_smoothing=1.0))
    assert [small.num_examples(split) for split in ("train", "valid", "test")] == [20, 7, 7]
    np.testing.assert_array_equal(small.lengths("train"), jsb_bundle.lengths("train")[:20])
    assert small.max_time == jsb_bundle.max_time
    np.testing.assert_array_equal(small.length_prior.probs, jsb_bundle.length_prior.probs)
    assert sum(len(lengths) for _, lengths in small.test(batch_size=3)) == 7


def test_length_prior_splits_and_max_time_options(data_dir, tfds_dir):
    train_only = load_dataset(jsb_config(data_dir, tfds_dir, length_prior_splits="train", max_time=400))
    assert train_only.max_time == 400 and train_only.length_prior.max_time == 400
    assert train_only.length_prior.counts.sum() == 229
    with pytest.raises(DataError, match="data.max_time = 100 is shorter than the longest train sequence"):
        load_dataset(jsb_config(data_dir, tfds_dir, max_time=100))


def test_training_batches_are_seeded(jsb_bundle):
    def first_lengths(**kwargs):
        return next(iter(jsb_bundle.train(**kwargs)))[1].numpy().tolist()

    assert first_lengths() == first_lengths(seed=jsb_bundle.seed)
    assert first_lengths(seed=1) == first_lengths(seed=1) != first_lengths(seed=2)


def test_unknown_split_is_an_error(jsb_bundle):
    with pytest.raises(ValueError, match="unknown split 'dev'; choose one of: train, valid, test"):
        jsb_bundle.num_examples("dev")


def test_loads_started_together_prepare_the_data_set_once(data_dir, tmp_path, jsb_bundle):
    """Runs started at once on a new machine: without the lock both generate the data set and the second
    rename into place fails (FileExistsError)."""
    config = jsb_config(data_dir, tmp_path / "tensorflow_datasets")
    with ThreadPoolExecutor(max_workers=2) as pool:
        bundles = list(pool.map(lambda _: load_dataset(config), range(2)))
    for bundle in bundles:
        np.testing.assert_array_equal(bundle.lengths("test"), jsb_bundle.lengths("test"))
