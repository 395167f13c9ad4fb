"""ptb_char on the real PTB files: the paper's vocabulary, the 288 filter and its denominators."""

import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tflatent.data import PtbChar, PtbCharConfig, sources
from tflatent.data.vocabulary import CharVocabulary


def test_vocabulary_has_51_ids_pad_0_unk_1_and_is_saved_with_the_data(ptb_bundle, data_dir, tfds_dir):
    assert ptb_bundle.vocab_size == 51 and len(ptb_bundle.vocab) == 51
    assert ptb_bundle.vocab[:3] == ["<pad>", "<unk>", " "]
    assert (ptb_bundle.pad_id, ptb_bundle.unk_id) == (0, 1)
    saved = PtbChar(data_dir=tfds_dir).info.metadata["vocab"]  # read back from the prepared data set
    train = [s for s in sources.read_ptb_text(data_dir / "ptb" / "ptb.train.txt") if 1 <= len(s) <= 288]
    assert saved == ptb_bundle.vocab == CharVocabulary.build(train).tokens


def test_the_288_filter_keeps_the_reference_counts_in_every_split(ptb_bundle):
    kept = {split: ptb_bundle.num_examples(split) for split in sources.SPLITS}
    assert kept == {"train": 41740, "valid": 3356, "test": 3735}
    assert {split: ptb_bundle.num_dropped(split) for split in sources.SPLITS} == {
        "train": 328, "valid": 14, "test": 26}
    assert all(1 <= ptb_bundle.lengths(split).min() and ptb_bundle.lengths(split).max() <= 288
               for split in sources.SPLITS)


def test_length_plus_one_sums_are_the_reference_denominators(ptb_bundle):
    assert int((ptb_bundle.lengths("valid") + 1).sum()) == 388438
    assert int((ptb_bundle.lengths("test") + 1).sum()) == 434106


def test_examples_are_the_stripped_lines_in_file_order(data_dir, tfds_dir, ptb_bundle):
    dataset = tfds.load("ptb_char", split="validation[:3]", data_dir=tfds_dir,
                        builder_kwargs={"source_dir": str(data_dir)})
    lines = [s for s in sources.read_ptb_text(data_dir / "ptb" / "ptb.valid.txt") if 1 <= len(s) <= 288]
    for example, line in zip(tfds.as_numpy(dataset), lines):
        assert example["tokens"].dtype == np.int32 and example["length"] == len(line)
        assert ptb_bundle.decode(example["tokens"]) == line


def test_unk_words_are_five_known_characters(ptb_bundle):
    ids = ptb_bundle.encode("a <unk> b")
    assert len(ids) == 9 and ptb_bundle.unk_id not in ids.tolist()
    assert [ptb_bundle.vocab[i] for i in ids[2:7]] == list("<unk>")


def test_the_filter_is_logged_and_configurable(data_dir, tmp_path, caplog):
    small = tmp_path / "small"
    small.mkdir()
    for split, path in sources.locate_ptb(data_dir).items():
        small.joinpath(path.name).write_text("".join(path.read_text().splitlines(keepends=True)[:40]))
    builder = PtbChar(config=PtbCharConfig.for_lengths(10, 60), data_dir=tmp_path / "tfds", source_dir=small)
    with caplog.at_level(logging.INFO, logger="tflatent.data"):
        builder.download_and_prepare()
    lines = sources.read_ptb_text(small / "ptb.valid.txt")
    kept = sum(10 <= len(line) <= 60 for line in lines)
    assert builder.info.splits["validation"].num_examples == kept < 40
    assert f"ptb_char valid: kept {kept} of 40 sentences ({40 - kept} outside lengths 10..60 dropped)" \
        in caplog.text
    assert builder.info.metadata["counts"]["valid"] == {"kept": kept, "total": 40}


def test_missing_sources_fail_with_the_places_looked_in(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    builder = PtbChar(data_dir=tmp_path / "tfds", source_dir=tmp_path / "empty", download=False)
    with pytest.raises(sources.DataNotFoundError, match="ptb.train.txt") as error:
        builder.download_and_prepare()
    assert str(tmp_path / "empty") in str(error.value)
    assert str(tmp_path / "tfds" / "downloads" / "manual") in str(error.value)
