"""polyphonic_music on the real JSB and Nottingham files, through tfds.load and the builder."""

import logging
import os
import shutil

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from tflatent.data import PolyphonicMusic, sources
from tflatent.data.builder import TFDS_SPLITS
from tflatent.errors import DataError


def load_all(name, tfds_dir, source_dir):
    """{split: [frames]} of polyphonic_music/<name>, through tfds.load with the source folder given."""
    splits = tfds.load(f"polyphonic_music/{name}", data_dir=tfds_dir,
                       builder_kwargs={"source_dir": str(source_dir)})
    return {split: [example["frames"] for example in tfds.as_numpy(splits[TFDS_SPLITS[split]])]
            for split in sources.SPLITS}


def copy_alone(path, folder):
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("name, sizes", [("jsb_chorales", (229, 76, 77)), ("nottingham", (694, 173, 170))])
def test_tfds_load_gives_the_authors_splits(name, sizes, data_dir, tfds_dir):
    splits = load_all(name, tfds_dir, data_dir)
    assert tuple(len(splits[split]) for split in sources.SPLITS) == sizes
    frames = splits["train"][0]
    assert frames.dtype == np.uint8 and frames.ndim == 2 and frames.shape[1] == 88
    assert set(np.unique(frames)) <= {0, 1}


def test_jsb_from_mat_and_from_pickle_are_identical_sequence_by_sequence(data_dir, tmp_path):
    from_mat = load_all("jsb_chorales", tmp_path / "a", copy_alone(data_dir / "music" / "JSB_Chorales.mat",
                                                                   tmp_path / "mat"))
    from_pickle = load_all("jsb_chorales", tmp_path / "b", copy_alone(
        data_dir / "music" / "jsb-chorales-quarter.pkl", tmp_path / "pickle"))
    for split in sources.SPLITS:
        assert len(from_mat[split]) == len(from_pickle[split])
        for a, b in zip(from_mat[split], from_pickle[split]):
            np.testing.assert_array_equal(a, b)


def test_frames_keep_the_source_order_and_pitch_minus_21(data_dir, tfds_dir):
    rolls = sources.read_music(data_dir / "music" / "JSB_Chorales.mat")
    frames = load_all("jsb_chorales", tfds_dir, data_dir)
    for split in sources.SPLITS:
        np.testing.assert_array_equal(frames[split][5], rolls[split][5])
    pitches = np.flatnonzero(frames["train"][0][0]) + 21
    assert pitches.min() >= 21 and pitches.max() <= 108


def test_changed_sources_are_prepared_again(data_dir, tmp_path, caplog):
    source = copy_alone(data_dir / "music" / "JSB_Chorales.mat", tmp_path / "source")
    assert len(load_all("jsb_chorales", tmp_path / "tfds", source)["train"]) == 229
    assert len(load_all("jsb_chorales", tmp_path / "tfds", source)["train"]) == 229  # reused as it is
    data = scipy.io.loadmat(source / "JSB_Chorales.mat")
    data["traindata"] = data["traindata"][:, :10]
    scipy.io.savemat(source / "JSB_Chorales.mat", {k: data[k] for k in sources.MAT_VARIABLES.values()})
    with caplog.at_level(logging.WARNING):
        assert len(load_all("jsb_chorales", tmp_path / "tfds", source)["train"]) == 10
    assert "differ from those the prepared data was built from" in caplog.text


def test_a_damaged_source_keeps_the_prepared_copy_and_names_the_file(data_dir, tmp_path):
    source = copy_alone(data_dir / "music" / "JSB_Chorales.mat", tmp_path / "source")
    builder = PolyphonicMusic(config="jsb_chorales", data_dir=tmp_path / "tfds", source_dir=source)
    builder.download_and_prepare()
    prepared = sorted(os.listdir(builder.data_path))
    path = source / "JSB_Chorales.mat"
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    again = PolyphonicMusic(config="jsb_chorales", data_dir=tmp_path / "tfds", source_dir=source)
    with pytest.raises(DataError, match=r"JSB_Chorales.mat changed since .* the prepared copy is kept"):
        again.download_and_prepare()
    assert sorted(os.listdir(builder.data_path)) == prepared
    assert len(tfds.load("polyphonic_music/jsb_chorales", split="validation", data_dir=tmp_path / "tfds",
                         download=False)) == 76


def test_an_empty_split_is_an_error_naming_the_file_and_the_split(data_dir, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    data = scipy.io.loadmat(data_dir / "music" / "JSB_Chorales.mat")
    data["validdata"] = data["validdata"][:, :0]
    scipy.io.savemat(source / "JSB_Chorales.mat", {k: data[k] for k in sources.MAT_VARIABLES.values()})
    builder = PolyphonicMusic(config="jsb_chorales", data_dir=tmp_path / "tfds", source_dir=source,
                              download=False)
    with pytest.raises(DataError, match=r"JSB_Chorales.mat: the valid split has no sequences"):
        builder.download_and_prepare()


def test_prepared_data_is_used_when_the_sources_are_gone(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    source = copy_alone(data_dir / "music" / "JSB_Chorales.mat", tmp_path / "source")
    builder = PolyphonicMusic(config="jsb_chorales", data_dir=tmp_path / "tfds", source_dir=source)
    builder.download_and_prepare()
    shutil.rmtree(source)
    again = PolyphonicMusic(config="jsb_chorales", data_dir=tmp_path / "tfds", source_dir=source,
                            download=False)
    assert again.is_prepared()
    again.download_and_prepare()
    assert again.info.splits["validation"].num_examples == 76


def test_missing_music_file_lists_the_names_expected(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    builder = PolyphonicMusic(config="muse_data", data_dir=tmp_path / "tfds", source_dir=tmp_path,
                              download=False)
    with pytest.raises(sources.DataNotFoundError, match="MuseData.pickle, muse_data.pkl, MuseData.mat"):
        builder.download_and_prepare()


def test_one_config_per_music_set():
    assert [config.name for config in PolyphonicMusic.BUILDER_CONFIGS] == list(sources.MUSIC_SOURCES)
