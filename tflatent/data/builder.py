"""A TFDS builder over local source files that notices when those files change.

TFDS prepares a data set once and then reuses it. Our builders read files found on disk
(:mod:`tflatent.data.sources`), so they record each source file's sha256 in the data set's metadata
and, when the prepared data set exists but the files found now differ, prepare it again::

    builder = PtbChar(data_dir=tfds_dir, source_dir="/path/to/shared/data")
    builder.download_and_prepare()   # generates, or reuses when the sources are unchanged

``is_prepared()`` is False in that case, so ``tfds.load`` prepares the data again too. The prepared copy
is moved aside first and put back when the new sources cannot be prepared (a truncated file): the
error names the changed file and the good copy is kept. When the sources cannot be found (only the
prepared data set is there), the prepared data is used as it is.

The TFDS splits are named ``train``, ``validation`` and ``test`` (:data:`TFDS_SPLITS`), TFDS's
convention; the rest of the package, the source files and the configs call the second ``valid``. A
split without examples is an error naming the source file. To force a
rebuild, pass ``download_config=tfds.download.DownloadConfig(download_mode=
tfds.GenerateMode.REUSE_CACHE_IF_EXISTS)`` or delete ``<data_dir>/<name>``.

Builder keyword arguments (also through ``tfds.load(..., builder_kwargs=...)``): ``source_dir`` (the
first place searched for the files), ``download`` (whether a download may be tried when the files are
nowhere on disk) and ``download_timeout`` (seconds per socket operation).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import tensorflow_datasets as tfds

from tflatent.data import sources

logger = logging.getLogger(__name__)

TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # our name -> TFDS's


class SourceFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of ``PtbChar`` and ``PolyphonicMusic``: locating, fingerprinting and reusing sources."""

    def __init__(self, *, source_dir: Optional[str] = None, download: bool = True,
                 download_timeout: float = sources.DOWNLOAD_TIMEOUT, **kwargs):
        self.source_dir = None if source_dir is None else str(source_dir)
        self.allow_download = download
        self.download_timeout = download_timeout
        super().__init__(**kwargs)
        # Keeps the extra arguments when TFDS pickles and re-creates the builder.
        self._original_state.update(source_dir=self.source_dir, download=download,
                                    download_timeout=download_timeout)
        self._source_download_dir = Path(self.data_dir_root) / "downloads"
        self._source_manual_dir = self._source_download_dir / "manual"
        self._stale: Optional[bool] = None  # whether the prepared data predates the sources; None: unchecked

    @abc.abstractmethod
    def _locate(self, manual_dir: Optional[Path], download_dir: Optional[Path],
                download: bool) -> list[Path]:
        """The source files (see :mod:`tflatent.data.sources`); raises DataNotFoundError."""

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
        """TFDS's ``download_and_prepare``, re-preparing when the source files changed."""
        download_config = download_config or tfds.download.DownloadConfig(try_download_gcs=False)
        downloads = Path(download_dir or self.data_dir_root / "downloads")
        manual = Path(download_config.manual_dir or downloads / "manual")
        if (downloads, manual) != (self._source_download_dir, self._source_manual_dir):
            self._source_download_dir, self._source_manual_dir, self._stale = downloads, manual, None
        reuse = download_config.download_mode == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        if not (reuse and self.data_path.exists() and self._sources_changed()):
            super().download_and_prepare(download_dir=download_dir, download_config=download_config, **kwargs)
            self._stale = False
            return
        changed = self._changed_files()
        download_config = dataclasses.replace(
            download_config, download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
        kept = Path(str(self.data_path) + ".previous")
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(self.data_path, kept)
        try:
            super().download_and_prepare(download_dir=download_dir, download_config=download_config, **kwargs)
        except sources.DataError as err:
            shutil.rmtree(self.data_path, ignore_errors=True)
            os.replace(kept, self.data_path)
            raise sources.DataFormatError(f"{changed} changed since {self.data_path} was prepared and cannot "
                                          "be "
                                          f"prepared again ({err}); the prepared copy is kept: restore the "
                                          "file, or point data.data_dir elsewhere") from err
        shutil.rmtree(kept, ignore_errors=True)
        self._stale = False

    def _changed_files(self) -> str:
        """The source files whose fingerprints differ from those recorded at preparation."""
        recorded = self.info.metadata.get("sources") or {}
        try:
            current = sources.fingerprint(
                self._locate(self._source_manual_dir, self._source_download_dir, False))
        except sources.DataNotFoundError:
            return "the source files"
        names = [name for name, digest in current.items() if recorded.get(name) != digest]
        return ", ".join(names) or "the source files"

    @staticmethod
    def _checked_splits(splits: dict, path) -> dict:
        """``splits`` ({our split name: examples}) under TFDS's names, refusing an empty split."""
        for split, examples in splits.items():
            if not len(examples):
                raise sources.DataFormatError(f"{path}: the {split} split has no sequences; the file is "
                                              "truncated or not the data set's file")
        return {TFDS_SPLITS[split]: examples for split, examples in splits.items()}

    def is_prepared(self) -> bool:
        """Prepared, from the source files found now (``tfds.load`` prepares again when False)."""
        return self.data_path.exists() and super().is_prepared() and not self._sources_changed()

    def _sources_changed(self) -> bool:
        if self._stale is None:
            self._stale = self._compare_sources()
        return self._stale

    def _compare_sources(self) -> bool:
        try:
            paths = self._locate(self._source_manual_dir, self._source_download_dir, download=False)
        except sources.DataNotFoundError:
            logger.info("%s: source files not found; using the prepared data in %s as it is",
                        self.info.full_name, self.data_dir)
            return False
        recorded = self.info.metadata.get("sources")
        current = sources.fingerprint(paths)
        if recorded == current:
            return False
        logger.warning("%s: the source files (%s) differ from those the prepared data was built from "
                       "(%s); preparing it again", self.info.full_name, current, recorded)
        return True

    def _source_files(self) -> list[Path]:
        """Locates the sources (downloading if allowed) and records their fingerprints."""
        paths = self._locate(self._source_manual_dir, self._source_download_dir, download=self.allow_download)
        self.info.metadata["sources"] = sources.fingerprint(paths)
        return paths
