"""``tflatent.cpu_threads``: the automatic choice of threads per op, and setting it in a process."""

import logging
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tflatent import config as config_lib
from tflatent import cpu_threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(**fields):
    """A default config (the paper's AF/AF with LSTMs) with ``section.key`` fields replaced."""
    config = config_lib.Config()
    for path, value in fields.items():
        section, key = path.split("__")
        setattr(getattr(config, section), key, value)
    return config_lib.validate(config)


@pytest.mark.parametrize("cpus, expected", [(1, 1), (2, 1), (3, 1), (8, 4), (64, 32)])
def test_a_flow_model_with_lstms_on_the_cpu_gets_half_the_cores_per_op(cpus, expected):
    assert cpu_threads.threads_per_op(make(), cpus=cpus, accelerator=False) == expected


@pytest.mark.parametrize("fields", [
    {"model__type": "lstm"},  # one recurrence: every core helps its products
    {"model__inference_network": "transformer", "model__emission_network": "transformer",
     "model__prior_network": "transformer"},  # large products only
])
def test_models_without_two_recurrences_keep_tensorflows_default(fields):
    assert cpu_threads.threads_per_op(make(**fields), cpus=8, accelerator=False) == cpu_threads.TENSORFLOW_DEFAULT


def test_one_lstm_part_is_enough_for_the_split():
    config = make(model__inference_network="transformer", model__emission_network="transformer")
    assert cpu_threads.threads_per_op(config, cpus=4, accelerator=False) == 2


def test_an_accelerator_or_sampling_keeps_tensorflows_default_and_a_set_value_always_wins():
    assert cpu_threads.threads_per_op(make(), cpus=8, accelerator=True) == cpu_threads.TENSORFLOW_DEFAULT
    assert cpu_threads.threads_per_op(make(), cpus=8, accelerator=False, sampling=True) == 0
    assert cpu_threads.threads_per_op(make(train__distribute="tpu"), cpus=8) == cpu_threads.TENSORFLOW_DEFAULT
    for value in (0, 3):
        config = make(train__intra_op_threads=value)
        assert cpu_threads.threads_per_op(config, cpus=8, accelerator=True) == value
        assert cpu_threads.threads_per_op(config, cpus=2, accelerator=False) == value
        assert cpu_threads.threads_per_op(config, cpus=2, accelerator=False, sampling=True) == value


def test_a_negative_value_is_a_config_error():
    with pytest.raises(config_lib.ConfigError, match="intra_op_threads = -1 must be >= 0"):
        config_lib.from_dict({"train": {"intra_op_threads": -1}})


def test_after_the_runtime_started_the_value_stays_and_an_explicit_one_is_a_warning(caplog):
    tf.constant(1.0) + 1.0  # the runtime runs in this process from here on
    current = tf.config.threading.get_intra_op_parallelism_threads()
    wanted = current + 3
    with caplog.at_level(logging.INFO, logger="tflatent.cpu_threads"):
        assert cpu_threads.configure(make(train__intra_op_threads=wanted)) == current
        assert cpu_threads.configure(make(), cpus=2 * (wanted + 1), accelerator=False) == current
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.INFO]
    assert f"keeps {current} thread(s) per op instead of {wanted}" in caplog.records[0].getMessage()
    assert tf.config.threading.get_intra_op_parallelism_threads() == current


def test_at_the_start_of_a_process_the_value_takes_effect():
    code = ("from tflatent import config, cpu_threads; import tensorflow as tf; "
            "print(cpu_threads.configure(config.Config(), cpus=2, accelerator=False)); "
            "tf.constant(1.0) + 1.0; print(tf.config.threading.get_intra_op_parallelism_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]
