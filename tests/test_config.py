"""Config loading: every shipped config, inheritance, overrides and the errors for bad input."""

import glob
import os

import pytest

from tflatent import config as config_lib
from tflatent.config import ConfigError

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
RUNNABLE = sorted(p for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))
                  if not os.path.basename(p).startswith("_"))


def load(name, overrides=None):
    return config_lib.load(os.path.join(CONFIGS, name), overrides)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_data_set_and_model_has_a_paper_and_a_small_config():
    names = {os.path.basename(p)[:-5] for p in RUNNABLE}
    for dataset in config_lib.DATASETS:
        for model in ("af_af", "af_scf", "iaf_scf", "lstm"):
            assert f"{dataset}_{model}" in names
            assert f"{dataset}_{model}_small" in names
    assert {"ptb_ablation_affine", "ptb_ablation_no_hidden_flow", "ptb_ablation_affine_no_hidden_flow",
            "ptb_af_only"} <= names


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))),
                         ids=os.path.basename)
def test_every_config_loads_and_round_trips(path, tmp_path):
    config = config_lib.load(path)
    resolved = write(tmp_path, "resolved.yaml", config.to_yaml())
    assert config_lib.load(resolved) == config


@pytest.mark.parametrize("path", RUNNABLE, ids=os.path.basename)
def test_configs_follow_the_reference_families(path):
    config = load(os.path.basename(path))
    name = os.path.basename(path)
    assert config.data.dataset == next(d for d in config_lib.DATASETS if name.startswith(d))
    assert config.data.length_prior_smoothing == (0.0 if config.data.dataset == "ptb" else 1.0)
    if "_lstm" in name:
        assert (config.model.type, config.model.dropout) == ("lstm", 0.1)
        assert (config.train.optimizer, config.train.learning_rate) == ("sgd", 20.0)
        assert (config.train.initial_kl_zero, config.train.kl_rampup_time, config.train.nll_every) == (0, 0, 0)
        assert config.train.patience == (1 if config.data.dataset == "ptb" else 4)
    else:
        assert (config.model.type, config.train.optimizer, config.train.learning_rate) == ("flow", "adam", 1e-3)
        assert config.train.clip_norm == 0.25
        assert config.train.patience == (1 if config.data.dataset == "ptb" else 2)
    small = name.endswith("_small.yaml")
    assert (config.model.hidden_size <= 256) == small
    if small and config.model.type == "flow":
        schedule = (config.train.initial_kl_zero, config.train.kl_rampup_time)
        # Data sets with few batches an epoch anneal over more epochs (the configs' comments say why).
        assert schedule == {"jsb_chorales": (20, 15), "nottingham": (4, 4)}.get(config.data.dataset, (2, 3))
        assert sum(schedule) + 5 <= config.train.epochs  # annealing ends with epochs left at β = 1
        assert config.model.hidden_flow_units >= config.model.z_size


def _distinct_models():
    """One config per distinct (model section, text or music): the configs that build different models."""
    distinct = {}
    for path in RUNNABLE:
        config = config_lib.load(path)
        distinct.setdefault((repr(config.model), config.is_music), config)
    return sorted(distinct.values(), key=lambda c: c.train.run_name)


@pytest.mark.slow
@pytest.mark.parametrize("config", _distinct_models(), ids=lambda c: c.train.run_name)
def test_every_config_builds_its_model(config):
    """Each distinct model section builds (on a small stand-in bundle: the sizes come from the config)."""
    from standin_model import StandInBundle

    from tflatent.models.registry import build_model

    model = build_model(config, StandInBundle(music=config.is_music))
    assert model.built and model.count_params() > 0
    assert type(model).__name__ == {"flow": "LatentFlowModel", "lstm": "LSTMBaseline"}[config.model.type]
    assert (model.kl_weight is None) == (config.model.type == "lstm") == (not model.has_latent)


