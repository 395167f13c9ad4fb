"""Export a trained run for serving: ``python -m tflatent.export --run runs/<name> --out saved_models/<name>``.

Writes the next integer version ``<out>/<version>/`` of a SavedModel (never touching an earlier one)
with the signatures ``serving_default`` (sampling), ``log_likelihood``, ``encode`` (flow models) and
``metadata``, the assets ``metadata.json`` and ``config.yaml``, and TF Serving's warm-up records
(:mod:`tflatent.serving.warmup`), so that serving needs neither
tflatent nor the data. The signatures' inputs and outputs (dtypes, shapes), the input checks, the
options, REST examples and how to serve the folder with TF Serving or ``python -m tflatent.serve`` are
in ``docs/serving.md``.

Every signature is traced with the LSTMs' "loop" implementation (``loop_implementation``), whatever
``model.lstm_impl`` says: "auto" on a machine with a GPU would otherwise trace cuDNN ops
(CudnnRNNV3), which a CPU-only TF Serving cannot run. The exported graph runs on a CPU or a GPU.

By default no part of the graph is compiled with XLA: TF Serving refuses XLA-compiled functions
unless started with ``--xla_cpu_compilation_enabled=true`` (and its GPU builds cannot compile them at
all). ``--xla`` compiles the sampler as ``model.generate`` does (the AF priors' loops fused: 28× faster
for JSB AF/AF at T = 256, IAF/SCF 2×), for servers that run XLA: ``python -m tflatent.serve``, or TF
Serving with that flag on a CPU. XLA then compiles once per request shape (batch, T_max), on the first
such request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tflatent import cli
from tflatent import config as config_lib
from tflatent.data.sources import MIN_PITCH, NUM_PITCHES
from tflatent.data.vocabulary import PAD_ID, UNK_ID
from tflatent.layers.lstm import loop_implementation
from tflatent.serving import warmup

FORMAT_VERSION = 1  # of metadata.json
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.yaml"


class ServingModule(tf.Module):
    """The signatures of one model (see the module docstring), holding the model's variables.

    Args:
      model: a built ``LatentFlowModel`` or ``LSTMBaseline`` with its trained weights.
      config: the run's ``tflatent.config.Config``.
      metadata_path, config_path: the asset files (copied into the SavedModel's ``assets/``).
      num_samples, chunk: K importance samples of ``log_likelihood``, drawn ``chunk`` at a time.
      xla: compile ``serving_default``'s sampler with XLA (module docstring).
    """

    def __init__(self, model: keras.Model, config: config_lib.Config, metadata_path: str, config_path: str,
                 num_samples: int, chunk: int, xla: bool = False):
        super().__init__(name="tflatent")
        self._holder = _NotTracked(model)
        self._flow = model.has_latent
        self._xla = xla
        self._num_samples = num_samples
        self._chunk = chunk
        # Keras 3 variables are not tf.Module-tracked; the SavedModel saves these (as keras.export does).
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self.metadata_file = tf.saved_model.Asset(metadata_path)
        self.config_file = tf.saved_model.Asset(config_path)
        x_spec = (tf.TensorSpec([None, None, NUM_PITCHES], tf.float32, name="x") if model.music
                  else tf.TensorSpec([None, None], tf.int32, name="x"))
        lengths_spec = tf.TensorSpec([None], tf.int32, name="lengths")
        scalar = lambda name, dtype: tf.TensorSpec([], dtype, name=name)  # noqa: E731
        seed_spec = scalar("seed", tf.int32)
        self.sample = self._signature(self._sample, [lengths_spec, scalar("temperature", tf.float32), seed_spec])
        if self._flow:
            self.log_likelihood = self._signature(self._sampled_log_likelihood, [x_spec, lengths_spec, seed_spec])
            self.encode = self._signature(self._encode, [x_spec, lengths_spec])
        else:
            self.log_likelihood = self._signature(self._exact_log_likelihood, [x_spec, lengths_spec])
        self.metadata = tf.function(self._metadata, input_signature=[])

    def _signature(self, method, input_signature):
        """``method`` as a tf.function whose every trace runs the model under ``loop_implementation`` (the
        module docstring: no cuDNN op in the exported graph)."""
        def traced(*args):
            with loop_implementation(self.model):
                return method(*args)
        return tf.function(traced, input_signature=input_signature)

    @property
    def model(self) -> keras.Model:
        return self._holder.model

    def signatures(self) -> dict:
        """The SavedModel's signatures: name → tf.function."""
        signatures = {"serving_default": self.sample, "log_likelihood": self.log_likelihood,
                      "metadata": self.metadata}
        if self._flow:
            signatures["encode"] = self.encode
        return signatures

    # ------------------------------------------------------------------ the signatures
    def _sample(self, lengths, temperature, seed):
        checks = _length_checks(lengths, self.model.max_time) + [
            _require(temperature > 0.0, "temperature: must be > 0 (it scales the base noise or divides the "
                     "logits); got", temperature)]
        with tf.control_dependencies(checks):
            lengths = tf.identity(lengths)
        x = self.model.generate_for_lengths(lengths, temperature=temperature, seed=tf.stack([seed, 0]),
                                            compiled=self._xla)
        return {"x": x, "lengths": lengths}

    def _sampled_log_likelihood(self, x, lengths, seed):
        x, lengths = self._checked(x, lengths)
        return _likelihood_outputs(self.model.log_likelihood(
            x, lengths, num_samples=self._num_samples, chunk=self._chunk, seed=tf.stack([seed, 0])), lengths)

    def _exact_log_likelihood(self, x, lengths):
        x, lengths = self._checked(x, lengths)
        return _likelihood_outputs(self.model.log_likelihood(x, lengths), lengths)

    def _encode(self, x, lengths):
        x, lengths = self._checked(x, lengths)
        mu, logvar = self.model.encode(x, lengths)  # [B, T, Z] each
        mask = tf.sequence_mask(lengths, tf.shape(mu)[1], dtype=mu.dtype)[..., None]
        return {"z_mean": mu * mask, "z_log_variance": logvar * mask}

    def _metadata(self):
        return {"metadata": tf.io.read_file(self.metadata_file), "config": tf.io.read_file(self.config_file)}

    # ------------------------------------------------------------------ input checks
    def _checked(self, x, lengths):
        """(x, lengths) after the checks of the module docstring ran (InvalidArgumentError otherwise)."""
        model = self.model
        steps = tf.shape(x)
        checks = _length_checks(lengths, model.max_time) + [
            _require(steps[0] == tf.shape(lengths)[0], "x and lengths: the batch sizes differ; give one length "
                     "per row of x. Rows of x, entries of lengths:", steps[0], tf.shape(lengths)[0]),
            _require(steps[1] >= tf.reduce_max(lengths), "x: has fewer steps than the longest of lengths; pad "
                     "every row to max(lengths) steps. Steps of x, max(lengths):", steps[1], tf.reduce_max(lengths)),
        ]
        if model.music:
            checks.append(_require(tf.reduce_all((x == 0.0) | (x == 1.0)),
                                   "x: music frames must hold only 0 (note off) and 1 (note on)"))
        else:
            inside = tf.sequence_mask(lengths, steps[1])
            checks += [
                _require(tf.reduce_all((x >= 0) & (x < model.vocab_size)),
                         f"x: token ids must be in [0, {model.vocab_size}) (0 is padding); got values "
                         "from", tf.reduce_min(x), "to", tf.reduce_max(x)),
                _require(tf.logical_not(tf.reduce_any(inside & tf.equal(x, PAD_ID))),
                         f"x: the padding id {PAD_ID} appears inside a sequence (before its length); use "
                         f"the unknown id {UNK_ID} for an unknown character. Rows, steps:",
                         tf.where(inside & tf.equal(x, PAD_ID))),
            ]
        with tf.control_dependencies(checks):
            return tf.identity(x), tf.identity(lengths)


class _NotTracked:
    """Holds the Keras model out of tf.Module's tracking: the SavedModel stores its variables only."""

    def __init__(self, model):
        self.model = model


def _likelihood_outputs(log_likelihood, lengths):
    """log p(x, T) [B] and the nats per token −log p(x, T) / (T + 1) [B]."""
    return {"log_likelihood": log_likelihood,
            "nll_per_token": -log_likelihood / (tf.cast(lengths, tf.float32) + 1.0)}


def _require(condition, *message):
    """An op raising InvalidArgumentError("assertion failed: [message...]") when ``condition`` is false.

    ``message``: strings and tensors, printed in order (each in brackets).
    """
    return tf.debugging.Assert(condition, list(message), summarize=16)


def _length_checks(lengths, max_time):
    """Assertions that ``lengths`` is non-empty and each length is in 1..max_time."""
    return [
        _require(tf.size(lengths) > 0, "lengths: give at least one length"),
        _require(tf.reduce_all(lengths >= 1), "lengths: every length must be >= 1; got", lengths),
        _require(tf.reduce_all(lengths <= max_time), f"lengths: every length must be <= max_time = {max_time}, "
                 "the longest the model was built for; got", lengths),
    ]


# ---------------------------------------------------------------------- writing versions
def next_version(out_dir: str) -> int:
    """1 + the largest integer version folder in ``out_dir`` (1 when there is none)."""
    if not os.path.isdir(out_dir):
        return 1
    return max((int(name) for name in os.listdir(out_dir) if name.isdigit()), default=0) + 1


def make_metadata(model: keras.Model, config: config_lib.Config, vocabulary, num_samples: int, chunk: int,
                  source: dict, xla: bool = False) -> dict:
    """The contents of ``metadata.json``: what a client needs to build requests and decode answers."""
    flow = model.has_latent
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": config.model.type,
        "dataset": config.data.dataset,
        "music": bool(model.music),
        "vocab_size": int(model.vocab_size),
        "max_time": int(model.max_time),
        "signatures": ["serving_default", "log_likelihood"] + (["encode"] if flow else []) + ["metadata"],
        "xla": bool(xla),
        "source": source,
    }
    if flow:
        metadata.update(time_flow=config.model.time_flow, hidden_flow=config.model.hidden_flow,
                        z_size=int(model.z_size), importance_samples=num_samples, importance_chunk=chunk)
    if model.music:
        metadata.update(pitch_offset=MIN_PITCH, frame_size=NUM_PITCHES)
    else:
        metadata.update(vocabulary=list(vocabulary), pad_id=PAD_ID, unk_id=UNK_ID)
    return metadata


