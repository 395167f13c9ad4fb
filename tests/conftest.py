"""Shared fixtures: the real data folder (found as the builders find it), data sets prepared once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRED_FILES = ("ptb/ptb.train.txt", "ptb/ptb.valid.txt", "ptb/ptb.test.txt", "music/JSB_Chorales.mat",
                  "music/Nottingham.mat", "music/jsb-chorales-quarter.pkl")


def data_places() -> list[tuple[str, Path | None]]:
    """Where the tests look for the real data, in the builders' order (tflatent.data.sources.search_places):
    ``$TFLATENT_DATA_DIR``, a ``shared/data`` beside the checkout, then TFDS's manual folder."""
    env = os.environ.get("TFLATENT_DATA_DIR")
    tfds_root = Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")
    return [("$TFLATENT_DATA_DIR", Path(env).expanduser() if env else None),
            ("shared/data beside the checkout",
             Path(__file__).resolve().parents[1].parent / "shared" / "data"),
            ("the TFDS manual folder", tfds_root / "downloads" / "manual")]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The first place of :func:`data_places` holding every required file. Fails (never skips) with one
    message listing each place tried and what it lacked."""
    tried = []
    for description, path in data_places():
        if path is None:
            tried.append(f"{description}: not set")
            continue
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if not missing:
            return path
        tried.append(f"{description} ({path}): lacks {', '.join(missing)}")
    pytest.fail("the real data files were not found. Tried: " + "; ".join(tried) + ". Set TFLATENT_DATA_DIR "
                "to a folder holding ptb/ptb.{train,valid,test}.txt and music/ (JSB_Chorales.mat, "
                "Nottingham.mat, "
                "jsb-chorales-quarter.pkl); the sources are listed in the README", pytrace=False)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    """A TFDS data_dir shared by the session, so each data set is prepared once."""
    return tmp_path_factory.mktemp("tensorflow_datasets")


@pytest.fixture(scope="session")
def ptb_bundle(data_dir, tfds_dir):
    """The full PTB characters (prepared on first use, about 5 s)."""
    from tflatent.config import DataConfig
    from tflatent.data import load_dataset
    return load_dataset(DataConfig(dataset="ptb", data_dir=str(data_dir), tfds_dir=str(tfds_dir)), seed=0)


@pytest.fixture(scope="session")
def jsb_bundle(data_dir, tfds_dir):
    """The JSB chorales, with the reference's add-one smoothing of p(T)."""
    from tflatent.config import DataConfig
    from tflatent.data import load_dataset
    return load_dataset(DataConfig(dataset="jsb_chorales", data_dir=str(data_dir), tfds_dir=str(tfds_dir),
                                   length_prior_smoothing=1.0), seed=0)
