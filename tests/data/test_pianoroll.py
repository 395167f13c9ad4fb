"""Piano rolls to MIDI and back, and to pictures."""

import matplotlib.image
import mido
import numpy as np
import pytest

from tflatent.data import pianoroll


def test_midi_round_trip_gives_the_same_roll(tmp_path):
    rng = np.random.default_rng(0)
    roll = (rng.random((40, 88)) < 0.08).astype(np.float32)
    roll[:, 39] = 1.0  # middle C (pitch 60) held throughout: one note, not forty
    path = pianoroll.write_midi(roll, str(tmp_path / "x.mid"), seconds_per_frame=0.125)
    midi = mido.MidiFile(path)
    np.testing.assert_array_equal(pianoroll.from_midi(midi, seconds_per_frame=0.125), roll)
    middle_c = [m for m in midi.tracks[0] if m.type == "note_on" and m.note == 60]
    assert len(middle_c) == 1
    assert midi.length == pytest.approx(40 * 0.125)


def test_pitches_times_and_rests():
    roll = np.zeros((6, 88), np.float32)
    roll[1:3, 0] = 1  # A0, frames 1-2
    roll[3:5, 87] = 1  # C8, frames 3-4, right after A0 ends
    midi = pianoroll.to_midi(roll, seconds_per_frame=0.5)  # 0.5 s = one beat = 480 ticks
    notes, now = [], 0
    for message in midi.tracks[0]:
        now += message.time
        if message.type in ("note_on", "note_off"):
            notes.append((message.type, message.note, now))
    assert notes == [("note_on", 21, 480), ("note_off", 21, 1440), ("note_on", 108, 1440), ("note_off", 108, 2400)]


def test_bad_rolls_are_rejected():
    with pytest.raises(ValueError, match=r"\[T, 88\].*got shape \(4, 89\)"):
        pianoroll.to_midi(np.zeros((4, 89)))
    with pytest.raises(ValueError, match="shorter than one MIDI tick"):
        pianoroll.to_midi(np.zeros((4, 88)), seconds_per_frame=1e-6)


def test_plot_writes_a_png(tmp_path):
    roll = np.zeros((16, 88), np.float32)
    roll[::2, 40] = 1
    path = pianoroll.plot(roll, str(tmp_path / "x.png"), title="test")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100
