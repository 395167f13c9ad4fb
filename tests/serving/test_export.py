"""python -m tflatent.export: SavedModels that a process without tflatent loads and that answer as the model does.

Tiny IAF/SCF (the paper's LSTMs, and self-attention in all three parts) and AF/AF models trained for two
steps on the JSB chorales and a tiny LSTM baseline on PTB are exported once per module; one fresh process
loads all four and calls every signature.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from graph_helpers import traced_op_types
from serving_helpers import CONFIGS, TINY, train_tiny
from tensorflow.core.protobuf import saved_model_pb2

from tflatent import config as config_lib
from tflatent import data
from tflatent.layers.lstm import LSTMStack
from tflatent.models.registry import build_model
from tflatent.serving import export
from tflatent.training.run_dir import RunDir, restore_model

RUNS = {"iaf_scf": "jsb_chorales_iaf_scf_small", "af_af": "jsb_chorales_af_af_small", "lstm": "ptb_lstm_small",
        "iaf_scf_attention": "jsb_chorales_iaf_scf_small"}
OVERRIDES = {"iaf_scf_attention": {"model.prior_network": "transformer", "model.inference_network": "transformer",
                                   "model.emission_network": "transformer", "model.attention_units": 8,
                                   "model.attention_layers": 1, "model.attention_heads": 2,
                                   "model.attention_feed_forward_units": 16}}
SAMPLES, CHUNK = 5, 2  # importance samples of the exported likelihood, drawn 2 + 2 + 1
SAMPLE_INPUTS = {"lengths": [7, 3, 5], "temperature": 0.8, "seed": 11}
LL_SEED = 3

# Runs in a fresh interpreter: only TensorFlow, never tflatent.
FRESH_PROCESS = r"""
import json, os, sys
import numpy as np
import tensorflow as tf

spec_path, out_path = sys.argv[1:]
results = {}
for model, job in json.load(open(spec_path)).items():
    loaded = tf.saved_model.load(job["path"])
    assert sorted(loaded.signatures) == sorted(job["calls"]), sorted(loaded.signatures)
    for signature, inputs in job["calls"].items():
        function = loaded.signatures[signature]
        specs = function.structured_input_signature[1]
        outputs = function(**{key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()})
        for key, value in outputs.items():
            results[f"{model}/{signature}/{key}"] = value.numpy()
    with open(os.path.join(job["path"], "assets", "metadata.json"), "rb") as f:
        results[f"{model}/asset/metadata.json"] = np.array(f.read())
    with open(os.path.join(job["path"], "assets", "config.yaml"), "rb") as f:
        results[f"{model}/asset/config.yaml"] = np.array(f.read())
