"""Strategy selection, precision, and data-parallel training that matches one device (subprocesses)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tflatent.training import distribute

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)


def test_none_and_auto_give_the_default_strategy_on_a_cpu():
    for name in ("none", "auto"):
        strategy = distribute.make_strategy(name)
        assert strategy is tf.distribute.get_strategy()
        assert distribute.is_chief(strategy)
        assert distribute.global_batch_size(5, strategy) == 5


def test_bad_requests_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="'gpus' is not allowed; choose one of: auto, none, mirrored"):
        distribute.make_strategy("gpus")
    with pytest.raises(ValueError, match="found no GPU.*set train.logical_cpus"):
        distribute.make_strategy("mirrored")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"task": {}}')
    with pytest.raises(ValueError, match="is not a cluster description"):
        distribute.make_strategy("multi_worker")


def test_splitting_the_cpu_after_tensorflow_started_explains_the_fix():
    tf.constant(1.0)  # TensorFlow's devices are initialised from here on
    count = len(tf.config.list_logical_devices("CPU")) + 1
    with pytest.raises(RuntimeError, match="already initialised its devices.*fresh process"):
        distribute.make_strategy("mirrored", logical_cpus=count)


def test_mixed_precision_is_ignored_with_a_warning_on_a_cpu():
    try:
        with pytest.warns(UserWarning, match="no GPU or TPU: training in float32"):
            policy = distribute.set_precision(True, tf.distribute.get_strategy())
        assert policy == keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


MIRRORED = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from tflatent.training import distribute
    from tflatent.training import optimizers
    mirrored = distribute.make_strategy("mirrored", logical_cpus=2)
    import keras, numpy as np, tensorflow as tf
    from standin_model import StandInBundle, StandInModel
    from tflatent.config import TrainConfig

    data = StandInBundle(music=True).batches("train", False, batch_size=8)
    adam = TrainConfig(learning_rate=0.1, clip_norm=0.05)  # the clip is active at every step
    sgd = TrainConfig(optimizer="sgd", learning_rate=1.0, clip_norm=0.05)

    def train(strategy, make_optimizer):
        with strategy.scope():
            model = StandInModel(88, music=True)
            model.compile(optimizer=make_optimizer())
        history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False).history
        weights = [tf.convert_to_tensor(v.value).numpy().ravel() for v in model.trainable_variables]
        return history["loss"][0], np.concatenate(weights)

    default = tf.distribute.get_strategy()
    one_loss, one_weights = train(default, lambda: optimizers.make_optimizer(adam))
    two_loss, two_weights = train(mirrored, lambda: optimizers.make_optimizer(adam))
    _, one_sgd = train(default, lambda: optimizers.make_optimizer(sgd))
    _, two_sgd = train(mirrored, lambda: optimizers.make_optimizer(sgd))
    _, keras_sgd = train(mirrored, lambda: keras.optimizers.SGD(1.0, global_clipnorm=0.05))
    # The LSTM baseline (a loss scaled by the global batch in its own train step), unequal lengths.
    from tflatent.models.lstm_baseline import LSTMBaseline
    lengths = np.array([6, 5, 4, 3, 6, 2, 1, 6], np.int32)
    tokens = np.random.default_rng(0).integers(1, 5, size=(8, 6)).astype(np.int32)
    tokens *= np.arange(6)[None] < lengths[:, None]
    log_p_T = np.r_[-np.inf, np.full(10, -np.log(10))].astype(np.float32)

    def train_baseline(strategy, jit_compile=False):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = LSTMBaseline(5, 10, log_p_T, embedding_size=6, hidden_size=8, dropout=0.0)
            model.build()
            model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=jit_compile)
        logs = model.fit(tf.data.Dataset.from_tensors((tokens, lengths)), epochs=1, verbose=0).history
        return logs["loss"][0], logs["nll"][0], model.get_weights(), (model.jit_compile, model.xla_per_replica)

    two_b_loss, two_b_nll, two_b, _ = train_baseline(mirrored)
    one_b_loss, one_b_nll, one_b, _ = train_baseline(default)
    # XLA: Keras compiles the whole step on one device; under two replicas each replica compiles its own.
    *two_xla, two_xla_mode = train_baseline(mirrored, jit_compile=True)
    *one_xla, one_xla_mode = train_baseline(default, jit_compile=True)
    try:
        with mirrored.scope():
            optimizers.make_optimizer(TrainConfig(grad_accum=2))
        accumulation = "accepted"
    except ValueError as err:
        accumulation = str(err)
    print(json.dumps({{"replicas": mirrored.num_replicas_in_sync, "one_loss": one_loss, "two_loss": two_loss,
                      "weights_diff": float(np.abs(one_weights - two_weights).max()),
                      "sgd_diff": float(np.abs(one_sgd - two_sgd).max()),
                      "keras_diff": float(np.abs(one_sgd - keras_sgd).max()),
                      "baseline_losses": [one_b_loss, two_b_loss], "baseline_nlls": [one_b_nll, two_b_nll],
                      "baseline_diff": float(max(np.abs(a - b).max() for a, b in zip(one_b, two_b))),
                      "xla_modes": [one_xla_mode, two_xla_mode], "xla_losses": [one_xla[0], two_xla[0]],
                      "xla_diff": float(max(np.abs(a - b).max() for a, b in zip(one_xla[2], two_xla[2]))),
                      "xla_vs_plain": float(max(np.abs(a - b).max() for a, b in zip(one_b, one_xla[2]))),
                      "accumulation": accumulation}}))
""")


