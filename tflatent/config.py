"""Typed configuration: dataclasses, YAML loading, validation and dotted overrides.

A config file has three sections, ``data``, ``model`` and ``train``, each a dataclass below. Every
field has the default of the authors' code for PTB AF/AF (``docs/reference.md`` §7.1); the YAML
files in ``configs/`` state what differs. A file may start with ``extends: other.yaml`` or
``extends: [a.yaml, b.yaml]`` (paths relative to the file) to inherit from other configs: the parents
are merged in order, key by key within each section, then the file's own keys override them.

Errors name the field, the value and what is allowed::

    ConfigError: model.hidden_flow = 'maf' is not allowed; choose one of: af, scf, none
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from tflatent.errors import ExpectedError

# The allowed values of every choice field, in one place: the layers and the training code that take
# these names import them from here.
MUSIC_DATASETS = ("jsb_chorales", "nottingham", "piano_midi", "muse_data")
DATASETS = ("ptb",) + MUSIC_DATASETS
MODEL_TYPES = ("flow", "lstm")  # keys of tflatent.models.registry.MODELS
TIME_FLOWS = ("af", "iaf", "none")
HIDDEN_FLOWS = ("af", "scf", "none")  # keys of tflatent.priors.hidden_flow.HIDDEN_FLOWS
TRANSFORMS = ("nlsq", "affine")  # keys of tflatent.bijectors.TRANSFORMS
POSITION_ENCODINGS = ("onehot", "sinusoidal")
LSTM_INITS = ("pytorch", "keras")
# Where model.dropout applies (docs/reference.md §4.6); the reference's other locations (z_before_prior,
# prior_rnn_inp, z_before_outp) are not implemented, so they are not accepted either.
DROPOUT_LOCATIONS = ("embedding", "rnn_x", "prior_rnn", "prior_ff", "rnn_outp", "outp_ff")
OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu")
# model.lstm_impl: cuDNN through Keras's LSTM machinery | the hand-written loop | cudnn with a GPU, else loop
LSTM_IMPLS = ("auto", "cudnn", "loop")
# model.{inference,emission,prior}_network: the paper's LSTMs | self-attention (tflatent.layers.attention)
SEQUENCE_NETWORKS = ("lstm", "transformer")


class ConfigError(ExpectedError, ValueError):
    """A config file or override is malformed; the message names the field and the fix."""


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: ``1e-3``, ``1e6`` and ``1.0e6`` are floats (YAML 1.1 reads the first
    two as text, as it wants a dot and a signed exponent)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml(text):
    return yaml.load(text, Loader=_Loader)


@dataclass
class DataConfig:
    """Which data set, where its files are, and how it is batched."""

    dataset: str = "ptb"
    data_dir: Optional[str] = None  # None: $TFLATENT_DATA_DIR, then TFDS's manual folder
    tfds_dir: Optional[str] = None  # where TFDS writes prepared data; None: ~/tensorflow_datasets
    min_length: int = 1
    max_length: int = 288  # PTB length filter (every split, §6.1); music keeps every piece
    batch_size: int = 15  # per replica; the global batch is batch_size × replicas
    eval_batch_size: int = 15
    bucket_chunk_batches: int = 100  # training shuffle chunk, in batches (§6.2)
    pad_to_multiple: int = 1  # pad each batch's time axis to a multiple (few shapes for XLA); 1: exact
    length_prior_splits: str = "train_valid"  # train_valid (reference) | train
    length_prior_smoothing: float = 0.0  # add-k smoothing of p(T); the reference uses 1 for music
    max_time: Optional[int] = None  # size of the position features; None: derived as in §2.2
    train_limit: Optional[int] = None  # use only the first N training sequences (small runs, tests)
    eval_limit: Optional[int] = None  # use only the first N valid/test sequences (small runs, tests)

    _choices = {"dataset": DATASETS, "length_prior_splits": ("train_valid", "train")}
    _positive = ("min_length", "max_length", "batch_size", "eval_batch_size", "bucket_chunk_batches",
                 "pad_to_multiple", "max_time", "train_limit", "eval_limit")
    _nonnegative = ("length_prior_smoothing",)


@dataclass
class ModelConfig:
    """Model family, sizes and the paper's ablation switches."""

    type: str = "flow"  # flow (latent flow model) | lstm (the autoregressive baseline)
    time_flow: str = "af"  # af (LSTM over z_<t) | iaf (LSTM over ε_<t) | none ("AF-only": no time dependence)
    hidden_flow: str = "af"  # af (MADE) | scf (coupling) | none (elementwise from the context)
    transform: str = "nlsq"  # nlsq | affine ("− NLSq" ablation)
    embedding_size: int = 500
    z_size: int = 50
    hidden_size: int = 500  # q(z|x) and p(x|z) BiLSTMs, and the baseline LSTM
    q_rnn_layers: int = 2
    gen_rnn_layers: int = 2
    prior_rnn_layers: int = 2
    prior_rnn_units: int = 500
    lstm_layers: int = 2  # the LSTM baseline's depth (type lstm; the reference reads --p_rnn_layers, 2)
    hidden_flow_layers: int = 5
    hidden_flow_hidden_layers: int = 2
    hidden_flow_units: int = 100
    dropout: float = 0.2
    dropout_locations: list = field(default_factory=lambda: ["prior_rnn"])
    tie_weights: bool = True
    position_encoding: str = "onehot"  # onehot (reference, 2·max_time wide) | sinusoidal (compact)
    position_encoding_size: int = 64  # per feature (position and remaining length) for sinusoidal
    lstm_init: str = "pytorch"  # pytorch: U(±1/√H) weights and bias | keras: Glorot/orthogonal
    lstm_impl: str = "auto"  # auto (cudnn with a GPU, else loop) | cudnn | loop (tflatent.layers.lstm)
    inference_network: str = "lstm"  # q(z|x): lstm (the paper's BiLSTM) | transformer (bidirectional)
    emission_network: str = "lstm"  # p(x|z): lstm (BiLSTM over z) | transformer (bidirectional)
    prior_network: str = "lstm"  # the prior's time context h̃_t: lstm | transformer (causal)
    attention_units: int = 256  # d of every transformer part
    attention_layers: int = 2  # blocks per transformer part
    attention_heads: int = 4  # heads per block (d must divide by it)
    attention_feed_forward_units: int = 1024  # d_ff of each block's feed-forward layer

    _choices = {
        "type": MODEL_TYPES,
        "time_flow": TIME_FLOWS,
        "hidden_flow": HIDDEN_FLOWS,
        "transform": TRANSFORMS,
        "position_encoding": POSITION_ENCODINGS,
        "lstm_init": LSTM_INITS,
        "lstm_impl": LSTM_IMPLS,
        "inference_network": SEQUENCE_NETWORKS,
        "emission_network": SEQUENCE_NETWORKS,
        "prior_network": SEQUENCE_NETWORKS,
    }
    _list_choices = {"dropout_locations": DROPOUT_LOCATIONS}
    _positive = ("embedding_size", "z_size", "hidden_size", "q_rnn_layers", "gen_rnn_layers",
                 "prior_rnn_layers", "prior_rnn_units", "lstm_layers", "hidden_flow_layers",
                 "hidden_flow_hidden_layers", "hidden_flow_units", "position_encoding_size",
                 "attention_units", "attention_layers", "attention_heads", "attention_feed_forward_units")
    _fraction = ("dropout",)