np.savez(out_path, **results)
print(json.dumps({"tflatent_imported": any(name.split(".")[0] == "tflatent" for name in sys.modules)}))
"""


class Exported:
    """One trained run, its export (version 1) and the in-process model restored as export restored it."""

    def __init__(self, root, name, data_dir, tfds_dir):
        self.run = train_tiny(root / "runs" / name, RUNS[name], data_dir, tfds_dir, OVERRIDES.get(name))
        self.out = str(root / "saved_models" / name)
        assert export.main(["--run", self.run, "--out", self.out, "--samples", str(SAMPLES),
                            "--chunk", str(CHUNK)]) == 0
        self.path = os.path.join(self.out, "1")
        self.config = RunDir(self.run).load_config()
        self.bundle = data.load_dataset(self.config.data, self.config.train.seed)
        self.model, _ = restore_model(RunDir(self.run), self.bundle)
        x, lengths = next(iter(self.bundle.batches("valid", False, batch_size=3)))
        steps = 12
        self.x, self.lengths = x[:, :steps].numpy(), np.minimum(lengths.numpy(), steps)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir, tfds_dir):
    root = tmp_path_factory.mktemp("export")
    return {name: Exported(root, name, data_dir, tfds_dir) for name in RUNS}


def calls(e: Exported) -> dict:
    """Every signature of an export with its inputs (JSON-ready)."""
    x, lengths = e.x.tolist(), e.lengths.tolist()
    flow = e.config.model.type == "flow"
    result = {"serving_default": SAMPLE_INPUTS, "metadata": {},
              "log_likelihood": {"x": x, "lengths": lengths, **({"seed": LL_SEED} if flow else {})}}
    if flow:
        result["encode"] = {"x": x, "lengths": lengths}
    return result


@pytest.fixture(scope="module")
def loaded(exported):
    """The music IAF/SCF and text exports loaded in this process (their ``signatures`` need them alive)."""
    return {name: tf.saved_model.load(exported[name].path) for name in ("iaf_scf", "lstm")}


@pytest.fixture(scope="module")
def fresh_results(exported, tmp_path_factory):
    """The outputs of every signature, computed in a fresh process that never imports tflatent."""
    folder = tmp_path_factory.mktemp("fresh")
    spec = {name: {"path": e.path, "calls": calls(e)} for name, e in exported.items()}
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(folder / "spec.json"), str(folder / "out.npz")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"tflatent_imported": False}
    return dict(np.load(folder / "out.npz"))


@pytest.mark.parametrize("name", ["iaf_scf", "af_af", "iaf_scf_attention"])
def test_flow_signatures_match_the_model(exported, fresh_results, name):
    e = exported[name]
    lengths = tf.constant(SAMPLE_INPUTS["lengths"])
    x, _ = e.model.generate(lengths=lengths, temperature=SAMPLE_INPUTS["temperature"], seed=SAMPLE_INPUTS["seed"])
    np.testing.assert_array_equal(fresh_results[f"{name}/serving_default/x"], x)
    np.testing.assert_array_equal(fresh_results[f"{name}/serving_default/lengths"], lengths)
    assert fresh_results[f"{name}/serving_default/x"].shape == (3, 7, 88)

    log_likelihood = e.model.log_likelihood(e.x, e.lengths, num_samples=SAMPLES, chunk=CHUNK,
                                            seed=LL_SEED).numpy()
    np.testing.assert_allclose(fresh_results[f"{name}/log_likelihood/log_likelihood"], log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(fresh_results[f"{name}/log_likelihood/nll_per_token"],
                               -log_likelihood / (e.lengths + 1), rtol=1e-5)
    other_seed = e.model.log_likelihood(e.x, e.lengths, num_samples=SAMPLES, chunk=CHUNK,
                                        seed=LL_SEED + 1).numpy()
    assert np.all(np.abs(other_seed - log_likelihood) > 1e-4)  # the seed does choose the samples

    mu, logvar = e.model.inference_net(e.x, e.lengths)
    mask = (np.arange(e.x.shape[1])[None] < e.lengths[:, None])[..., None]
    np.testing.assert_allclose(fresh_results[f"{name}/encode/z_mean"], mu * mask, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fresh_results[f"{name}/encode/z_log_variance"], logvar * mask, rtol=1e-5, atol=1e-6)
    assert fresh_results[f"{name}/encode/z_mean"].shape == (3, 12, 4)


def test_attention_parts_leave_every_signature_unchanged(exported, loaded):
    """Self-attention q(z|x), p(x|z) and prior: the LSTM model's signatures, inputs and outputs (their
    answers match the model's in test_flow_signatures_match_the_model)."""
    assert exported["iaf_scf_attention"].model.inference_net.rnn.name == "encoder"
    assert exported["iaf_scf_attention"].model.emission.rnn.name == "encoder"
    lstm, attention = loaded["iaf_scf"], tf.saved_model.load(exported["iaf_scf_attention"].path)
    assert sorted(attention.signatures) == sorted(lstm.signatures)
    for name, function in lstm.signatures.items():
        assert attention.signatures[name].structured_input_signature == function.structured_input_signature, name
        assert attention.signatures[name].structured_outputs == function.structured_outputs, name