def test_paper_settings_of_the_readme_runs():
    ptb = load("ptb_af_af.yaml")
    assert (ptb.data.batch_size, ptb.data.eval_batch_size, ptb.train.elbo_samples, ptb.train.nll_samples,
            ptb.train.initial_kl_zero, ptb.train.kl_rampup_time, ptb.train.epochs) == (15, 15, 10, 30, 4, 10, 100)
    assert (ptb.model.hidden_size, ptb.model.z_size, ptb.model.hidden_flow_layers, ptb.model.dropout) == \
        (500, 50, 5, 0.2)
    iaf = load("ptb_iaf_scf.yaml")
    assert (iaf.model.time_flow, iaf.model.hidden_flow, iaf.model.dropout, iaf.model.hidden_flow_layers) == (
        "iaf", "scf", 0.0, 3)
    jsb = load("jsb_chorales_iaf_scf.yaml")
    assert (jsb.model.time_flow, jsb.model.hidden_flow, jsb.model.dropout, jsb.model.hidden_flow_layers) == (
        "iaf", "scf", 0.2, 5)
    assert (jsb.data.batch_size, jsb.data.eval_batch_size, jsb.train.elbo_samples, jsb.train.initial_kl_zero,
            jsb.train.kl_rampup_time) == (5, 64, 1, 20, 15)
    nottingham = load("nottingham_af_scf.yaml")
    assert (nottingham.data.eval_batch_size, nottingham.model.hidden_flow) == (1, "scf")
    for name in ("piano_midi_af_af.yaml", "muse_data_iaf_scf.yaml"):
        config = load(name)
        assert (config.data.batch_size, config.train.nll_samples, config.train.grad_accum) == (1, 4, 8)
    assert load("jsb_chorales_lstm.yaml").data.batch_size == 15
    assert load("ptb_ablation_affine_no_hidden_flow.yaml").model.transform == "affine"
    assert load("ptb_af_only.yaml").model.time_flow == "none"


def test_extends_merges_parents_in_order_then_the_file(tmp_path):
    write(tmp_path, "a.yaml", "model: {z_size: 8, hidden_size: 16}\ntrain: {epochs: 3}\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nmodel: {z_size: 12}\n")
    write(tmp_path, "c.yaml", "model: {hidden_size: 24, hidden_flow_units: 12}\n")
    config = config_lib.load(write(tmp_path, "d.yaml", "extends: [b.yaml, c.yaml]\ntrain: {epochs: 5}\n"))
    assert (config.model.z_size, config.model.hidden_size, config.train.epochs) == (12, 24, 5)
    assert config.train.run_name == "d"


