"""Search-space files: loading, sampling through KerasTuner, applying to a config, and clear errors."""

import itertools
import os

import keras_tuner as kt
import pytest

from tflatent import config as config_lib
from tflatent.tuning import search_space
from tflatent.tuning.search_space import SearchSpaceError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPACES = os.path.join(REPO, "configs", "spaces")

GOOD = {
    "tuner": "bayesian",
    "max_trials": 7,
    "objective": "val_loss",
    "model.transform": {"choice": ["nlsq", "affine"]},
    "model.hidden_size": {"int": {"min": 8, "max": 32, "step": 2, "sampling": "log"}},
    "model.hidden_flow_layers": {"int": {"min": 1, "max": 3}},
    "model.dropout": {"float": {"min": 0, "max": 0.4}},
    "train.learning_rate": {"float": {"min": 1.0e-4, "max": 1.0e-2, "sampling": "log"}},
    "model.z_size": {"choice": [4, 8]},
    "train.epochs": {"fixed": 2},
    "model.dropout_locations": {"fixed": []},
}


def test_a_space_loads_with_its_settings_dimensions_and_fixed_values():
    space = search_space.from_dict(GOOD)
    assert (space.tuner, space.max_trials, space.objective) == ("bayesian", 7, "val_loss")
    assert space.fields == ["model.transform", "model.hidden_size", "model.hidden_flow_layers", "model.dropout",
                            "train.learning_rate", "model.z_size"]
    assert space.fixed == {"train.epochs": 2, "model.dropout_locations": []}
    dropout = space.dimensions[3]
    assert (dropout.low, dropout.high) == (0.0, 0.4) and isinstance(dropout.low, float)  # coerced like the config


def test_sampled_values_stay_in_their_ranges_with_the_fields_types():
    space = search_space.from_dict(GOOD)
    hp = kt.HyperParameters()
    assert space.sample(hp) == {"model.transform": "nlsq", "model.hidden_size": 8, "model.hidden_flow_layers": 1,
                                "model.dropout": 0.0, "train.learning_rate": 1e-4, "model.z_size": 4}
    by_name = {p.name: p for p in hp.space}
    samples = [{name: p.random_sample(seed) for name, p in by_name.items()} for seed in range(200)]
    assert {s["model.hidden_size"] for s in samples} == {8, 16, 32}  # log sampling, factor 2
    assert {s["model.hidden_flow_layers"] for s in samples} == {1, 2, 3}
    assert {s["model.transform"] for s in samples} == {"nlsq", "affine"}
    rates = [s["train.learning_rate"] for s in samples]
    assert 1e-4 <= min(rates) and max(rates) <= 1e-2
    below_1e3 = sum(rate < 1e-3 for rate in rates) / len(rates)
    assert 0.35 < below_1e3 < 0.65  # log-uniform: half the samples in each decade
    assert all(isinstance(s["model.dropout"], float) and 0 <= s["model.dropout"] <= 0.4 for s in samples)


def test_apply_sets_fixed_and_sampled_values_and_checks_constraints_between_fields():
    space = search_space.from_dict(GOOD)
    base = config_lib.Config()
    config = space.apply(base, {"model.hidden_size": 16, "model.z_size": 8})
    assert (config.model.hidden_size, config.model.z_size, config.train.epochs) == (16, 8, 2)
    assert config.model.dropout_locations == [] and base.model.hidden_size == 500  # the base is unchanged
    # Each value passed its own check on load; a combination can still break a cross-field constraint.
    with pytest.raises(config_lib.ConfigError, match=r"hidden_flow_units = 100 must be >= model.z_size = 128"):
        search_space.from_dict({"model.z_size": {"choice": [8, 128]}}).apply(base, {"model.z_size": 128})


