"""Data: TFDS builders (``ptb_char``, ``polyphonic_music``), ``tf.data`` batching and p(T).

Importing this package registers the builders with TFDS, so ``tfds.load("ptb_char", ...)`` and
``tfds.load("polyphonic_music/jsb_chorales", ...)`` work. Most callers need only::

    from tflatent.data import load_dataset
    bundle = load_dataset(config.data, seed=0)
"""

from tflatent.data.bundle import DataBundle, load_dataset, make_builder
from tflatent.data.length_prior import LengthPrior
from tflatent.data.polyphonic_music import PolyphonicMusic
from tflatent.data.ptb_char import PtbChar, PtbCharConfig
from tflatent.data.sources import DataFormatError, DataNotFoundError
from tflatent.data.vocabulary import CharVocabulary

__all__ = ["CharVocabulary", "DataBundle", "DataFormatError", "DataNotFoundError", "LengthPrior",
           "PolyphonicMusic", "PtbChar", "PtbCharConfig", "load_dataset", "make_builder"]