def test_extends_cycle_and_missing_parent_are_named(tmp_path):
    write(tmp_path, "x.yaml", "extends: y.yaml\n")
    write(tmp_path, "y.yaml", "extends: [x.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        config_lib.load(str(tmp_path / "x.yaml"))
    with pytest.raises(ConfigError, match="nothere.yaml.*does not exist"):
        config_lib.load(write(tmp_path, "z.yaml", "extends: nothere.yaml\n"))
    with pytest.raises(ConfigError, match="extends = 3"):
        config_lib.load(write(tmp_path, "w.yaml", "extends: 3\n"))


def test_unknown_key_names_the_key_the_closest_match_and_the_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        config_lib.load(write(tmp_path, "bad.yaml", "model:\n  zsize: 16\n"))
    message = str(err.value)
    assert "'zsize'" in message and "did you mean 'z_size'" in message and "hidden_flow_units" in message
    with pytest.raises(ConfigError, match="unknown section 'modle'.*did you mean 'model'"):
        config_lib.load(write(tmp_path, "bad2.yaml", "modle: {z_size: 16}\n"))


def test_wrong_type_names_the_key_the_value_and_the_expected_type(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs = 'ten' has the wrong type; expected int"):
        config_lib.load(write(tmp_path, "bad.yaml", "train: {epochs: ten}\n"))
    with pytest.raises(ConfigError, match=r"model\.tie_weights = 1 has the wrong type; expected bool"):
        config_lib.load(write(tmp_path, "bad.yaml", "model: {tie_weights: 1}\n"))
    with pytest.raises(ConfigError, match=r"train\.steps_per_epoch = 2\.5 .*expected int or null"):
        config_lib.load(write(tmp_path, "bad.yaml", "train: {steps_per_epoch: 2.5}\n"))


def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path):
    cases = [
        ("model: {hidden_flow: maf}", r"model\.hidden_flow = 'maf' is not allowed; choose one of: af, scf, none"),
        ("train: {distribute: gpu}", r"train\.distribute = 'gpu' .*auto, none, mirrored, multi_worker, tpu"),
        ("train: {verbose: 3}", r"train\.verbose = 3 .*0, 1, 2"),
        ("train: {learning_rate: 0}", r"train\.learning_rate = 0\.0 must be > 0"),
        ("train: {logical_cpus: 0}", r"train\.logical_cpus = 0 must be > 0"),
        ("train: {kl_floor: -1}", r"train\.kl_floor = -1\.0 must be >= 0"),
        ("train: {lr_decay: 0.5}", r"train\.lr_decay = 0\.5 must be >= 1"),
        ("model: {dropout: 1.0}", r"model\.dropout = 1\.0 must be in \[0, 1\)"),
        ("model: {dropout_locations: [everywhere]}", r"dropout_locations contains 'everywhere'.*prior_rnn"),
        ("model: {z_size: 64, hidden_flow_units: 32}", r"hidden_flow_units = 32 must be >= model\.z_size = 64"),
        ("model: {time_flow: iaf}", r"time_flow = 'iaf' needs model\.hidden_flow = 'scf' or 'none'"),
        ("model: {emission_network: transformer, attention_units: 30, attention_heads: 4}",
         r"attention_units = 30 must be divisible by model\.attention_heads = 4"),
        ("data: {min_length: 10, max_length: 5}", r"min_length = 10 exceeds data\.max_length = 5"),
    ]
    for text, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            config_lib.load(write(tmp_path, "bad.yaml", text + "\n"))


def test_overrides_set_any_field_and_bad_ones_are_clear():
    config = load("jsb_chorales_af_af_small.yaml", ["model.z_size=16", "train.steps_per_epoch=null",
                                                    "model.dropout_locations=[prior_rnn, embedding]"])
    assert (config.model.z_size, config.train.steps_per_epoch) == (16, None)
    assert config.model.dropout_locations == ["prior_rnn", "embedding"]
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load("ptb_af_af.yaml", ["model.z_size"])
    with pytest.raises(ConfigError, match="the key must be section.key"):
        load("ptb_af_af.yaml", ["z_size=3"])
    with pytest.raises(ConfigError, match=r"unknown key in train 'epoch'.*did you mean 'epochs'"):
        load("ptb_af_af.yaml", ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"train\.epochs = 'many' has the wrong type"):
        load("ptb_af_af.yaml", ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"data\.dataset = 'mnist' is not allowed"):
        load("ptb_af_af.yaml", ["data.dataset=mnist"])


def test_exponent_numbers_without_a_dot_or_sign_are_numbers_in_files_and_overrides(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 and 1e6 as text; users write them, so they are numbers here."""
    parent = os.path.abspath(os.path.join(CONFIGS, "ptb_af_af_small.yaml"))
    path = write(tmp_path, "c.yaml", "extends: " + parent
                 + "\ntrain:\n  learning_rate: 1e-3\n  clip_norm: 1.0e6\n  steps_per_epoch: 1e2\n")
    config = config_lib.load(path, ["train.kl_floor=1e-4"])
    assert (config.train.learning_rate, config.train.clip_norm, config.train.kl_floor) == (1e-3, 1e6, 1e-4)
    assert config.train.steps_per_epoch == 100 and isinstance(config.train.steps_per_epoch, int)
    with pytest.raises(ConfigError, match="train.epochs = 2.5 has the wrong type; expected int"):
        config_lib.load(path, ["train.epochs=2.5"])
