"""The Figure 5 example: wiring, JSON output and the PNG, at tiny settings (a few steps)."""

import json

import numpy as np

from pipelines import figure5_density


def test_runs_and_writes_the_plot(tmp_path, capsys):
    out = tmp_path / "plots" / "figure5.png"
    result = figure5_density.main(["--steps", "3", "--out", str(out), "--seed", "1", "--hidden-units", "8",
                                   "--train-size", "500", "--test-size", "200", "--grid", "16"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("test_nll_nlsq", "test_nll_affine", "test_nll_true_density"):
        assert np.isfinite(result[key])
    assert result["test_nll_true_density"] < min(result["test_nll_nlsq"], result["test_nll_affine"])


def test_mixture_log_prob_is_normalised():
    axis = np.linspace(-8, 8, 801)
    points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    mass = np.exp(figure5_density.mixture_log_prob(points)).sum() * (axis[1] - axis[0]) ** 2
    assert abs(mass - 1.0) < 1e-6