def _run(args, env=None, timeout=240):
    return subprocess.run(args, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_two_steps_mirrored_over_two_logical_cpus_match_one_device():
    """The stand-in (two steps, Adam and SGD with an active clip) and one step of the LSTM baseline: the
    loss is scaled by the global batch, so the updates and metrics equal the single-device ones; also
    with XLA (``train.jit_compile``)."""
    done = _run([sys.executable, "-c", MIRRORED.format(tests=TESTS)])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["two_loss"] == pytest.approx(result["one_loss"], rel=1e-6)
    assert result["weights_diff"] < 1e-6 and result["sgd_diff"] < 1e-6
    # Keras's own clipping bounds each replica's share instead of the global gradient: a larger step.
    assert result["keras_diff"] > 0.01
    assert "train.grad_accum = 2 cannot run on 2 replicas" in result["accumulation"]
    assert result["baseline_losses"][1] == pytest.approx(result["baseline_losses"][0], rel=1e-5)
    assert result["baseline_nlls"][1] == pytest.approx(result["baseline_nlls"][0], rel=1e-5)
    assert result["baseline_diff"] < 1e-6
    # train.jit_compile under a strategy: Keras's own XLA of the replicated step fails ("Trying to access
    # resource ... located in device CPU:1 from device CPU:0"); each replica compiles its step instead.
    assert result["xla_modes"] == [[True, False], [False, True]]
    assert result["xla_losses"][1] == pytest.approx(result["xla_losses"][0], rel=1e-5)
    assert result["xla_diff"] < 1e-5 and result["xla_vs_plain"] < 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path):
    values = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return values


FLOW = os.path.join(TESTS, "training", "distributed_flow.py")


def _figures(output):
    return json.loads(output.strip().splitlines()[-1])


def _assert_matches_one_device(figures, replicas, sequences):
    assert (figures["status"], figures["replicas"], figures["sequences"]) == ("completed", replicas, sequences)
    assert figures["val_nll"] == pytest.approx(figures["one_nll"], rel=1e-5)
    assert figures["val_loss"] == pytest.approx(figures["one_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_flow_model_with_attention_trains_and_validates_mirrored_over_three_cpus_on_an_uneven_split(tmp_path):
    """Self-attention in q, p and the prior (the two-worker test below runs the LSTMs). 4 validation
    chorales in one global batch of 6: shares 2/2/0, an empty replica in the first batch (where Keras
    reduces across replicas with axis=None, keras-team/keras#19246), and one batch shape to compile."""
    done = _run([sys.executable, FLOW, "mirrored", str(tmp_path / "run"), "4", "transformer", "3"], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_matches_one_device(_figures(done.stdout), replicas=3, sequences=4)
    assert "stateful random seeds in replicated context" not in done.stderr


@pytest.mark.slow
def test_a_flow_model_trains_and_validates_on_two_workers_on_an_uneven_split(tmp_path):
    """5 validation chorales in global batches of 4 over two worker processes: 2/2, then 1/0. The workers
    end with the same weights; worker 0 writes the run directory (summary, best checkpoint), worker 1
    only its own backups."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    workers = [subprocess.Popen([sys.executable, FLOW, "multi_worker", str(tmp_path / "run"), "5", "lstm"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(
                                    {"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    outputs = [worker.communicate(timeout=900) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert "2 replica(s) x batch 2 = global batch 4" in outputs[0][0]
    figures = [_figures(stdout) for stdout, _ in outputs]
    for each in figures:
        _assert_matches_one_device(each, replicas=2, sequences=5)
    assert figures[0]["val_nll"] == figures[1]["val_nll"]  # one figure, reduced across the workers
    run = tmp_path / "run"
    chief = _weights(run / "backup" / "epoch-0001.weights.h5")
    other = _weights(run / "workers" / "1" / "backup" / "epoch-0001.weights.h5")
    assert chief.keys() == other.keys() and len(chief) > 2
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name])
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["epochs_completed"], summary["replicas"]) == ("completed", 1, 2)
    assert (run / "checkpoints" / "best.weights.h5").exists()
    assert not (run / "workers" / "1" / "checkpoints" / "best.weights.h5").exists()
