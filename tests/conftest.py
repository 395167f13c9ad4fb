"""Shared fixtures: the real data folder, and data sets prepared once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRED_FILES = ("ptb/ptb.train.txt", "ptb/ptb.valid.txt", "ptb/ptb.test.txt", "music/JSB_Chorales.mat",
                  "music/Nottingham.mat", "music/jsb-chorales-quarter.pkl")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data: ``$TFLATENT_DATA_DIR`` or ``<repo>/../shared/data``. Fails (never skips) if absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("TFLATENT_DATA_DIR") or default)
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        pytest.fail(f"the real data files are missing from {path}: {', '.join(missing)}. Set "
                    "TFLATENT_DATA_DIR to the folder holding ptb/ and music/ (see shared/data/SOURCES.md)",
                    pytrace=False)
    return path


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
