"""Piano rolls (``[T, 88]`` binary frames, column k = MIDI pitch k + 21) to MIDI files and pictures.

The music data sets are sequences of frames, each the set of pitches sounding during one time step
(docs/reference.md §6.3). A note starts where its column turns on and ends where it turns off, so a pitch held
over consecutive frames is one note; a MIDI file read back with :func:`from_midi` gives the same roll.
The frame duration is not part of the data (JSB Chorales are quarter notes, the others finer), so it
is a parameter: ``seconds_per_frame``, at a fixed tempo of 120 beats per minute.
"""

from __future__ import annotations

import mido
import numpy as np
from matplotlib.figure import Figure

from tflatent.data.sources import MIN_PITCH, NUM_PITCHES

TICKS_PER_BEAT = 480
TEMPO = 500_000  # microseconds per beat: 120 beats per minute, 0.5 s per beat


def _check(roll) -> np.ndarray:
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != NUM_PITCHES:
        raise ValueError(f"a piano roll is [T, {NUM_PITCHES}] (column k = MIDI pitch k + {MIN_PITCH}); "
                         f"got shape {roll.shape}")
    return roll > 0.5


def _ticks_per_frame(seconds_per_frame: float) -> int:
    ticks = round(seconds_per_frame / (TEMPO / 1e6) * TICKS_PER_BEAT)
    if ticks < 1:
        raise ValueError(f"seconds_per_frame = {seconds_per_frame} is shorter than one MIDI tick")
    return ticks


def to_midi(roll, seconds_per_frame: float = 0.25, velocity: int = 80, program: int = 0) -> mido.MidiFile:
    """A one-track MIDI file playing ``roll`` (frames > 0.5 are on) with the General MIDI ``program``."""
    on = _check(roll)
    step = _ticks_per_frame(seconds_per_frame)
    padded = np.pad(on, ((1, 1), (0, 0)))  # off before the first and after the last frame
    changes = np.diff(padded.astype(np.int8), axis=0)  # [T + 1, 88]: +1 note on, −1 note off
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=TEMPO, time=0),
                            mido.Message("program_change", program=program, time=0)])
    last = 0
    for frame, column in sorted(zip(*np.nonzero(changes)), key=lambda fc: (fc[0], changes[fc] > 0)):
        kind = "note_on" if changes[frame, column] > 0 else "note_off"
        pitch = int(column) + MIN_PITCH
        track.append(mido.Message(kind, note=pitch, velocity=velocity if kind == "note_on" else 0,
                                  time=int(frame) * step - last))
        last = int(frame) * step
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    return midi


def write_midi(roll, path: str, seconds_per_frame: float = 0.25) -> str:
    to_midi(roll, seconds_per_frame).save(path)
    return path


def from_midi(midi: mido.MidiFile, seconds_per_frame: float = 0.25) -> np.ndarray:
    """The ``[T, 88]`` float32 roll of a file written by :func:`to_midi` (frames on a fixed grid).

    MIDI has no silent frames after the last note, so T ends with the last note-off.
    """
    step = _ticks_per_frame(seconds_per_frame)
    events, now = [], 0
    for message in mido.merge_tracks(midi.tracks):
        now += message.time
        if message.type in ("note_on", "note_off"):
            events.append((now // step, message.note - MIN_PITCH,
                           message.type == "note_on" and message.velocity > 0))
    length = max((frame for frame, _, _ in events), default=0)
    roll = np.zeros((length, NUM_PITCHES), np.float32)
    started = {}
    for frame, column, is_on in events:
        if is_on:
            started[column] = frame
        elif column in started:
            roll[started.pop(column):frame, column] = 1.0
    return roll


def plot(roll, path: str, title: str = "") -> str:
    """Saves the roll as a PNG: time on x, pitch on y (low at the bottom).

    Draws on a ``Figure`` of its own (matplotlib's object API), so pyplot's state and backend, e.g. a
    notebook's, stay as they are.
    """
    on = _check(roll)
    figure = Figure(figsize=(max(4.0, on.shape[0] / 16), 3.5))
    axes = figure.subplots()
    axes.imshow(on.T, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest",
                extent=(0, on.shape[0], MIN_PITCH - 0.5, MIN_PITCH + NUM_PITCHES - 0.5))
    axes.set_xlabel("frame")
    axes.set_ylabel("MIDI pitch")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