def test_baseline_signatures_match_the_model(exported, fresh_results):
    e = exported["lstm"]
    lengths = tf.constant(SAMPLE_INPUTS["lengths"])
    x = tf.function(e.model.generate_for_lengths)(lengths, SAMPLE_INPUTS["temperature"],
                                                   tf.constant([SAMPLE_INPUTS["seed"], 0]))
    np.testing.assert_array_equal(fresh_results["lstm/serving_default/x"], x)
    assert fresh_results["lstm/serving_default/x"].dtype == np.int32
    np.testing.assert_allclose(fresh_results["lstm/log_likelihood/log_likelihood"],
                               e.model.log_likelihood(e.x, e.lengths), rtol=1e-5)
    assert "lstm/encode/z_mean" not in fresh_results


def test_assets_let_a_client_decode_without_tflatent(exported, fresh_results):
    for name, e in exported.items():
        metadata = json.loads(fresh_results[f"{name}/asset/metadata.json"].item())
        assert fresh_results[f"{name}/metadata/metadata"].item() == fresh_results[f"{name}/asset/metadata.json"].item()
        assert yaml.safe_load(fresh_results[f"{name}/metadata/config"].item()) == e.config.to_dict()
        assert metadata["max_time"] == e.bundle.max_time and metadata["model"] == e.config.model.type
    music = json.loads(fresh_results["iaf_scf/asset/metadata.json"].item())
    assert music["pitch_offset"] == 21 and music["frame_size"] == 88 and "vocabulary" not in music
    assert music["importance_samples"] == SAMPLES and music["importance_chunk"] == CHUNK
    text = json.loads(fresh_results["lstm/asset/metadata.json"].item())
    assert text["vocabulary"] == exported["lstm"].bundle.vocab and text["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert (text["pad_id"], text["unk_id"]) == (0, 1)


def _xla_functions(path) -> list[str]:
    """The functions of a SavedModel's graph that must be compiled with XLA (``jit_compile=True``)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return [function.signature.name for function in saved_model.meta_graphs[0].graph_def.library.function
            if function.attr["_XlaMustCompile"].b]


def test_default_exports_hold_no_xla_function(exported, fresh_results):
    """Stock TF Serving refuses XLA-compiled functions (``--xla_cpu_compilation_enabled`` is off by
    default; its GPU builds have no XLA compiler), so a default export must have none."""
    for name, e in exported.items():
        assert _xla_functions(e.path) == [], name
        assert json.loads(fresh_results[f"{name}/asset/metadata.json"].item())["xla"] is False


@pytest.mark.parametrize("name", ["af_af", "lstm"])
def test_an_xla_export_samples_as_generate_does(exported, tmp_path, name):
    e = exported[name]
    assert export.main(["--run", e.run, "--out", str(tmp_path), "--samples", "2", "--xla"]) == 0
    path = str(tmp_path / "1")
    assert _xla_functions(path)
    with open(os.path.join(path, "assets", "metadata.json")) as f:
        assert json.load(f)["xla"] is True
    sample = tf.saved_model.load(path).signatures["serving_default"]
    lengths = tf.constant(SAMPLE_INPUTS["lengths"])
    served = sample(lengths=lengths, temperature=tf.constant(SAMPLE_INPUTS["temperature"]),
                    seed=tf.constant(SAMPLE_INPUTS["seed"]))["x"]
    # The LSTM baseline's draw, too, is generate's: both run its loop under XLA.
    x, _ = e.model.generate(lengths=lengths, temperature=SAMPLE_INPUTS["temperature"], seed=SAMPLE_INPUTS["seed"])
    np.testing.assert_array_equal(served, x)


def _digest(folder):
    digest = hashlib.sha256()
    for base, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(base, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


def test_a_second_export_is_a_new_version(exported):
    e = exported["lstm"]
    before = _digest(e.path)
    assert export.main(["--run", e.run, "--out", e.out]) == 0
    assert sorted(os.listdir(e.out)) == ["1", "2"]  # no staging folder is left behind
    assert _digest(e.path) == before
    assert export.next_version(e.out) == 3
    metadata = json.loads(tf.saved_model.load(os.path.join(e.out, "2")).signatures["metadata"]()["metadata"].numpy())
    assert metadata["source"]["checkpoint"].endswith("best.weights.h5")


def test_saved_model_cli_lists_signatures_with_dtypes_and_shapes(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    done = subprocess.run([cli, "show", "--all", "--dir", exported["iaf_scf"].path], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    signatures = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", done.stdout, re.S))
    assert sorted(signatures) == ["__saved_model_init_op", "encode", "log_likelihood", "metadata", "serving_default"]

    def tensor(signature, kind, name):
        found = re.search(rf"{kind}\['{name}'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))",
                          signatures[signature])
        assert found, (signature, kind, name, signatures[signature])
        return found.groups()

    assert tensor("serving_default", "inputs", "lengths") == ("DT_INT32", "(-1)")
    assert tensor("serving_default", "inputs", "temperature") == ("DT_FLOAT", "()")
    assert tensor("serving_default", "inputs", "seed") == ("DT_INT32", "()")
    assert tensor("serving_default", "outputs", "x") == ("DT_FLOAT", "(-1, -1, 88)")
    assert tensor("serving_default", "outputs", "lengths") == ("DT_INT32", "(-1)")
    assert tensor("log_likelihood", "inputs", "x") == ("DT_FLOAT", "(-1, -1, 88)")
    assert tensor("log_likelihood", "outputs", "log_likelihood") == ("DT_FLOAT", "(-1)")
    assert tensor("log_likelihood", "outputs", "nll_per_token") == ("DT_FLOAT", "(-1)")
    assert tensor("encode", "outputs", "z_mean") == ("DT_FLOAT", "(-1, -1, 4)")
    assert tensor("metadata", "outputs", "metadata") == ("DT_STRING", "()")


MUSIC_ERRORS = [
    ("length 0", dict(lengths=[4, 0]), "lengths: every length must be >= 1"),
    ("too long", dict(lengths=[4, 10_000]), r"lengths: every length must be <= max_time = \d+"),
    ("no lengths", dict(lengths=np.zeros([0], np.int32), x=np.zeros([0, 4, 88], np.float32)),
     "lengths: give at least one length"),
    ("batch sizes", dict(lengths=[4]), "x and lengths: the batch sizes differ"),
    ("short x", dict(lengths=[4, 6]), "x: has fewer steps than the longest of lengths"),
    ("frame values", dict(x=np.full([2, 4, 88], 0.5, np.float32)), "x: music frames must hold only 0"),
]


@pytest.mark.parametrize("case, change, message", MUSIC_ERRORS, ids=[case[0] for case in MUSIC_ERRORS])
def test_bad_music_input_is_refused_and_the_next_request_answered(loaded, case, change, message):
    signatures = loaded["iaf_scf"].signatures
    good = dict(x=np.zeros([2, 4, 88], np.float32), lengths=[4, 2])
    for signature in ("log_likelihood", "encode"):
        inputs = {**good, **change, **({"seed": 0} if signature == "log_likelihood" else {})}
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _call(signatures[signature], inputs)
        assert np.all(np.isfinite(_call(signatures[signature], {**inputs, **good})[
            "log_likelihood" if signature == "log_likelihood" else "z_mean"]))


@pytest.mark.parametrize("lengths, temperature, message", [
    ([3, 0], 1.0, "lengths: every length must be >= 1"),
    ([3, 10_000], 1.0, "lengths: every length must be <= max_time"),
    (np.zeros([0], np.int32), 1.0, "lengths: give at least one length"),
    ([3], 0.0, "temperature: must be > 0"),
])
def test_bad_sample_request_is_refused_and_the_next_answered(loaded, lengths, temperature, message):
    sample = loaded["iaf_scf"].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(sample, dict(lengths=lengths, temperature=temperature, seed=0))
    assert _call(sample, dict(lengths=[3, 2], temperature=1.0, seed=0))["x"].shape == (2, 3, 88)


def test_bad_token_ids_are_refused_and_the_next_request_answered(exported, loaded):
    log_likelihood = loaded["lstm"].signatures["log_likelihood"]
    vocab_size = len(exported["lstm"].bundle.vocab)
    for bad in (vocab_size, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"x: token ids must be in \[0, {vocab_size}\)"):
            _call(log_likelihood, dict(x=[[5, bad, 7]], lengths=[3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x: the padding id 0 appears inside a "):
        _call(log_likelihood, dict(x=[[5, 0, 7], [5, 6, 0]], lengths=[3, 2]))
    assert np.all(np.isfinite(_call(log_likelihood, dict(x=[[5, 6, 7], [5, 6, 0]], lengths=[3, 2]))[
        "log_likelihood"]))


def _call(function, inputs):
    specs = function.structured_input_signature[1]
    return {key: value.numpy() for key, value in
            function(**{key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()}).items()}


def _run_request(loaded_model, request) -> dict:
    """A PredictRequest run as TF Serving runs it: its TensorProtos to tensors, into the named signature."""
    function = loaded_model.signatures[request.model_spec.signature_name or "serving_default"]
    inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
    return {key: value.numpy() for key, value in function(**inputs).items()}


def test_warmup_records_and_client_predict_requests_match_the_signatures(exported, loaded):
    """TF Serving's own protos (tensorflow-serving-api): the export's warm-up PredictionLogs, and requests
    built as a gRPC client builds them from the signatures' specs, are accepted by the SavedModel."""
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    for name, model in loaded.items():
        path = os.path.join(exported[name].path, "assets.extra", "tf_serving_warmup_requests")
        logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
                for record in tf.data.TFRecordDataset(path)]
        requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                    for log in logs}
        assert sorted(requests) == sorted(set(model.signatures) - {"metadata"})
        for request in requests.values():
            outputs = _run_request(model, request)
            assert all(np.all(np.isfinite(value)) for value in outputs.values() if value.dtype.kind == "f")
        for signature, inputs in calls(exported[name]).items():
            specs = model.signatures[signature].structured_input_signature[1]
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = name, signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=specs[key].dtype))
            direct = _call(model.signatures[signature], inputs)
            for key, value in _run_request(model, request).items():
                np.testing.assert_array_equal(value, direct[key])


