"""Locating and reading the source files: search order, download fallback, and the clear errors."""

import logging
import pickle
import re
import shutil
import time

import numpy as np
import pytest
import scipy.io

from tflatent.data import sources
from tflatent.data.sources import DataFormatError, DataNotFoundError


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)


def copy_ptb(data_dir, folder, names=tuple(sources.PTB_FILES.values())):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(data_dir / "ptb" / name, folder / name)
    return folder


def naming(path):
    """A regex matching the file's name, for the start of an expected message."""
    return re.escape(str(path))


def write_pickle(path, data):
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


# ------------------------------------------------------------------------------------------ locating


def test_search_order_is_argument_then_environment_then_manual_then_downloads(data_dir, tmp_path,
                                                                              monkeypatch):
    explicit, env, manual = (copy_ptb(data_dir, tmp_path / name) for name in ("explicit", "env", "manual"))
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(env))
    assert sources.locate_ptb(explicit, manual)["train"].parent == explicit
    assert sources.locate_ptb(None, manual)["train"].parent == env
    monkeypatch.delenv(sources.DATA_DIR_ENV)
    assert sources.locate_ptb(None, manual)["valid"].parent == manual
    assert sources.locate_ptb(tmp_path / "nowhere", None, download_dir=manual)["test"].parent == manual


def test_the_shared_layout_and_the_archive_layout_are_found(data_dir, tmp_path):
    files = sources.locate_ptb(data_dir)
    assert files == {split: data_dir / "ptb" / f"ptb.{split}.txt" for split in sources.SPLITS}
    archive = copy_ptb(data_dir, tmp_path / "simple-examples" / "data")
    assert sources.locate_ptb(tmp_path)["train"].parent == archive
    assert sources.locate_music("jsb_chorales", data_dir).parent == data_dir / "music"


def test_a_missing_file_gives_one_error_listing_names_and_places(data_dir, tmp_path):
    partial = copy_ptb(data_dir, tmp_path / "partial", ["ptb.train.txt", "ptb.valid.txt"])
    with pytest.raises(DataNotFoundError) as error:
        sources.locate_ptb(partial, tmp_path / "manual", download=False)
    message = str(error.value)
    for text in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt", f"{partial} has ptb.train.txt, "
                 "ptb.valid.txt but lacks ptb.test.txt", sources.DATA_DIR_ENV + ": not set",
                 str(tmp_path / "manual"), "download: not attempted"):
        assert text in message
    with pytest.raises(DataNotFoundError, match="JSB Chorales.pickle, jsb_chorales.pkl, JSB_Chorales.mat"):
        sources.locate_music("jsb_chorales", tmp_path / "partial", download=False)


def test_offline_download_fails_fast_and_is_listed_with_the_places(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PTB_ARCHIVE_URL", "http://127.0.0.1:9/simple-examples.tgz")
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"download: failed \(.*\)") as error:
        sources.locate_ptb(tmp_path / "empty", download_dir=tmp_path / "downloads", timeout=2.0)
    assert time.perf_counter() - start < 10.0
    assert str(tmp_path / "empty") in str(error.value)
    assert not list((tmp_path / "downloads").glob("**/*.tgz"))


def test_a_download_is_extracted_where_the_next_search_finds_it(data_dir, tmp_path, monkeypatch):
    import tarfile
    staged = copy_ptb(data_dir, tmp_path / "stage" / "simple-examples" / "data")
    with tarfile.open(tmp_path / "archive.tgz", "w:gz") as tar:
        tar.add(staged.parent, arcname="./simple-examples")
    monkeypatch.setattr(sources, "PTB_ARCHIVE_URL", (tmp_path / "archive.tgz").as_uri())
    files = sources.locate_ptb(download_dir=tmp_path / "downloads")
    assert files["train"] == tmp_path / "downloads" / "ptb" / "ptb.train.txt"
    assert files["train"].read_bytes() == (data_dir / "ptb" / "ptb.train.txt").read_bytes()
    assert sources.locate_ptb(download_dir=tmp_path / "downloads", download=False) == files


def test_unknown_music_set_is_an_error():
    with pytest.raises(ValueError, match="choose one of: jsb_chorales, nottingham, piano_midi, muse_data"):
        sources.locate_music("bach")


def test_fingerprint_warns_when_a_known_file_differs(data_dir, tmp_path, caplog):
    assert sources.fingerprint([data_dir / "music" / "JSB_Chorales.mat"]) == {
        "JSB_Chorales.mat": sources.KNOWN_SHA256["JSB_Chorales.mat"]}
    changed = tmp_path / "ptb.valid.txt"
    changed.write_text(" a b\n")
    with caplog.at_level(logging.WARNING):
        sources.fingerprint([changed])
    assert "differs from the upstream file" in caplog.text and str(changed) in caplog.text


# --------------------------------------------------------------------------------------------- PTB