@dataclass
class TrainConfig:
    """Optimisation, annealing, evaluation cadence, distribution and output."""

    epochs: int = 100
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split
    optimizer: str = "adam"  # adam | sgd (the reference's baselines: SGD, lr 20)
    learning_rate: float = 1e-3
    clip_norm: float = 0.25
    grad_accum: int = 1
    elbo_samples: int = 10
    nll_samples: int = 30
    nll_every: int = 5  # importance-sampled validation NLL every N epochs (0: never)
    nll_chunk: int = 10  # samples per chunk in the IS estimate (bounded memory)
    initial_kl_zero: int = 4
    kl_rampup_time: int = 10
    kl_floor: float = 1e-5
    patience: int = 1
    lr_decay: float = 4.0
    reset_optimizer_on_decay: bool = True  # the reference rebuilds Adam on each decay
    reset_optimizer_on_resume: bool = True  # --resume: the reference re-creates the optimizer after loading
    seed: int = 0
    distribute: str = "auto"  # auto | none | mirrored | multi_worker | tpu
    logical_cpus: Optional[int] = None  # mirrored without GPUs: split the CPU into N logical devices (tests)
    intra_op_threads: Optional[int] = None  # CPU threads per op; None: auto, 0: TensorFlow's (tflatent.cpu_threads)
    mixed_precision: bool = False
    jit_compile: bool = False
    output_dir: str = "runs"
    run_name: Optional[str] = None  # None: derived from the config file name
    verbose: int = 1  # Keras fit: 0 silent, 1 progress bar, 2 one line per epoch

    _choices = {"optimizer": OPTIMIZERS,
                "distribute": STRATEGIES,
                "verbose": (0, 1, 2)}
    _positive = ("epochs", "steps_per_epoch", "learning_rate", "clip_norm", "grad_accum", "elbo_samples",
                 "nll_samples", "nll_chunk", "patience", "lr_decay", "logical_cpus")
    _nonnegative = ("nll_every", "initial_kl_zero", "kl_rampup_time", "kl_floor", "seed", "intra_op_threads")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def is_music(self) -> bool:
        return self.data.dataset in MUSIC_DATASETS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Checks ``value`` against a field's type hint; returns (ok, coerced value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return True, None
        return _type_ok(value, next(a for a in args if a is not type(None)))
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        if isinstance(value, float) and value.is_integer():  # 1e6 written for a count
            return True, int(value)
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if hint is list or origin is list:
        return isinstance(value, list), value
    return True, value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _type_name(args[0]) + " or null"
    return getattr(hint, "__name__", str(hint))


