"""Figure 6 of the paper: the conditional prior densities p(z_t | z_<t, T) of AF / AF with H = 2 along a sentence.

::

    python -m pipelines.prior_densities --scale cpu               # trains a small AF / AF, H = 2, then plots
    python -m pipelines.prior_densities --run runs/my_af_af_h2    # plots a trained run (z_size must be 2)

The model is AF / AF on PTB characters with ``model.z_size = 2``: at ``--scale paper`` the paper's
widths (``configs/ptb_af_af.yaml``), at ``--scale cpu`` the CPU widths (``configs/ptb_af_af_small.yaml``)
and a short schedule (``CPU_SCHEDULE``: a few hundred steps, β ≈ 0 for the first epochs so that q(z|x)
learns to carry the characters before the KL term applies, validation on 300 sentences, no IS NLL).
Training is ``tflatent.train.main`` in this process (one model, so no state to isolate); a finished run
in ``<out>/run`` is reused.

The sentence is the first PTB validation sentence containing "business groups" (the paper's context:
"following the continuous representation for 'business'"), else the first containing ``--word``, or
``--sentence``. For the window " groups " (a space, the word, a space: the paper's "_groups_"), each
panel shows log p(z_t | z_<t, T) on a 2-D grid for one character t, where z_<t is the posterior mean
μ(x) of the whole sentence (the paper samples z ~ q(z|x); ``--sample`` does that), computed as

    context h̃_t = ``prior._parallel_context(z[None], T)``[0, t]     (the AF-in-time LSTM over z_<t, one pass)
    log p(z_t = g | z_<t, T) = ``prior.flow.log_prob(g, h̃_t)`` for every grid point g.

Each panel's range covers the 0.5–99.5 % quantiles of 4,000 draws from that conditional and the plotted
z_t, so panels have their own scales. The plotted z_t is marked with a red cross; panel titles give the
character, the number of modes found on the grid (maxima of their 5 × 5 cells above ``--mode-threshold``
of the panel's peak) and the density at z_t relative to the peak. Writes ``<out>/prior_densities.png`` and
``<out>/prior_densities.json`` (sentence, window, per panel: z_t, range, modes, the log-density grid).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from pipelines import provenance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"paper": os.path.join(REPO, "configs", "ptb_af_af.yaml"),
           "cpu": os.path.join(REPO, "configs", "ptb_af_af_small.yaml")}
H2 = ["model.z_size=2"]
CPU_SCHEDULE = ["train.epochs=8", "train.steps_per_epoch=75", "train.initial_kl_zero=4", "train.kl_rampup_time=3",
                "train.nll_every=0", "data.eval_limit=300"]
PREFERRED_PHRASE = "business groups"


def find_sentence(sentences, word):
    """The first sentence holding the paper's phrase, else the first holding ``word`` as a word."""
    for phrase in (PREFERRED_PHRASE, word):
        for sentence in sentences:
            if f" {phrase} " in f" {sentence} ":
                return sentence
    raise ValueError(f"no validation sentence contains the word {word!r}; pass --word or --sentence")


def window_steps(sentence, word):
    """The steps of " word " in ``sentence`` (a space before and after where the sentence has them)."""
    padded = f" {sentence} "
    start = padded.index(f" {word} ")  # in the padded string, so step = index − 1
    first = max(start - 1, 0)
    last = min(start + len(word), len(sentence) - 1)
    return list(range(first, last + 1))


def count_modes(density, threshold, neighbourhood=5):
    """Local maxima of a 2-D grid (the largest value in their ``neighbourhood`` × ``neighbourhood`` cells)
    that exceed ``threshold`` × the grid's maximum, as (row, column) centres."""
    import scipy.ndimage
    peaks = (density == scipy.ndimage.maximum_filter(density, size=neighbourhood, mode="nearest")) & \
        (density > threshold * density.max())
    labels, count = scipy.ndimage.label(peaks)  # a flat top of equal cells counts once
    centres = scipy.ndimage.center_of_mass(peaks, labels, range(1, count + 1))
    return [tuple(map(float, c)) for c in centres]


