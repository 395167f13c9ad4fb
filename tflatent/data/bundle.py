"""``load_dataset``: a config's data set as a :class:`DataBundle` (splits, vocabulary, p(T), batches).

    bundle = load_dataset(config.data, seed=0)
    for x, lengths in bundle.batches("train", training=True): ...   # or bundle.train()

The data set is prepared by its TFDS builder (:mod:`tflatent.data.ptb_char`,
:mod:`tflatent.data.polyphonic_music`) into ``config.tfds_dir`` on the first load and reused on later
loads (prepared again when the source files change; processes that load at once, such as runs started
together on a new machine, prepare it one at a time under a lock file in the TFDS directory, and the
later ones reuse what the first wrote), then read into memory: PTB is 5 MB of tokens,
the music sets at most a few tens of MB of piano rolls.

Derived quantities, as the reference computed them (docs/reference.md §2.2, §5.3), always from the full splits
(``train_limit``/``eval_limit`` only shorten what is batched, so a small run sees the same model sizes):

- ``max_time``, the size of the position features: PTB the longest sequence of train + valid;
  music ``int(1.25 · longest of train + valid)``; or ``config.max_time`` when set.
- ``length_prior``: p(T) from the lengths of ``config.length_prior_splits``, add-
  ``config.length_prior_smoothing`` smoothing.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tflatent.config import MUSIC_DATASETS, DataConfig
from tflatent.data import sources
from tflatent.data.builder import TFDS_SPLITS
from tflatent.data.length_prior import LengthPrior
from tflatent.data.pipeline import make_batches
from tflatent.data.polyphonic_music import PolyphonicMusic
from tflatent.data.ptb_char import PtbChar, PtbCharConfig
from tflatent.data.vocabulary import PAD_ID, UNK_ID, CharVocabulary
from tflatent.errors import DataError

logger = logging.getLogger(__name__)

MUSIC_MAX_TIME_FACTOR = 1.25  # music max_time = int(1.25 · longest train/valid piece), docs/reference.md §2.2
_READ_BATCH = 4096  # examples per ragged batch when reading a split into memory


class DataBundle:
    """One data set in memory: its splits, vocabulary (text), ``max_time``, p(T) and batching.

    Text: ``x`` is ``[B, T]`` int32 ids (``pad_id`` = 0 beyond each length). Music: ``x`` is
    ``[B, T, 88]`` float32 0/1 frames (zeros beyond each length). ``lengths`` is ``[B]`` int32.
    """

    def __init__(self, *, name: str, config: DataConfig, seed: int, splits: dict[str, tf.RaggedTensor],
                 dropped: dict[str, int], vocabulary: Optional[CharVocabulary], max_time: int,
                 length_prior: LengthPrior, info: tfds.core.DatasetInfo):
        self.name = name
        self.config = config
        self.seed = seed
        self.info = info
        self.max_time = max_time
        self.length_prior = length_prior
        self.is_music = vocabulary is None
        self.vocabulary = vocabulary  # text: the CharVocabulary (tokens, encode, decode); music: None
        self._splits = splits
        self._dropped = dropped

    @property
    def vocab(self) -> Optional[list[str]]:
        """Text: id → token string (``vocab[0]`` = "<pad>", ``vocab[1]`` = "<unk>"); music: None."""
        return None if self.is_music else list(self.vocabulary.tokens)

    @property
    def vocab_size(self) -> int:
        """Text: the number of ids (51 for PTB); music: the frame width (88)."""
        return sources.NUM_PITCHES if self.is_music else len(self.vocabulary)

    @property
    def pad_id(self) -> Optional[int]:
        return None if self.is_music else PAD_ID

    @property
    def unk_id(self) -> Optional[int]:
        return None if self.is_music else UNK_ID

    def _split(self, split: str) -> tf.RaggedTensor:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(self._splits)}")
        return self._splits[split]

    def num_examples(self, split: str) -> int:
        """The number of examples batched from ``split`` (after the length filter and the limits)."""
        return int(self._split(split).nrows())

    def lengths(self, split: str) -> np.ndarray:
        """[num_examples] int32 true lengths of the examples of ``split``, in source order."""
        return self._split(split).row_lengths().numpy().astype(np.int32)

    def num_dropped(self, split: str) -> int:
        """How many sentences of the full ``split`` the length filter dropped (0 for music)."""
        self._split(split)
        return self._dropped[split]

    def batches(self, split: str, training: bool, batch_size: Optional[int] = None,
                seed: Optional[int] = None, repeat: bool = False) -> tf.data.Dataset:
        """``tf.data`` batches ``(x, lengths)`` of ``split`` (see :mod:`tflatent.data.pipeline`).

        Args:
          split: "train", "valid" or "test".
          training: bucketed and reshuffled every epoch (seeded) if True; sorted by length,
            deterministic and complete (last partial batch kept) if False.
          batch_size: None: ``config.batch_size`` when training, else ``config.eval_batch_size``.
          seed: the training shuffle seed; None: the bundle's seed.
          repeat: repeat forever instead of one pass.
        """
        if batch_size is None:
            batch_size = self.config.batch_size if training else self.config.eval_batch_size
        return make_batches(self._split(split), training=training, batch_size=batch_size,
                            seed=self.seed if seed is None else seed, repeat=repeat,
                            chunk_batches=self.config.bucket_chunk_batches,
                            pad_value=0 if self.is_music else PAD_ID,
                            dtype=tf.float32 if self.is_music else tf.int32,
                            pad_to_multiple=self.config.pad_to_multiple, max_time=self.max_time)

    def train(self, batch_size: Optional[int] = None, seed: Optional[int] = None,
              repeat: bool = False) -> tf.data.Dataset:
        """Training batches: ``batches("train", training=True, ...)``."""
        return self.batches("train", True, batch_size, seed, repeat)

    def valid(self, batch_size: Optional[int] = None, repeat: bool = False) -> tf.data.Dataset:
        """Evaluation batches of the validation split: ``batches("valid", training=False, ...)``."""
        return self.batches("valid", False, batch_size, repeat=repeat)

    def test(self, batch_size: Optional[int] = None, repeat: bool = False) -> tf.data.Dataset:
        """Evaluation batches of the test split: ``batches("test", training=False, ...)``."""
        return self.batches("test", False, batch_size, repeat=repeat)

    def encode(self, text: str) -> np.ndarray:
        """Text only: [len(text)] int32 ids, unknown characters → ``unk_id``."""
        return self._text_vocabulary().encode(text)

    def decode(self, ids) -> str:
        """Text only: the string of ``ids``, padding dropped, ``unk_id`` written as U+FFFD."""
        return self._text_vocabulary().decode(ids)

    def _text_vocabulary(self) -> CharVocabulary:
        if self.is_music:
            raise TypeError(f"{self.name} is music (88-dim frames): it has no vocabulary to encode or "
                            "decode text")
        return self.vocabulary


def make_builder(config: DataConfig) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``config.dataset``, writing into ``config.tfds_dir``."""
    if config.dataset in MUSIC_DATASETS:
        return PolyphonicMusic(config=config.dataset, data_dir=config.tfds_dir, source_dir=config.data_dir)
    if config.dataset == "ptb":
        lengths = PtbCharConfig.for_lengths(config.min_length, config.max_length)
        known = {c.name: c for c in PtbChar.BUILDER_CONFIGS}
        return PtbChar(config=known.get(lengths.name, lengths), data_dir=config.tfds_dir,
                       source_dir=config.data_dir)
    raise ValueError(f"data.dataset = {config.dataset!r} has no builder; choose one of: ptb, "
                     + ", ".join(MUSIC_DATASETS))