def _validate_section(name: str, obj: Any) -> None:
    cls = type(obj)
    for key in getattr(cls, "_choices", {}):
        value = getattr(obj, key)
        if value not in cls._choices[key]:
            raise ConfigError(f"{name}.{key} = {value!r} is not allowed; choose one of: "
                              + ", ".join(map(str, cls._choices[key])))
    for key, allowed in getattr(cls, "_list_choices", {}).items():
        for item in getattr(obj, key):
            if item not in allowed:
                raise ConfigError(f"{name}.{key} contains {item!r}, which is not allowed; "
                                  f"items may be: " + ", ".join(allowed))
    for key in getattr(cls, "_positive", ()):
        value = getattr(obj, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{name}.{key} = {value!r} must be > 0")
    for key in getattr(cls, "_nonnegative", ()):
        value = getattr(obj, key)
        if value is not None and value < 0:
            raise ConfigError(f"{name}.{key} = {value!r} must be >= 0")
    for key in getattr(cls, "_fraction", ()):
        value = getattr(obj, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}.{key} = {value!r} must be in [0, 1)")


def validate(config: Config) -> Config:
    """Checks values and cross-field constraints; returns the config."""
    for name in SECTIONS:
        _validate_section(name, getattr(config, name))
    d, m = config.data, config.model
    if d.min_length > d.max_length:
        raise ConfigError(f"data.min_length = {d.min_length} exceeds data.max_length = {d.max_length}")
    if m.type == "flow" and m.hidden_flow == "af" and m.hidden_flow_units < m.z_size:
        raise ConfigError(f"model.hidden_flow_units = {m.hidden_flow_units} must be >= model.z_size = "
                          f"{m.z_size} for a MADE hidden flow (each unit needs a degree below z_size)")
    if m.type == "flow" and m.hidden_flow == "scf" and m.z_size < 2:
        raise ConfigError(f"model.z_size = {m.z_size} must be >= 2 for a coupling (scf) hidden flow")
    if m.type == "flow" and m.time_flow == "iaf" and m.hidden_flow == "af":
        raise ConfigError("model.time_flow = 'iaf' needs model.hidden_flow = 'scf' or 'none' (IAF/SCF): "
                          "an AF hidden flow cannot be sampled in parallel")
    uses_attention = any(getattr(m, part) == "transformer"
                         for part in ("inference_network", "emission_network", "prior_network"))
    if m.type == "flow" and uses_attention and m.attention_units % m.attention_heads:
        raise ConfigError(f"model.attention_units = {m.attention_units} must be divisible by model.attention_heads = "
                          f"{m.attention_heads} (each head reads attention_units / attention_heads features)")
    if config.train.lr_decay < 1:
        raise ConfigError(f"train.lr_decay = {config.train.lr_decay} must be >= 1 (the learning rate is "
                          "divided by it on a plateau)")
    return config


def did_you_mean(name: str, allowed: list) -> str:
    """" (did you mean 'x'?)" for the allowed name closest to ``name``, or "" when none is close."""
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, key: str, allowed: list) -> str:
    """The message for an unknown name, with the closest allowed name when one is close."""
    return f"unknown {kind} {key!r}{did_you_mean(key, allowed)}; allowed: " + ", ".join(allowed)