def export(model: keras.Model, config: config_lib.Config, out_dir: str, num_samples: int, chunk: int,
           vocabulary=None, source: dict | None = None, xla: bool = False) -> str:
    """Writes ``model`` as the next version under ``out_dir``; returns that version's folder.

    Args:
      model: a built ``LatentFlowModel`` or ``LSTMBaseline`` (KL weight 1, trained weights loaded).
      config: its resolved config (written as the ``config.yaml`` asset).
      out_dir: the model's folder, ``saved_models/<name>``; created if needed.
      num_samples, chunk: K importance samples of ``log_likelihood`` and the samples per chunk.
      vocabulary: text: the id → token strings; music: None.
      source: where the weights came from (recorded in ``metadata.json``).
      xla: compile the sampler with XLA (module docstring); recorded in ``metadata.json``.
    """
    if num_samples < 1 or chunk < 1:
        raise ValueError(f"export needs num_samples >= 1 and chunk >= 1; got {num_samples}, {chunk}")
    if not model.music and vocabulary is None:
        raise ValueError("a text model needs its vocabulary (the id → token strings) to be exported")
    os.makedirs(out_dir, exist_ok=True)
    version = next_version(out_dir)
    staging = tempfile.mkdtemp(prefix=f".{version}-", dir=out_dir)  # not an integer: servers ignore it
    try:
        with tempfile.TemporaryDirectory() as asset_dir:
            metadata_path = os.path.join(asset_dir, METADATA_FILE)
            config_path = os.path.join(asset_dir, CONFIG_FILE)
            with open(metadata_path, "w") as f:
                json.dump(make_metadata(model, config, vocabulary, num_samples, chunk, source or {}, xla), f,
                          indent=1)
            with open(config_path, "w") as f:
                f.write(config.to_yaml())
            module = ServingModule(model, config, metadata_path, config_path, num_samples, chunk, xla)
            tf.saved_model.save(module, staging, signatures=module.signatures())
            warmup.write(staging, os.path.basename(os.path.normpath(out_dir)), module.signatures(),
                         model.max_time)
        final = os.path.join(out_dir, str(version))
        os.rename(staging, final)  # fails rather than replace a version another export wrote meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