def conditional_densities(model, ids, steps, grid, num_draws, sample, seed):
    """Per step t in ``steps``: the plotted z_t, the grid axes and log p(g | z_<t, T) on the grid."""
    import tensorflow as tf
    x = tf.constant(ids[None], tf.int32)
    lengths = tf.constant([len(ids)], tf.int32)
    mu, logvar = model.inference_net(x, lengths, training=False)  # [1, T, 2] each
    z = model.inference_net.sample(mu, logvar, 1, seed=seed)[0][0] if sample else mu  # [1, T, 2]
    context = model.prior._parallel_context(z[None], lengths, training=False)[0, 0]  # [T, U]
    panels = []
    for t in steps:
        h = context[t]
        eps = tf.random.stateless_normal([num_draws, 2], seed=[seed, t])
        draws, _ = model.prior.flow.forward(eps, tf.broadcast_to(h, [num_draws, h.shape[-1]]))
        z_t = z[0, t].numpy()
        points = np.concatenate([draws.numpy(), z_t[None]])
        low, high = np.quantile(points, 0.005, axis=0), np.quantile(points, 0.995, axis=0)
        low, high = np.minimum(low, z_t), np.maximum(high, z_t)
        margin = 0.1 * (high - low) + 1e-3
        axes = [np.linspace(low[d] - margin[d], high[d] + margin[d], grid) for d in range(2)]
        mesh = np.stack(np.meshgrid(axes[0], axes[1]), axis=-1).reshape(-1, 2).astype(np.float32)
        log_p = model.prior.flow.log_prob(mesh, tf.broadcast_to(h, [len(mesh), h.shape[-1]])).numpy()
        at_z = float(model.prior.flow.log_prob(z_t[None], h[None]).numpy()[0])
        panels.append({"t": t, "axes": axes, "log_density": log_p.reshape(grid, grid), "z": z_t,
                       "log_density_at_z": at_z})
    return panels


def describe(panels, sentence, threshold):
    """Adds to each panel its character, modes (in z coordinates) and the density at z_t relative to the peak."""
    for panel in panels:
        density = np.exp(panel["log_density"] - panel["log_density"].max())
        rows_cols = count_modes(density, threshold)
        axes = panel["axes"]
        panel["char"] = sentence[panel["t"]]
        panel["modes"] = [[float(np.interp(c, np.arange(len(axes[0])), axes[0])),
                           float(np.interp(r, np.arange(len(axes[1])), axes[1]))] for r, c in rows_cols]
        # The peak is the grid's highest value or the value at z_t, whichever is higher: z_t lies off the
        # grid's points, so on a coarse grid its density may exceed every grid point's.
        peak = max(panel["log_density"].max(), panel["log_density_at_z"])
        panel["density_at_z_over_peak"] = float(np.exp(panel["log_density_at_z"] - peak))
    return panels


