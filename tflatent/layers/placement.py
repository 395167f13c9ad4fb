"""Which device's kernels the ops being traced will run: for ops that exist on only some devices.

CudnnRNNV3 has only a GPU kernel, and XLA does not compile it. A layer that has such an op and an
equivalent portable one asks ``kernel_target`` while it builds its ops and takes the device-specific op
only where it runs:

    "xla"   the trace is XLA-compiled (``jit_compile=True``, or a TPU replica): only XLA-compilable ops
    "gpu" / "cpu" / "tpu" / ...   the device type the trace is placed on

The placement comes from a tensor the layer has just computed: a graph tensor carries the device scope
it was made under (e.g. a ``tf.distribute`` replica's device), an eager tensor the device it is on.
Without a device scope, TensorFlow places ops on a GPU when one is visible, and so does this. A device
scope around the call of a ``tf.function`` (not inside it) is not visible while it traces.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # the check TensorFlow's own ops make for XLA


def kernel_target(tensor) -> str:
    """"xla", or the lower-case device type ("cpu", "gpu", ...) the ops made next to ``tensor`` run on."""
    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return "xla"
    device_type = tf.DeviceSpec.from_string(tensor.device or "").device_type
    if not device_type:
        device_type = "GPU" if tf.config.get_visible_devices("GPU") else "CPU"
    return device_type.lower()
