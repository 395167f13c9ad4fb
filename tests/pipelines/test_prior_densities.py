"""pipelines.prior_densities: the sentence and window, mode counting, the plotted densities against the
prior's own per-step log p(z_t | z_<t, T), and a tiny run end to end (train, plot, JSON)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import prior_densities as pd
from tflatent import config as config_lib
from tflatent.models.registry import build_model

TINY = ["model.embedding_size=8", "model.hidden_size=8", "model.prior_rnn_units=8", "model.hidden_flow_units=8",
        "model.hidden_flow_layers=2"]
SENTENCE = "there 's nothing unusual about business groups pushing for more government spending"


def test_the_papers_sentence_is_preferred_and_the_window_is_space_word_space():
    sentences = ["two groups met", SENTENCE, "groups"]
    assert pd.find_sentence(sentences, "groups") == SENTENCE
    assert pd.find_sentence(["the groupsters", "two groups met"], "groups") == "two groups met"
    with pytest.raises(ValueError, match="no validation sentence contains the word 'cats'"):
        pd.find_sentence(sentences[:1], "cats")
    steps = pd.window_steps(SENTENCE, "groups")
    assert "".join(SENTENCE[t] for t in steps) == " groups "
    assert "".join("groups of"[t] for t in pd.window_steps("groups of", "groups")) == "groups "
    assert "".join("two groups"[t] for t in pd.window_steps("two groups", "groups")) == " groups"


def test_count_modes_finds_each_bump_once():
    axis = np.linspace(-4, 4, 81)
    x, y = np.meshgrid(axis, axis)
    bump = lambda cx, cy: np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.5)  # noqa: E731
    assert len(pd.count_modes(bump(0, 0), 0.05)) == 1
    two = pd.count_modes(bump(-2, 0) + bump(2, 1), 0.05)
    assert len(two) == 2 and sorted(round(c) for _, c in two) == [20, 60]  # (row, column) grid indices
    assert len(pd.count_modes(bump(-2, 0) + 0.01 * bump(2, 1), 0.05)) == 1
    assert len(pd.count_modes(np.ones((5, 5)), 0.05)) == 1


def test_plotted_densities_are_the_priors_per_step_conditionals(ptb_bundle):
    config = config_lib.load(pd.CONFIGS["cpu"], pd.H2 + TINY)
    keras.utils.set_random_seed(1)
    model = build_model(config, ptb_bundle)
    ids = ptb_bundle.encode(SENTENCE)
    steps = pd.window_steps(SENTENCE, "groups")
    panels = pd.conditional_densities(model, ids, steps, grid=9, num_draws=50, sample=False, seed=0)
    lengths = tf.constant([len(ids)])
    mu, _ = model.inference_net(tf.constant(ids[None]), lengths)
    per_step = model.prior.log_prob(mu, lengths).numpy()[0]  # [T], from the prior's own density pass
    for panel in panels:
        np.testing.assert_allclose(panel["z"], mu.numpy()[0, panel["t"]])
        assert panel["log_density_at_z"] == pytest.approx(per_step[panel["t"]], abs=1e-4)
        assert panel["log_density"].shape == (9, 9) and np.all(np.isfinite(panel["log_density"]))
        (xs, ys), z = panel["axes"], panel["z"]
        assert xs[0] <= z[0] <= xs[-1] and ys[0] <= z[1] <= ys[-1]


def test_tiny_run_trains_then_writes_plot_and_json(tmp_path, data_dir, tfds_dir, capsys):
    argv = ["--out", str(tmp_path), "--grid", "8", "--draws", "20", "--set", f"data.data_dir={data_dir}",
            "--set", f"data.tfds_dir={tfds_dir}", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=1",
            "--set", "data.train_limit=8", "--set", "data.eval_limit=4", "--set", "train.verbose=0"]
    for override in TINY:
        argv += ["--set", override]
    record = pd.main(argv)
    written = json.loads((tmp_path / "prior_densities.json").read_text())
    assert written["sentence"] == SENTENCE and [p["char"] for p in written["panels"]] == list(" groups ")
    assert all(len(p["modes"]) >= 1 and 0 < p["density_at_z_over_peak"] <= 1 for p in written["panels"])
    assert (tmp_path / "prior_densities.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert record["run"] == str(tmp_path / "run")
    assert pd.train_if_needed(pd.parse_args(argv)) == record["run"]  # the finished run is reused
    assert "finished run, reused" in capsys.readouterr().out