MALFORMED = {
    "unknown field": ({"model.hiden_size": {"choice": [8]}},
                      r"'model.hiden_size' is not a config field \(did you mean 'model.hidden_size'\?\)"),
    "unknown section": ({"modle.z_size": {"choice": [8]}}, r"'modle.z_size' is not a config field"),
    "key without a section": ({"z_size": {"choice": [8]}}, r"unknown key 'z_size' \(did you mean 'model.z_size'\?\)"),
    "unknown setting": ({"tunr": "random", "model.z_size": {"choice": [8]}},
                        r"unknown key 'tunr'; the keys of a space file are tuner, max_trials, objective"),
    "empty choice": ({"model.z_size": {"choice": []}},
                     r"model.z_size: choice: the choice must be a non-empty list of values"),
    "min > max": ({"model.z_size": {"int": {"min": 8, "max": 4}}}, r"model.z_size: int: min = 8 exceeds max = 4"),
    "log with min 0": ({"model.dropout": {"float": {"min": 0.0, "max": 0.4, "sampling": "log"}}},
                       r"model.dropout: float: log sampling needs min > 0, got min = 0.0"),
    "wrong type": ({"model.z_size": {"choice": [8, "big"]}},
                   r"model.z_size = 'big' has the wrong type; expected int"),
    "value not allowed": ({"model.transform": {"choice": ["nlsq", "cubic"]}},
                          r"model.transform = 'cubic' is not allowed; choose one of: nlsq, affine"),
    "bound breaks a constraint": ({"model.dropout": {"float": {"min": 0.1, "max": 1.5}}},
                                  r"model.dropout: float max: .*model.dropout = 1.5 must be in \[0, 1\)"),
    "bad fixed value": ({"model.z_size": {"fixed": 0}, "model.dropout": {"choice": [0.1]}},
                        r"model.z_size: fixed: .*must be > 0"),
    "unknown range key": ({"model.z_size": {"int": {"min": 1, "max": 4, "stepp": 2}}},
                          r"unknown key 'stepp' \(did you mean 'step'\?\); allowed: min, max, step, sampling"),
    "unknown kind": ({"model.z_size": {"range": {"min": 1, "max": 4}}},
                     r"model.z_size: unknown key 'range'; allowed: choice, int, float, fixed"),
    "two kinds": ({"model.z_size": {"choice": [4], "fixed": 4}}, r"must be a mapping with exactly one of"),
    "missing bound": ({"model.z_size": {"int": {"min": 1}}}, r"model.z_size: int: the range needs max"),
    "float range on an int field": ({"model.z_size": {"float": {"min": 1, "max": 4}}},
                                    r"model.z_size holds integers; use int: instead of float:"),
    "int range on a float field": ({"model.dropout": {"int": {"min": 0, "max": 1}}},
                                   r"model.dropout holds numbers; use float: instead of int:"),
    "exponent read as text": ({"train.learning_rate": {"float": {"min": "1e-4", "max": 1.0e-3}}},
                              r"write 0.0001: YAML reads 1e-4 without a decimal point as text"),
    "log step below 2": ({"model.z_size": {"int": {"min": 1, "max": 8, "step": 1, "sampling": "log"}}},
                         r"step = 1 must be an integer >= 2 \(with log sampling it is the factor"),
    "unknown sampling": ({"model.z_size": {"int": {"min": 1, "max": 8, "sampling": "exp"}}},
                         r"sampling = 'exp' is not allowed; choose one of: linear, log"),
    "list field": ({"model.dropout_locations": {"choice": [["embedding"]]}},
                   r"model.dropout_locations holds a list, which cannot be searched"),
    "null choice": ({"train.steps_per_epoch": {"choice": [None, 3]}}, r"None cannot be a choice"),
    "repeated choice": ({"model.z_size": {"choice": [4, 4]}}, r"4 is listed twice"),
    "nothing searched": ({"train.epochs": {"fixed": 3}}, r"searches no field"),
    "unknown tuner": ({"tuner": "grid", "model.z_size": {"choice": [4]}},
                      r"tuner = 'grid' is not allowed; choose one of: random, bayesian, hyperband"),
    "bad max_trials": ({"max_trials": 0, "model.z_size": {"choice": [4]}}, r"max_trials = 0 must be an integer >= 1"),
    "unknown objective": ({"objective": "loss", "model.z_size": {"choice": [4]}},
                          r"objective = 'loss' is not allowed; choose one of: val_nll, val_loss"),
    "not a mapping": ([1, 2], r"the top level must be a mapping of config fields"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_space_is_an_error_naming_the_field_and_the_fix(case):
    raw, message = MALFORMED[case]
    with pytest.raises(SearchSpaceError, match=r"^space.yaml: .*" + message):
        search_space.from_dict(raw, source="space.yaml")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"'nope.yaml' does not exist; the shipped spaces are in configs/spaces"):
        search_space.load("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model.z_size: {choice: [4\n")
    with pytest.raises(SearchSpaceError, match=r"bad.yaml: not valid YAML"):
        search_space.load(str(bad))
    yaml_exponent = tmp_path / "exponent.yaml"
    yaml_exponent.write_text("train.learning_rate: {float: {min: 1e-4, max: 1.0e-3, sampling: log}}\n")
    with pytest.raises(SearchSpaceError, match=r"exponent.yaml: train.learning_rate: float min: .*write 0.0001"):
        search_space.load(str(yaml_exponent))


def test_check_field_checks_one_value_but_not_constraints_between_fields():
    dropout = config_lib.check_field("model.dropout", 0)
    assert dropout == 0.0 and isinstance(dropout, float)
    assert config_lib.check_field("model.z_size", 128) == 128  # above the default hidden_flow_units: not checked here
    assert config_lib.check_field("train.steps_per_epoch", None) is None
    with pytest.raises(config_lib.ConfigError, match=r"^src: model.hidden_flow = 'maf' is not allowed"):
        config_lib.check_field("model.hidden_flow", "maf", source="src")
    with pytest.raises(config_lib.ConfigError, match=r"unknown key in model 'zsize' \(did you mean 'z_size'\?\)"):
        config_lib.check_field("model.zsize", 4)
    with pytest.raises(config_lib.ConfigError, match=r"'z_size' is not a config field; write section.key"):
        config_lib.check_field("z_size", 4)


def corners(dimension):
    """Every choice, or both ends of a range."""
    return dimension.values if dimension.kind == "choice" else [dimension.low, dimension.high]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(SPACES) if f.endswith(".yaml")))