def test_ptb_lines_are_stripped_and_complete(data_dir):
    lines = sources.read_ptb_text(data_dir / "ptb" / "ptb.valid.txt")
    assert len(lines) == 3370
    assert lines[0] == "consumers may want to move their telephones a little closer to the tv set"
    assert all(line == line.strip() for line in lines)


def test_truncated_ptb_file_is_an_error_naming_it(data_dir, tmp_path):
    path = tmp_path / "ptb.valid.txt"
    path.write_bytes((data_dir / "ptb" / "ptb.valid.txt").read_bytes()[:1000])
    with pytest.raises(DataFormatError, match=naming(path) + " ends in the middle of a line: .* truncated"):
        sources.read_ptb_text(path)
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match=naming(path) + " is empty"):
        sources.read_ptb_text(path)


def test_ptb_file_of_the_wrong_layout_is_an_error_naming_it(data_dir, tmp_path):
    path = tmp_path / "ptb.train.txt"
    shutil.copy(data_dir / "ptb" / "ptb.char.valid.txt", path)
    with pytest.raises(DataFormatError, match=naming(path) + " has the character-level layout"):
        sources.read_ptb_text(path)
    shutil.copy(data_dir / "music" / "JSB_Chorales.mat", path)
    with pytest.raises(DataFormatError, match=naming(path) + " is not the word-level PTB text"):
        sources.read_ptb_text(path)


# ------------------------------------------------------------------------------------------- music


def test_jsb_from_the_mat_file_and_from_the_pickle_are_identical(data_dir):
    from_mat = sources.read_music(data_dir / "music" / "JSB_Chorales.mat")
    from_pickle = sources.read_music(data_dir / "music" / "jsb-chorales-quarter.pkl")
    for split, size in zip(sources.SPLITS, (229, 76, 77)):
        assert len(from_mat[split]) == len(from_pickle[split]) == size
        for a, b in zip(from_mat[split], from_pickle[split]):
            assert a.dtype == b.dtype == np.uint8 and a.shape[1] == 88
            np.testing.assert_array_equal(a, b)


def test_nottingham_split_sizes(data_dir):
    rolls = sources.read_music(data_dir / "music" / "Nottingham.mat")
    assert [len(rolls[split]) for split in sources.SPLITS] == [694, 173, 170]


def test_pickle_frames_become_88_columns_at_pitch_minus_21(tmp_path):
    path = write_pickle(tmp_path / "tiny.pickle", {"train": [[(21, 108), (), (60,)]], "valid": [[(60,)]],
                                                    "test": [[(61,)]]})
    roll = sources.read_music(path)["train"][0]
    assert roll.shape == (3, 88)
    assert np.flatnonzero(roll[0]).tolist() == [0, 87]
    assert roll[1].sum() == 0 and np.flatnonzero(roll[2]).tolist() == [39]


@pytest.mark.parametrize("pitch", [20, 109])
def test_a_pitch_outside_the_piano_names_file_sequence_and_step(tmp_path, pitch):
    path = write_pickle(tmp_path / "bad.pickle", {"train": [[(60,)], [(60,), (62, pitch)]], "valid": [],
                                                   "test": []})
    message = f": train sequence 1 step 1 has pitch {pitch}, outside the piano range 21..108"
    with pytest.raises(DataFormatError, match=naming(path) + message):
        sources.read_music(path)


@pytest.mark.parametrize("name", ["JSB_Chorales.mat", "jsb-chorales-quarter.pkl"])
def test_truncated_music_file_is_an_error_naming_it(data_dir, tmp_path, name):
    path = tmp_path / name
    path.write_bytes((data_dir / "music" / name).read_bytes()[:5000])
    with pytest.raises(DataFormatError, match=naming(path) + " cannot be read .* the file is truncated"):
        sources.read_music(path)


def test_music_files_of_the_wrong_layout_are_errors_naming_them(tmp_path):
    mat = tmp_path / "wrong.mat"
    scipy.io.savemat(mat, {"train": np.zeros((3, 88))})
    message = " has the wrong layout: it lacks the variables traindata, validdata, testdata"
    with pytest.raises(DataFormatError, match=naming(mat) + message):
        sources.read_music(mat)
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros((4, 89), np.uint8)
    scipy.io.savemat(mat, {"traindata": cells, "validdata": cells, "testdata": cells})
    with pytest.raises(DataFormatError, match=naming(mat) + r": traindata cell 0 has shape \(4, 89\)"):
        sources.read_music(mat)
    pkl = write_pickle(tmp_path / "wrong.pickle", {"train": [], "test": []})
    message = " has the wrong layout: expected a dict with keys train, valid, test"
    with pytest.raises(DataFormatError, match=naming(pkl) + message):
        sources.read_music(pkl)
    pkl = write_pickle(tmp_path / "object.pickle", {"train": [], "valid": [], "test": [logging.Logger]})
    with pytest.raises(DataFormatError, match=naming(pkl) + " cannot be read .*refusing to load logging.Logg"):
        sources.read_music(pkl)