@pytest.mark.parametrize("name,bundle_fixture", [("jsb_chorales_af_af_small", "jsb_bundle"),
                                                 ("ptb_lstm_small", "ptb_bundle")])
def test_signatures_traced_for_a_gpu_hold_no_cudnn_op(name, bundle_fixture, request, tmp_path):
    """``model.lstm_impl: auto`` with a GPU visible is "cudnn" traced where the GPU is: each signature of
    such a model, traced inside ``/GPU:0`` (as on a GPU machine; inspected, not run), holds no cuDNN op,
    while the model's own likelihood traced there does."""
    bundle = request.getfixturevalue(bundle_fixture)
    settings = [f"{key}={value}" for key, value in TINY.items()] + ["model.lstm_impl=cudnn"]
    config = config_lib.load(os.path.join(CONFIGS, name + ".yaml"), settings)
    model = build_model(config, bundle)
    stacks = {stack.implementation for stack in model._flatten_layers() if isinstance(stack, LSTMStack)}
    assert stacks == {"cudnn"}
    for asset in ("metadata.json", "config.yaml"):
        (tmp_path / asset).write_text("{}")
    module = export.ServingModule(model, config, str(tmp_path / "metadata.json"), str(tmp_path / "config.yaml"),
                                  num_samples=2, chunk=2)
    signatures = module.signatures()
    for signature in signatures.values():
        ops = traced_op_types(signature.python_function, *signature.input_signature, device="/GPU:0")
        assert not [op for op in ops if op.startswith("Cudnn")], sorted(ops)
    assert {stack.implementation for stack in model._flatten_layers() if isinstance(stack, LSTMStack)} == stacks
    x_spec, lengths_spec = signatures["log_likelihood"].input_signature[:2]
    sampled = dict(num_samples=2, chunk=2) if model.has_latent else {}
    unswitched = traced_op_types(lambda x, lengths: model.log_likelihood(x, lengths, **sampled),
                                 x_spec, lengths_spec, device="/GPU:0")
    assert unswitched["CudnnRNNV3"] > 0