# ---------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.export", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory written by tflatent.train")
    parser.add_argument("--checkpoint", default="best", help="best (default), latest, or a *.weights.h5 file")
    parser.add_argument("--out", required=True, help="the model's folder, e.g. saved_models/<name>")
    parser.add_argument("--samples", type=int, help="importance samples K of log_likelihood "
                        "(default: train.nll_samples)")
    parser.add_argument("--chunk", type=int, help="importance samples per chunk (default: train.nll_chunk)")
    parser.add_argument("--xla", action="store_true",
                        help="compile the sampler with XLA (much faster AF priors) for servers that run XLA: "
                        "tflatent.serve, or TF Serving with --xla_cpu_compilation_enabled=true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.one_line_errors(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    opened = cli.open_checked_run(args, at_least_one=("samples", "chunk"), sampling=True)
    if opened is None:
        return 2
    run, config, bundle, model, checkpoint = opened
    num_samples = args.samples or config.train.nll_samples
    chunk = min(args.chunk or config.train.nll_chunk, num_samples)
    path = export(model, config, args.out, num_samples, chunk, vocabulary=bundle.vocab,
                  source={"run": os.path.abspath(run.path), "checkpoint": os.path.abspath(checkpoint)},
                  xla=args.xla)
    print(f"exported {type(model).__name__} from {checkpoint} to {path}")
    return 0