def _read_split(builder: tfds.core.DatasetBuilder, split: str, feature: str) -> tf.RaggedTensor:
    """A whole split's ``feature`` as one ragged tensor [N, (T), ...], in source order."""
    dataset = builder.as_dataset(split=TFDS_SPLITS[split], shuffle_files=False,
                                 read_config=tfds.ReadConfig(try_autocache=False))
    parts = list(dataset.map(lambda example: example[feature]).ragged_batch(_READ_BATCH))
    return tf.concat(parts, axis=0)


def _prepared_builder(config: DataConfig) -> tfds.core.DatasetBuilder:
    """``make_builder(config)``, prepared, by one process at a time.

    TFDS writes a data set into a temporary directory and renames it into place, so two processes
    preparing the same data set at once both generate it and the second rename fails. An exclusive lock
    on ``<tfds_dir>/.<dataset>.lock`` serialises preparation; the builder is made under the lock, so a
    process that waited sees (and reuses) the data set the first one prepared.
    """
    root = Path(make_builder(config).data_dir_root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{config.dataset}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        builder = make_builder(config)
        builder.download_and_prepare()
    return builder


def load_dataset(config: DataConfig, seed: int = 0) -> DataBundle:
    """Prepares (first time) and loads ``config.dataset``; see the module docstring."""
    builder = _prepared_builder(config)
    is_music = config.dataset in MUSIC_DATASETS
    feature = "frames" if is_music else "tokens"
    full = {split: _read_split(builder, split, feature) for split in sources.SPLITS}
    counts = builder.info.metadata.get("counts")
    dropped = {split: counts[split]["total"] - counts[split]["kept"] if counts else 0 for split in full}

    fit_lengths = {split: full[split].row_lengths().numpy() for split in ("train", "valid")}
    longest = int(max(lengths.max() for lengths in fit_lengths.values()))
    max_time = config.max_time or (int(MUSIC_MAX_TIME_FACTOR * longest) if is_music else longest)
    prior_lengths = np.concatenate([fit_lengths["train"]] + (
        [fit_lengths["valid"]] if config.length_prior_splits == "train_valid" else []))
    limits = {"train": config.train_limit, "valid": config.eval_limit, "test": config.eval_limit}
    splits = {split: rows if limits[split] is None else rows[:limits[split]] for split, rows in full.items()}
    for split, rows in splits.items():
        split_longest = int(tf.reduce_max(rows.row_lengths()))
        if split_longest > max_time and config.max_time:
            raise DataError(f"data.max_time = {max_time} is shorter than the longest {split} sequence "
                            f"({split_longest}); raise it to {split_longest} or more, or leave it null")
        if split_longest > max_time:
            raise DataError(f"the longest {split} sequence ({split_longest}) is longer than max_time = "
                            f"{max_time} "
                            f"derived from train and valid; set data.max_time to {split_longest} or more")
    logger.info("%s: %s; max_time %d", builder.info.full_name, ", ".join(
        f"{split} {int(rows.nrows())} of {int(full[split].nrows())} loaded ({dropped[split]} dropped by "
        "the length filter)" for split, rows in splits.items()), max_time)
    vocabulary = None if is_music else CharVocabulary(builder.info.metadata["vocab"])
    return DataBundle(name=builder.info.full_name, config=config, seed=seed, splits=splits, dropped=dropped,
                      vocabulary=vocabulary, max_time=max_time, info=builder.info,
                      length_prior=LengthPrior(lengths=prior_lengths, max_time=max_time,
                                               smoothing=config.length_prior_smoothing))
