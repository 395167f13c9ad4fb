"""TF Serving's warm-up records: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays these requests when it loads a version, before it answers any client, so no user
request pays the first call's graph optimisation. The file is a TFRecord of ``PredictionLog`` protos
(``tensorflow_serving.apis.prediction_log_pb2``), one ``PredictRequest`` per signature that computes
(not ``metadata``): two sequences of ``min(WARMUP_LENGTH, max_time)`` steps, built from the signature's
own input specs, so they are exactly the protos a TF Serving client sends. Writing them needs the
``tensorflow-serving-api`` package (in the ``serve`` and ``dev`` extras); without it the export is
written without warm-up records, with a note.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import numpy as np
import tensorflow as tf

from tflatent.data.vocabulary import UNK_ID

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_LENGTH = 16
WARMUP_BATCH = 2


def example_inputs(input_signature, max_time: int) -> dict[str, np.ndarray]:
    """Valid inputs for a signature with ``input_signature`` (TensorSpecs named x, lengths, temperature,
    seed): ``WARMUP_BATCH`` sequences of ``min(WARMUP_LENGTH, max_time)`` steps; text x holds the unknown
    id (never padding), music x silent frames."""
    steps = min(WARMUP_LENGTH, max_time)
    values = {"lengths": np.full([WARMUP_BATCH], steps), "temperature": np.array(1.0), "seed": np.array(0)}
    inputs = {}
    for spec in input_signature:
        if spec.name == "x":
            shape = [WARMUP_BATCH, steps] + [d for d in spec.shape.as_list()[2:]]
            value = np.zeros(shape) if spec.dtype.is_floating else np.full(shape, UNK_ID)
        else:
            value = values[spec.name]
        inputs[spec.name] = value.astype(spec.dtype.as_numpy_dtype)
    return inputs


def write(version_dir: str, model_name: str, signatures: dict, max_time: int) -> Optional[str]:
    """Writes the warm-up records of ``signatures`` ({name: tf.function with an input_signature}) into
    ``version_dir``; returns the file's path, or None (with a note) without tensorflow-serving-api."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        print("note: no TF Serving warm-up records written (pip install tensorflow-serving-api to have them)",
              file=sys.stderr)
        return None
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for name, function in sorted(signatures.items()):
            if not function.input_signature:
                continue  # metadata: nothing to warm up
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                                signature_name=name))
            for key, value in example_inputs(function.input_signature, max_time).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
