"""``ptb_char``: Penn Treebank sentences as character sequences, prepared as the reference did.

Source: Mikolov's word-level ``ptb.{train,valid,test}.txt`` (the RNNLM ``simple-examples`` archive),
read as characters (``docs/reference.md`` §6.1):

- one example per line, ``line.strip()``; every character is a token, the space included, and
  ``<unk>`` is five characters; no end-of-sentence token (the model is conditioned on T);
- only sentences with ``min_length ≤ len ≤ max_length`` (1..288) are kept, in every split — for PTB
  train keeps 41,740 of 42,068, valid 3,356 of 3,370 and test 3,735 of 3,761. The filter is logged
  when the data set is prepared and its counts are stored in the metadata (``info.metadata["counts"]``);
- the vocabulary (:class:`~tflatent.data.vocabulary.CharVocabulary`, pad = 0, unk = 1, then the
  characters by descending train frequency) is built on the kept training sentences and saved with
  the data set (``info.metadata["vocab"]``): 51 ids for PTB.

Features: ``tokens`` (int32 ids) and ``length``. Examples keep the order of the files, so ``train[:N]``
is the first N kept sentences. ``tfds.load("ptb_char", data_dir=..., builder_kwargs={"source_dir":
"/path/to/shared/data"})`` loads it once ``tflatent.data`` is imported.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from tflatent.data import sources
from tflatent.data.builder import SourceFilesBuilder
from tflatent.data.vocabulary import CharVocabulary

logger = logging.getLogger(__name__)

_CITATION = """@article{marcus1993building,
  title={Building a Large Annotated Corpus of {E}nglish: The {P}enn {T}reebank},
  author={Marcus, Mitchell P. and Santorini, Beatrice and Marcinkiewicz, Mary Ann},
  journal={Computational Linguistics}, volume={19}, number={2}, pages={313--330}, year={1993}}"""


@dataclasses.dataclass(eq=False)
class PtbCharConfig(tfds.core.BuilderConfig):
    """The sentence-length filter, applied to every split."""

    min_length: int = 1
    max_length: int = 288

    @classmethod
    def for_lengths(cls, min_length: int, max_length: int) -> "PtbCharConfig":
        return cls(name=f"length_{min_length}_{max_length}", min_length=min_length, max_length=max_length,
                   description=f"sentences of {min_length}..{max_length} characters in every split")


class PtbChar(SourceFilesBuilder):
    """Penn Treebank (Mikolov's split) as characters; see the module docstring."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Characters of the word-level files; lengths 1..288; pad 0, unk 1.",
                     "1.1.0": "Splits named train, validation and test (was valid)."}
    BUILDER_CONFIGS = [PtbCharConfig.for_lengths(1, 288)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place ptb.train.txt, ptb.valid.txt and ptb.test.txt (the folder data/ of "
        f"{sources.PTB_ARCHIVE_URL}) in the manual folder, in a folder named by "
        f"${sources.DATA_DIR_ENV} or in the builder's source_dir.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Penn Treebank sentences (Mikolov's split) as sequences of characters.",
            features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "length": np.int32,
            }),
            homepage="https://www.fit.vutbr.cz/~imikolov/rnnlm/",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _locate(self, manual_dir: Optional[Path], download_dir: Optional[Path], download: bool) -> list[Path]:
        files = sources.locate_ptb(self.source_dir, manual_dir, download_dir, download=download,
                                   timeout=self.download_timeout)
        return [files[split] for split in sources.SPLITS]

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are located by _source_files (local folders, then a download)
        config = self.builder_config
        kept, counts = {}, {}
        paths = self._source_files()
        for split, path in zip(sources.SPLITS, paths):
            lines = sources.read_ptb_text(path)
            kept[split] = [s for s in lines if config.min_length <= len(s) <= config.max_length]
            counts[split] = {"kept": len(kept[split]), "total": len(lines)}
            dropped = len(lines) - len(kept[split])
            logger.log(logging.WARNING if dropped else logging.INFO,
                       "ptb_char %s: kept %d of %d sentences (%d outside lengths %d..%d dropped)",
                       split, len(kept[split]), len(lines), dropped, config.min_length, config.max_length)
        vocabulary = CharVocabulary.build(kept["train"])
        self.info.metadata.update(vocab=vocabulary.tokens, counts=counts,
                                  min_length=config.min_length, max_length=config.max_length)
        splits = self._checked_splits(kept, paths[0].parent)
        return {split: self._generate_examples(sentences, vocabulary) for split, sentences in splits.items()}

    def _generate_examples(self, sentences: list[str], vocabulary: CharVocabulary):
        for index, sentence in enumerate(sentences):
            yield index, {"tokens": vocabulary.encode(sentence), "length": len(sentence)}
