"""Figure 5(c) of the paper: a 5-layer AF flow fitted to a 2-D mixture of four Gaussians, NLSq vs affine.

Both flows are `make_hidden_flow("af", dim=2, context_dim=0, num_layers=5)` with the reference's MADE
sizes (2 hidden layers of 100 units), trained by maximum likelihood with Adam on the same draws.
Prints one JSON object with both test NLLs (nats per point, lower is better), the mixture's own
NLL on the same test points (the floor) and the run time, and writes a PNG with the data and both
learned densities::

    python -m pipelines.figure5_density --steps 3000 --out figure5.png --seed 0
"""

import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tflatent.priors import make_hidden_flow  # noqa: E402

MEANS = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
STD = 0.5
PLOT_LIMIT = 4.0


def sample_mixture(n, rng):
    """n draws of the equal-weight mixture of N(μ_i, 0.5² I) at the four corners (±2, ±2)."""
    return (MEANS[rng.integers(len(MEANS), size=n)] + STD * rng.normal(size=(n, 2))).astype(np.float32)


def mixture_log_prob(x):
    """log p(x) of the mixture, `[N, 2]` → `[N]`."""
    sq = ((x[:, None, :] - MEANS[None]) ** 2).sum(-1) / STD ** 2
    log_components = -0.5 * sq - np.log(2 * np.pi * STD ** 2) - np.log(len(MEANS))
    return np.logaddexp.reduce(log_components, axis=1)


def fit(transform, train, args):
    """Trains one flow by maximum likelihood; returns it."""
    flow = make_hidden_flow("af", dim=2, context_dim=0, num_layers=5, hidden_units=args.hidden_units,
                            transform=transform, name=f"af_{transform}")
    flow.build()
    optimizer = keras.optimizers.Adam(args.learning_rate)
    optimizer.build(flow.trainable_variables)

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(batch))
        grads = tape.gradient(loss, flow.trainable_variables)
        optimizer.apply_gradients(zip(grads, flow.trainable_variables))
        return loss

    rng = np.random.default_rng(args.seed + 1)
    for _ in range(args.steps):
        loss = train_step(train[rng.integers(len(train), size=args.batch_size)])
        if not np.isfinite(loss.numpy()):
            raise FloatingPointError(f"{transform} flow: non-finite training loss {loss.numpy()}; "
                                     f"lower --learning-rate.")
    return flow


def mean_nll(flow, points):
    """Mean −log p(x) over the points, in nats."""
    return float(-np.mean(flow.log_prob(points).numpy()))


def plot(path, train, flows, nlls, grid):
    """Data histogram and the learned densities on [−4, 4]² (one panel each)."""
    axis = np.linspace(-PLOT_LIMIT, PLOT_LIMIT, grid)
    points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2).astype(np.float32)
    fig, axes = plt.subplots(1, 1 + len(flows), figsize=(4 * (1 + len(flows)), 4.4))
    extent = [-PLOT_LIMIT, PLOT_LIMIT, -PLOT_LIMIT, PLOT_LIMIT]
    axes[0].hist2d(train[:, 0], train[:, 1], bins=grid, range=[extent[:2], extent[2:]], cmap="viridis")
    axes[0].set_title("data: mixture of four Gaussians")
    for ax, (name, flow) in zip(axes[1:], flows.items()):
        density = np.exp(flow.log_prob(points).numpy()).reshape(grid, grid)
        ax.imshow(density, origin="lower", extent=extent, cmap="viridis")
        ax.set_title(f"5-layer AF, {name}: test NLL {nlls[name]:.3f}")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per flow")
    parser.add_argument("--out", default="figure5_density.png", help="path of the PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hidden-units", type=int, default=100, help="MADE width (reference: 100)")
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--test-size", type=int, default=20_000)
    parser.add_argument("--grid", type=int, default=200, help="plot resolution per axis")
    args = parser.parse_args(argv)

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, test = sample_mixture(args.train_size, rng), sample_mixture(args.test_size, rng)
    flows = {transform: fit(transform, train, args) for transform in ("nlsq", "affine")}
    nlls = {name: mean_nll(flow, test) for name, flow in flows.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(args.out, train, flows, nlls, args.grid)
    result = {"test_nll_nlsq": nlls["nlsq"], "test_nll_affine": nlls["affine"],
              "test_nll_true_density": float(-np.mean(mixture_log_prob(test))),
              "steps": args.steps, "seed": args.seed, "seconds": round(time.time() - start, 1),
              "png": os.path.abspath(args.out)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
