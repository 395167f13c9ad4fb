"""How many CPU threads each TensorFlow op may use (``train.intra_op_threads``), set once per process.

TensorFlow runs independent ops at once (its inter-op pool) and splits one op, such as a matrix product,
over threads (its intra-op pool; by default as many threads as cores). The latent flow models' time
is mostly LSTM steps whose products are small at training batch sizes — a step of the paper-size JSB
model is a [5, 500] × [500, 2000] product — and two such recurrences always run at once (the two
directions of a BiLSTM; the prior's LSTM and p(x|z)'s, which both read z). With every product split
over every core, the two loops' threads wait for each other at each step. One thread per op, the two
loops on the two cores, measured faster on a 2-core CPU (side by side, alternating processes):

    JSB AF/AF paper-size training step, 5 × 57     0.39 against 0.54–0.58 s
    PTB AF/AF reduced training step, 15 × 100       0.20 against 0.29 s
    PTB AF/SCF sampling, batch 1, T 256              0.13 against 0.26 s

whereas the LSTM baseline (one recurrence) was slower with one thread (training 0.46 against 0.38 s,
sampling T 256 0.27 against 0.20 s), and so was the IAF/SCF sampler (T 256 0.10–0.11 against
0.08–0.11 s; its exported ``serving_default`` 0.10–0.14 against 0.09–0.10 s), whose prior is one
recurrence and whose loops run as XLA executables. Hence the automatic choice (``threads_per_op``):

* a GPU or TPU present, or a process that only samples (``tflatent.generate``, ``tflatent.export``,
  serving): TensorFlow's default;
* a latent flow model with an LSTM in q(z|x), p(x|z) or the prior: cores ÷ 2 threads per op (one
  share for each of the two recurrences), at least 1;
* otherwise (the LSTM baseline, a flow model with self-attention everywhere, whose products are
  large): TensorFlow's default.

``train.intra_op_threads`` = N sets N (0: TensorFlow's default) for a machine where another choice
measures faster; ``benchmarks/model_speed.py`` records the value each row ran with.

The setting belongs to the process and must precede TensorFlow's runtime, like the device set-up of
``tflatent.training.distribute``: the entry points call :func:`configure` first. In a process where
the runtime already runs (a test, a notebook), it cannot change; ``configure`` then leaves it and says
so (a warning when the value was asked for explicitly, an info line when it was chosen automatically).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import tensorflow as tf

from tflatent.config import Config

log = logging.getLogger(__name__)

TENSORFLOW_DEFAULT = 0  # TensorFlow's own choice: one thread per core


def threads_per_op(config: Config, cpus: Optional[int] = None, accelerator: Optional[bool] = None,
                   sampling: bool = False) -> int:
    """The intra-op thread count for ``config`` on a machine with ``cpus`` cores (module docstring).

    Args:
      config: the run's config; ``train.intra_op_threads`` wins when set.
      cpus: the number of cores (default: ``os.cpu_count()``).
      accelerator: whether a GPU or TPU will run the model (default: a GPU is visible to TensorFlow or
        ``train.distribute`` is ``tpu``).
      sampling: the process only samples (generation, serving): TensorFlow's default unless set.

    Returns:
      N ≥ 1 threads per op, or ``TENSORFLOW_DEFAULT`` (0).
    """
    if config.train.intra_op_threads is not None:
        return config.train.intra_op_threads
    if accelerator is None:
        accelerator = config.train.distribute == "tpu" or bool(tf.config.list_physical_devices("GPU"))
    model = config.model
    parts = (model.inference_network, model.emission_network, model.prior_network)
    if sampling or accelerator or model.type != "flow" or "lstm" not in parts:
        return TENSORFLOW_DEFAULT
    return max(1, (cpus or os.cpu_count() or 1) // 2)


def configure(config: Config, cpus: Optional[int] = None, accelerator: Optional[bool] = None,
              sampling: bool = False) -> int:
    """Sets this process's intra-op threads to ``threads_per_op(config, ...)``; returns the value in force."""
    wanted = threads_per_op(config, cpus, accelerator, sampling)
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if wanted == current:
        return current
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
    except RuntimeError:
        explicit = config.train.intra_op_threads is not None
        (log.warning if explicit else log.info)(
            "train.intra_op_threads: TensorFlow's runtime already runs in this process, so it keeps %d "
            "thread(s) per op instead of %d; set it at the start of a process (as the entry points do)",
            current, wanted)
        return current
    return wanted
