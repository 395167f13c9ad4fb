"""``python -m tflatent.generate`` on stand-in runs: text printed and saved, music as MIDI and PNG."""

import os

import mido
import standin_model

from tflatent import generate, train

PARTS = standin_model.parts()  # the stand-in model and data, passed to each entry point's main
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")


def trained(tmp_path, name):
    path = str(tmp_path / name)
    assert train.main(["--config", os.path.join(CONFIGS, name + ".yaml"), "--run-dir", path,
                       "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.verbose=0"],
                      **PARTS) == 0
    return path


def test_text_samples_are_printed_and_saved(tmp_path, capsys):
    run = trained(tmp_path, "ptb_lstm_small")
    out = tmp_path / "samples"
    assert generate.main(["--run", run, "--num", "3", "--length", "5", "--out", str(out), "--seed", "1"],
                         **PARTS) == 0
    lines = (out / "samples.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == 5 for line in lines)
    assert capsys.readouterr().out.splitlines()[-3:] == lines


def test_music_samples_are_midi_files_and_pictures(tmp_path):
    run = trained(tmp_path, "jsb_chorales_af_af_small")
    out = tmp_path / "samples"
    assert generate.main(["--run", run, "--num", "2", "--out", str(out), "--temperature", "0.8"], **PARTS) == 0
    assert sorted(os.listdir(out)) == ["sample_000.mid", "sample_000.png", "sample_001.mid", "sample_001.png"]
    assert mido.MidiFile(str(out / "sample_000.mid")).length > 0


def test_bad_requests_are_refused(tmp_path, capsys):
    run = trained(tmp_path, "jsb_chorales_af_af_small")
    assert generate.main(["--run", run, "--num", "0", "--temperature", "0", "--out", str(tmp_path)],
                         **PARTS) == 2
    assert "--num = 0 must be >= 1; --temperature = 0.0 must be > 0" in capsys.readouterr().err
    assert generate.main(["--run", run, "--num", "1", "--length", "100", "--out", str(tmp_path)], **PARTS) == 2
    assert "--length = 100 exceeds the model's max_time = 8" in capsys.readouterr().err
