"""``python -m tflatent.evaluate`` on a stand-in run: the figures, the JSON and the table."""

import json
import os

import pytest
import standin_model

from tflatent import evaluate, train

PARTS = standin_model.parts()  # the stand-in model and data, passed to each entry point's main
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "ptb_af_af_small.yaml")


@pytest.fixture
def run(tmp_path):
    path = str(tmp_path / "run")
    assert train.main(["--config", CONFIG, "--run-dir", path, "--set", "train.epochs=2",
                       "--set", "train.nll_every=1", "--set", "train.steps_per_epoch=null",
                       "--set", "train.verbose=0"], **PARTS) == 0
    return path


def test_evaluate_writes_json_and_prints_a_table(run, capsys):
    assert evaluate.main(["--run", run, "--samples", "3", "--split", "valid"], **PARTS) == 0
    record = json.loads(open(os.path.join(run, "evaluation_valid.json")).read())
    assert (record["split"], record["samples"], record["sequences"]) == ("valid", 3, 12)
    assert record["checkpoint"].endswith("best.weights.h5")
    assert record["bpc"] == pytest.approx(record["nll"] / 0.6931471805599453)
    assert {"elbo", "recon", "kl"} <= record.keys()
    table = capsys.readouterr().out
    assert "bpc" in table and "bits per character" in table and f"{record['nll']:.4f}" in table


def test_evaluate_defaults_to_the_run_settings_and_rejects_bad_input(run, capsys):
    assert evaluate.main(["--run", run, "--checkpoint", "latest"], **PARTS) == 0
    record = json.loads(open(os.path.join(run, "evaluation_test.json")).read())
    assert (record["split"], record["samples"]) == ("test", 30)
    assert record["checkpoint"].endswith(os.path.join("backup", "epoch-0002.weights.h5"))
    assert evaluate.main(["--run", run, "--samples", "0"], **PARTS) == 2
    assert "--samples = 0 must be >= 1" in capsys.readouterr().err
    assert evaluate.main(["--run", os.path.dirname(run)], **PARTS) == 2
    assert "is not a run directory: it has no config.yaml" in capsys.readouterr().err
    assert evaluate.main(["--run", run, "--checkpoint", "gone.weights.h5"], **PARTS) == 2
    assert "'gone.weights.h5' does not exist" in capsys.readouterr().err