def from_dict(raw: Any, source: str = "config") -> Config:
    """Builds a validated Config from a nested dict; unknown keys and wrong types are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with sections "
                          f"{', '.join(SECTIONS)}; got {type(raw).__name__}")
    sections = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: " + unknown_name("section", name, list(SECTIONS)))
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {value!r}")
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        sections[name] = cls(**{key: _checked_type(name, key, value, source) for key, value in values.items()})
    return validate(Config(**sections))


@functools.cache
def type_hints(cls: type) -> dict:
    """{field name: type hint} of a section dataclass, in field order (resolving the hints is slow)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _checked_type(section: str, key: str, value: Any, source: str) -> Any:
    """``value`` coerced to the type of field ``section.key``; an unknown key or a wrong type is an error."""
    hints = type_hints(SECTIONS[section])
    if key not in hints:
        raise ConfigError(f"{source}: " + unknown_name(f"key in {section}", key, list(hints)))
    hint = hints[key]
    ok, coerced = _type_ok(value, hint)
    if not ok:
        raise ConfigError(f"{source}: {section}.{key} = {value!r} has the wrong type; expected {_type_name(hint)}")
    return coerced


def check_field(path: str, value: Any, source: str = "config") -> Any:
    """Checks one value for the dotted field ``path`` (e.g. ``model.z_size``) on its own; returns it coerced.

    Checks the field exists, the type and the field's own constraints (choices, > 0, [0, 1), ...), but
    not the constraints between fields, which :func:`validate` checks on a whole config.
    """
    parts = path.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: {path!r} is not a config field; write section.key, e.g. model.z_size")
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(f"{source}: " + unknown_name("section", section, list(SECTIONS)))
    coerced = _checked_type(section, key, value, source)
    try:
        _validate_section(section, SECTIONS[section](**{key: coerced}))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return coerced


def _read_yaml(path: str, seen: tuple = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(seen + (path,))}")
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist; the shipped configs are in configs/")
    with open(path) as f:
        try:
            raw = _yaml(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with sections {', '.join(SECTIONS)}")
    parents = raw.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: extends = {parents!r} must be a file name or a list of file names")
    merged: dict = {}
    for parent in parents:
        _merge(merged, _read_yaml(os.path.join(os.path.dirname(path), parent), seen + (path,)))
    return _merge(merged, raw)


def _merge(base: dict, update: dict) -> dict:
    """Merges ``update`` into ``base`` section by section (a key in ``update`` wins); returns ``base``."""
    for name, values in update.items():
        if isinstance(values, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **values}
        else:
            base[name] = values
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses ``section.key=value`` (value in YAML syntax) into (path, value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. model.z_size=16")
    key, value = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) != 2:
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. train.epochs=3")
    try:
        return path, _yaml(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {err}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides or ():
        (section, key), value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"override {text!r}: section {section!r} is not a mapping")
        raw[section][key] = value
    return raw


def load(path: str, overrides: Optional[list[str]] = None) -> Config:
    """Loads a YAML config (following ``extends``), applies ``--set`` overrides and validates."""
    raw = apply_overrides(_read_yaml(path), overrides or [])
    config = from_dict(raw, source=path)
    if config.train.run_name is None:
        config.train.run_name = os.path.splitext(os.path.basename(path))[0]
    return config