def test_every_shipped_space_gives_valid_configs_at_every_corner(name):
    space = search_space.load(os.path.join(SPACES, name))
    base = config_lib.load(os.path.join(REPO, "configs", name))  # a space is named after its base config
    combinations = list(itertools.product(*(corners(d) for d in space.dimensions)))
    for values in combinations:
        config = space.apply(base, dict(zip(space.fields, values)))
        assert [getattr(getattr(config, f.split(".")[0]), f.split(".")[1]) for f in space.fields] == list(values)
    assert len(combinations) > 1


@pytest.mark.parametrize("corner", ["low", "high"])
def test_the_attention_spaces_trial_configs_build_their_networks(corner):
    """A trial of the attention space builds the model it names: each part's network and its sizes."""
    from standin_model import StandInBundle

    from tflatent.models.registry import build_model

    name = "jsb_chorales_af_af_attention_small.yaml"
    space = search_space.load(os.path.join(SPACES, name))
    base = config_lib.load(os.path.join(REPO, "configs", name), ["model.hidden_size=16", "model.z_size=4",
                                                               "model.prior_rnn_units=16"])
    pick = (lambda d: d.values[0] if d.kind == "choice" else d.low) if corner == "low" else (
        lambda d: d.values[-1] if d.kind == "choice" else d.high)
    values = {d.field: pick(d) for d in space.dimensions}
    values["model.emission_network"] = "transformer"  # at least one encoder in both trials
    model = build_model(space.apply(base, values), StandInBundle(music=True))
    m = model.get_config()
    assert {k: m[k.split(".")[1]] for k in values if k.startswith("model.")} == {
        k: v for k, v in values.items() if k.startswith("model.")}
    encoder = model.emission.rnn
    assert (encoder.name, encoder.units, encoder.num_layers) == (
        "encoder", values["model.attention_units"], values["model.attention_layers"])
    assert (encoder.num_heads, encoder.feed_forward_units) == (
        values["model.attention_heads"], values["model.attention_feed_forward_units"])
    assert model.inference_net.rnn.name == {"transformer": "encoder", "lstm": "bilstm"}[
        values["model.inference_network"]]