def plot(path, panels, sentence, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        (xs, ys), density = panel["axes"], np.exp(panel["log_density"] - panel["log_density"].max())
        ax.imshow(density, origin="lower", extent=[xs[0], xs[-1], ys[0], ys[-1]], aspect="auto", cmap="viridis")
        ax.plot(*panel["z"], "x", color="red", markersize=9, markeredgewidth=2)
        shown = panel["char"].replace(" ", "_")
        before = sentence[max(0, panel["t"] - 12):panel["t"]].replace(" ", "_")
        ax.set_title(f"t={panel['t']} '{shown}' after '…{before}'\n{len(panel['modes'])} mode(s), "
                     f"p(z_t)/peak = {panel['density_at_z_over_peak']:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_if_needed(args):
    """The run directory to plot: ``--run`` as given, else ``<out>/run``, trained unless finished."""
    if args.run:
        return args.run
    from tflatent import config as config_lib
    from tflatent import train
    run = os.path.join(args.out, "run")
    overrides = H2 + (CPU_SCHEDULE if args.scale == "cpu" else []) + args.set
    config = config_lib.load(CONFIGS[args.scale], overrides)
    summary_path = os.path.join(run, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("status") == "completed" and summary.get("epochs_completed", 0) >= config.train.epochs:
            print(f"{run}: finished run, reused")
            return run
    argv = ["--config", CONFIGS[args.scale], "--run-dir", run]
    for override in overrides:
        argv += ["--set", override]
    if train.main(argv) != 0:
        raise SystemExit(f"training {run} failed; see the messages above")
    return run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipelines.prior_densities", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="cpu", choices=tuple(CONFIGS))
    parser.add_argument("--run", help="a trained AF / AF run with model.z_size = 2 (skips training)")
    parser.add_argument("--out", help="output directory (default: outputs/prior_densities_<scale>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for the training run (repeatable)")
    parser.add_argument("--word", default="groups", help="the word whose characters are plotted")
    parser.add_argument("--sentence", help="a sentence to use instead of a PTB validation sentence")
    parser.add_argument("--sample", action="store_true", help="z ~ q(z|x) instead of its mean")
    parser.add_argument("--grid", type=int, default=120, help="grid points per axis")
    parser.add_argument("--draws", type=int, default=4000, help="prior draws per panel for its range")
    parser.add_argument("--mode-threshold", type=float, default=0.25,
                        help="a local maximum counts as a mode above this fraction of the panel's peak")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join("outputs", f"prior_densities_{args.scale}")
    if args.grid < 3 or args.draws < 2:
        parser.error("--grid must be >= 3 and --draws >= 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    os.makedirs(args.out, exist_ok=True)
    run = train_if_needed(args)

    from tflatent import data
    from tflatent.data import sources
    from tflatent.training.run_dir import RunDir, restore_model
    config = RunDir(run).load_config()
    if config.data.dataset != "ptb" or config.model.type != "flow" or config.model.z_size != 2 \
            or config.model.time_flow != "af":
        raise SystemExit(f"{run} is not an AF-in-time flow model on ptb with model.z_size = 2 "
                         f"(it has {config.data.dataset}, {config.model.type}, time_flow {config.model.time_flow}, "
                         f"z_size {config.model.z_size}); train one with --scale, or pass such a run")
    bundle = data.load_dataset(config.data, config.train.seed)  # max_time and p(T) ignore the limits
    model, checkpoint = restore_model(RunDir(run), bundle)
    if args.sentence:
        sentence = args.sentence.strip()
    else:
        with open(sources.locate_ptb(config.data.data_dir, download=False)["valid"]) as f:
            sentence = find_sentence((line.strip() for line in f), args.word)
    if len(sentence) > bundle.max_time:
        raise SystemExit(f"the sentence has {len(sentence)} characters; the model takes at most {bundle.max_time}")
    steps = window_steps(sentence, args.word)
    panels = conditional_densities(model, bundle.encode(sentence), steps, args.grid, args.draws, args.sample,
                                   args.seed)
    describe(panels, sentence, args.mode_threshold)

    png = os.path.join(args.out, "prior_densities.png")
    z_name = "z ~ q(z|x)" if args.sample else "z = posterior mean"
    plot(png, panels, sentence, f"AF / AF, H = 2: p(z_t | z_<t, T) along '{sentence}' ({z_name}; {run})")
    record = {
        "run": run, "checkpoint": checkpoint, "sentence": sentence, "steps": steps, "z": z_name,
        "mode_threshold": args.mode_threshold, "seconds": round(time.time() - started, 1), "png": os.path.abspath(png),
        "machine": provenance.machine(),
        "panels": [{"t": p["t"], "char": p["char"], "z": p["z"].tolist(), "modes": p["modes"],
                    "density_at_z_over_peak": p["density_at_z_over_peak"], "x_axis": p["axes"][0].tolist(),
                    "y_axis": p["axes"][1].tolist(),
                    "log_density": np.round(p["log_density"], 4).tolist()} for p in panels]}
    with open(os.path.join(args.out, "prior_densities.json"), "w") as f:
        json.dump(record, f)
    for p in panels:
        print(f"t={p['t']:3d} {p['char']!r}: {len(p['modes'])} mode(s), z_t = ({p['z'][0]:.3f}, {p['z'][1]:.3f}), "
              f"p(z_t)/peak = {p['density_at_z_over_peak']:.2f}")
    print(f"written to {png} and {os.path.join(args.out, 'prior_densities.json')} ({record['seconds']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
