"""Search spaces for ``python -m tflatent.tune``: YAML files in ``configs/spaces/``, validated on load.

A space file maps dotted config fields (any field of :mod:`tflatent.config` that holds a number, a
string or a boolean) to one of four specifications, and may set the tuner, the number of trials
and the objective::

    tuner: random                # random | bayesian | hyperband (the --tuner flag wins)
    max_trials: 20               # the --trials flag wins
    objective: val_nll           # val_nll | val_loss (default: val_nll, or val_loss when train.nll_every is 0)
    model.transform: {choice: [nlsq, affine]}
    model.hidden_size: {int: {min: 64, max: 256, step: 2, sampling: log}}    # 64, 128, 256
    model.dropout: {float: {min: 0.0, max: 0.4}}
    train.learning_rate: {float: {min: 1.0e-4, max: 3.0e-3, sampling: log}}
    train.epochs: {fixed: 10}

``choice`` samples one of the listed values; ``int`` an integer in [min, max] (``step``: the
distance between values, a factor with ``sampling: log``); ``float`` a number in [min, max]
(``sampling: log`` samples log-uniformly and needs min > 0); ``fixed`` sets the field for every trial
without searching it. Write exponents with a decimal point (``1.0e-4``): YAML reads ``1e-4`` as text.

Every value (each choice, each bound, the fixed value) is checked on load against the field's type
and its own constraints by :func:`tflatent.config.check_field`. Constraints between fields (e.g.
``model.hidden_flow_units >= model.z_size`` for a MADE hidden flow) can only be checked on a whole
config: :meth:`SearchSpace.apply` checks them for each sampled combination.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import keras_tuner as kt
import yaml

from tflatent import config as config_lib

TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVES = ("val_nll", "val_loss")
SETTINGS = ("tuner", "max_trials", "objective")
KINDS = ("choice", "int", "float", "fixed")
RANGE_KEYS = {"int": ("min", "max", "step", "sampling"), "float": ("min", "max", "sampling")}
SAMPLINGS = ("linear", "log")
TYPE_NAMES = {int: "integers", float: "numbers", str: "text", bool: "booleans"}
FIELDS = [f"{section}.{f.name}" for section, cls in config_lib.SECTIONS.items() for f in dataclasses.fields(cls)]


class SearchSpaceError(config_lib.ConfigError):
    """A search space file is malformed; the message names the file, the field and the fix."""


@dataclass
class Dimension:
    """One searched field: a choice among ``values``, or an int or float range from ``low`` to ``high``."""

    field: str
    kind: str  # choice | int | float
    values: list = dataclasses.field(default_factory=list)
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[int] = None
    sampling: str = "linear"

    def sample(self, hp: kt.HyperParameters) -> Any:
        """Registers this dimension in ``hp`` (first call) and returns its current value."""
        if self.kind == "choice":
            return hp.Choice(self.field, self.values)
        if self.kind == "int":
            return hp.Int(self.field, self.low, self.high, step=self.step, sampling=self.sampling)
        return hp.Float(self.field, self.low, self.high, sampling=self.sampling)


@dataclass
class SearchSpace:
    """The searched dimensions, the fixed values and the optional tuner settings of a space file."""

    dimensions: list[Dimension]
    fixed: dict = field(default_factory=dict)
    tuner: Optional[str] = None
    max_trials: Optional[int] = None
    objective: Optional[str] = None

    @property
    def fields(self) -> list[str]:
        """The searched fields, in file order."""
        return [d.field for d in self.dimensions]

    def sample(self, hp: kt.HyperParameters) -> dict:
        """``{field: value}`` of every searched field in ``hp`` (registering the dimensions first)."""
        return {d.field: d.sample(hp) for d in self.dimensions}

    def apply(self, config: config_lib.Config, values: dict, source: str = "search space") -> config_lib.Config:
        """A new config: ``config`` with the fixed values and ``values`` set, validated as a whole.

        Raises ConfigError when the combination breaks a constraint between fields.
        """
        raw = config.to_dict()
        for path, value in {**self.fixed, **values}.items():
            section, key = path.split(".")
            raw[section][key] = value
        return config_lib.from_dict(raw, source=source)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load(path: str) -> SearchSpace:
    """Reads and validates a space file (see the module docstring)."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise SearchSpaceError(f"search space {path!r} does not exist; the shipped spaces are in "
                               "configs/spaces/") from None
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: not valid YAML: {err}") from None
    return from_dict(raw, source=path)


def from_dict(raw: Any, source: str = "search space") -> SearchSpace:
    """Builds a validated SearchSpace from the mapping of a space file."""
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{source}: the top level must be a mapping of config fields (e.g. model.z_size) "
                               f"to {{choice | int | float | fixed: ...}}; got {type(raw).__name__}")
    settings = {key: raw[key] for key in SETTINGS if key in raw}
    dimensions, fixed = [], {}
    for path, spec in raw.items():
        if path in SETTINGS:
            continue
        if "." not in str(path):
            fields = [f for f in FIELDS if f.endswith(f".{path}")]
            hint = f" (did you mean {fields[0]!r}?)" if fields else ""
            raise SearchSpaceError(f"{source}: unknown key {path!r}{hint}; the keys of a space file are "
                                   f"{', '.join(SETTINGS)} and config fields written section.key, e.g. model.z_size")
        _check_path(path, source)
        kind, body = _kind(path, spec, source)
        if kind == "fixed":
            fixed[path] = _checked(path, body, f"{source}: {path}: fixed")
        else:
            dimensions.append(_dimension(path, kind, body, f"{source}: {path}: {kind}"))
    if not dimensions:
        raise SearchSpaceError(f"{source}: searches no field; give at least one field a choice, int or float "
                               "range, e.g. model.hidden_size: {choice: [64, 128]}")
    _check_settings(settings, source)
    return SearchSpace(dimensions, fixed, **settings)


