"""Checkpoints that survive kills and full disks, with records that tell a damaged file.

A checkpoint is a Keras ``*.weights.h5`` file (weights and optimizer state) and a JSON record beside it,
``<path>.json``, holding at least the epoch count, the file's size and its SHA-256. The weights are
serialised in memory first (h5py writing to a full disk reports no error and leaves a truncated file),
then written with :func:`tflatent.atomic_files.write_bytes`; the record is written after the file it
describes. :func:`problem` compares a file with its record, so a truncated or foreign file is found
before Keras fails on it.

:class:`Generations` keeps the newest ``keep`` checkpoints of a folder as ``epoch-NNNN.weights.h5``:
nothing is ever rewritten in place, so a kill at any moment leaves at least the previous generation
whole, and loading takes the newest generation whose record matches its file.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import sys
from typing import Optional

import keras
from keras.src.saving import saving_lib  # H5IOStore and _save_state: the body of Model.save_weights

from tflatent import atomic_files
from tflatent.errors import CheckpointError, DiskError
from tflatent.json_files import read_json, write_json


def weights_bytes(model: keras.Model) -> bytes:
    """The bytes ``model.save_weights`` would write to a ``*.weights.h5`` file, made in memory."""
    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    store.close()
    return buffer.getvalue()


def save(model: keras.Model, path: str, record: dict) -> dict:
    """Writes the weights of ``model`` to ``path``, then ``record`` with the file's size and SHA-256.

    Returns the record written. Raises :class:`tflatent.errors.DiskError` (keeping the previous files)
    when either cannot be written.
    """
    data = weights_bytes(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_files.write_bytes(path, data)
    record = {**record, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_json(record_path(path), record)
    return record


def record_path(path: str) -> str:
    return path + ".json"


def read_record(path: str) -> Optional[dict]:
    """The record beside checkpoint ``path``, or None when there is none (or it is unreadable)."""
    try:
        return read_json(record_path(path))
    except ValueError:  # a record cut short by a writer without atomic renames
        return None


def problem(path: str) -> Optional[str]:
    """Why checkpoint ``path`` cannot be trusted (missing, no record, wrong size or checksum), or None."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    record = read_record(path)
    if record is None or "sha256" not in record:
        return f"{path} has no record {record_path(path)} with its size and checksum"
    size = os.path.getsize(path)
    if size != record["size"]:
        return f"{path} is {size:,} bytes where its record says {record['size']:,} (truncated or replaced)"
    if _sha256(path) != record["sha256"]:
        return f"{path} does not match the checksum in its record (damaged or replaced)"
    return None


def load(model: keras.Model, path: str) -> None:
    """``model.load_weights(path)`` after checking ``path`` against its record when it has one.

    A file without a record (e.g. one made by ``model.save_weights``) is loaded as it is. Raises
    CheckpointError naming the file when it is damaged or unreadable.
    """
    found = problem(path) if read_record(path) is not None else None
    if found:
        raise CheckpointError(found)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        model.load_weights(path)
    except (OSError, RuntimeError) as err:  # h5py's errors for a file that is not HDF5 or is cut short
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]}); it is damaged: use another checkpoint") from err


class Generations:
    """The newest ``keep`` checkpoints of ``directory``, one per epoch, as ``epoch-NNNN.weights.h5``."""

    PATTERN = re.compile(r"epoch-(\d+)\.weights\.h5$")

    def __init__(self, directory: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep = {keep} must be >= 1")
        self.directory = directory
        self.keep = keep

    def path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"epoch-{epoch:04d}.weights.h5")

    def epochs(self) -> list[int]:
        """Epochs with a checkpoint file, newest first (whether or not it is whole)."""
        files = glob.glob(os.path.join(self.directory, "epoch-*.weights.h5"))
        names = (self.PATTERN.search(p) for p in files)
        return sorted((int(m.group(1)) for m in names if m), reverse=True)

    def save(self, model: keras.Model, epoch: int, record: dict) -> dict:
        """Saves generation ``epoch``, then removes those beyond the newest ``keep``.

        A write that fails (DiskError) takes the generation's file with it when its record is missing."""
        try:
            written = save(model, self.path(epoch), {**record, "epoch": epoch})
        except DiskError:
            if read_record(self.path(epoch)) is None and os.path.exists(self.path(epoch)):
                os.remove(self.path(epoch))
            raise
        for old in self.epochs()[self.keep:]:
            for name in (self.path(old), record_path(self.path(old))):
                if os.path.exists(name):
                    os.remove(name)
        return written

    def latest(self, warn: bool = True) -> Optional[tuple[str, dict]]:
        """(path, record) of the newest whole generation, or None; skipped damaged ones are warned about."""
        for epoch in self.epochs():
            path = self.path(epoch)
            found = problem(path)
            if found is None:
                return path, read_record(path)
            if warn:
                print(f"warning: skipping a damaged checkpoint: {found}; using the one before it",
                      file=sys.stderr)
        return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()