def _check_path(path: str, source: str) -> None:
    if path not in FIELDS:
        hint = config_lib.did_you_mean(path, FIELDS)
        raise SearchSpaceError(f"{source}: {path!r} is not a config field{hint}; fields are section.key with the "
                               "sections and keys of tflatent/config.py, e.g. model.z_size")


def _field_type(path: str) -> type:
    """The field's type, without Optional: int, float, str, bool or list."""
    section, key = path.split(".")
    hint = config_lib.type_hints(config_lib.SECTIONS[section])[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if args else hint
    return typing.get_origin(hint) or hint


def _kind(path: str, spec: Any, source: str) -> tuple[str, Any]:
    example = (f"{path}: {{choice: [a, b]}}, {{int: {{min: 1, max: 8}}}}, {{float: {{min: 0.1, max: 0.5}}}} "
               "or {fixed: v}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SearchSpaceError(f"{source}: {path} = {spec!r} must be a mapping with exactly one of "
                               f"{', '.join(KINDS)}, e.g. {example}")
    (kind, body), = spec.items()
    if kind not in KINDS:
        raise SearchSpaceError(f"{source}: {path}: " + config_lib.unknown_name("key", str(kind), list(KINDS)))
    return kind, body


def _checked(path: str, value: Any, source: str) -> Any:
    """``value`` checked and coerced for the field; a number written as text gets a hint."""
    try:
        return config_lib.check_field(path, value, source=source)
    except config_lib.ConfigError as err:
        hint = ""
        if isinstance(value, str) and _is_number(value):
            hint = f" (write {float(value)!r}: YAML reads {value} without a decimal point as text)"
        raise SearchSpaceError(f"{err}{hint}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _dimension(path: str, kind: str, body: Any, source: str) -> Dimension:
    if _field_type(path) is list:
        raise SearchSpaceError(f"{source}: {path} holds a list, which cannot be searched; give it a fixed value, "
                               "set it in the config or with --set")
    if kind == "choice":
        if not isinstance(body, list) or not body:
            raise SearchSpaceError(f"{source}: the choice must be a non-empty list of values, e.g. "
                                   f"{path}: {{choice: [a, b]}}; got {body!r}")
        values = []
        for value in body:
            if value is None or isinstance(value, (list, dict)):
                raise SearchSpaceError(f"{source}: {value!r} cannot be a choice: choices are numbers, text or "
                                       "booleans (leave the field out of the space to keep the config's value)")
            value = _checked(path, value, source)
            if value in values:
                raise SearchSpaceError(f"{source}: {value!r} is listed twice")
            values.append(value)
        return Dimension(path, kind, values=values)

    allowed = RANGE_KEYS[kind]
    if not isinstance(body, dict):
        raise SearchSpaceError(f"{source}: the range must be a mapping with keys {', '.join(allowed)}, e.g. "
                               f"{path}: {{{kind}: {{min: 1, max: 8}}}}; got {body!r}")
    for key in body:
        if key not in allowed:
            raise SearchSpaceError(f"{source}: " + config_lib.unknown_name("key", str(key), list(allowed)))
    missing = [key for key in ("min", "max") if key not in body]
    if missing:
        raise SearchSpaceError(f"{source}: the range needs {' and '.join(missing)}")
    field_type = _field_type(path)
    if field_type is not (int if kind == "int" else float):
        use = {int: "int", float: "float"}.get(field_type, "choice")
        raise SearchSpaceError(f"{source}: {path} holds {TYPE_NAMES[field_type]}; use {use}: instead of {kind}:")
    low, high = (_checked(path, body[key], f"{source} {key}") for key in ("min", "max"))
    if low is None or high is None:
        raise SearchSpaceError(f"{source}: min and max must be numbers, got min = {low!r}, max = {high!r}")
    if low > high:
        raise SearchSpaceError(f"{source}: min = {low!r} exceeds max = {high!r}; swap them")
    sampling = body.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        raise SearchSpaceError(f"{source}: sampling = {sampling!r} is not allowed; choose one of: "
                               + ", ".join(SAMPLINGS))
    if sampling == "log" and low <= 0:
        raise SearchSpaceError(f"{source}: log sampling needs min > 0, got min = {low!r}; raise min or use "
                               "sampling: linear")
    step = body.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 1
                             or (sampling == "log" and step < 2)):
        least = 2 if sampling == "log" else 1
        raise SearchSpaceError(f"{source}: step = {step!r} must be an integer >= {least}"
                               + (" (with log sampling it is the factor between values)" if least == 2 else ""))
    return Dimension(path, kind, low=low, high=high, step=step, sampling=sampling)


def _check_settings(settings: dict, source: str) -> None:
    tuner = settings.get("tuner")
    if tuner is not None and tuner not in TUNERS:
        raise SearchSpaceError(f"{source}: tuner = {tuner!r} is not allowed; choose one of: {', '.join(TUNERS)}")
    trials = settings.get("max_trials")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise SearchSpaceError(f"{source}: max_trials = {trials!r} must be an integer >= 1")
    objective = settings.get("objective")
    if objective is not None and objective not in OBJECTIVES:
        raise SearchSpaceError(f"{source}: objective = {objective!r} is not allowed; choose one of: "
                               + ", ".join(OBJECTIVES))
