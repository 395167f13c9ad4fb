"""LSTMs that behave like the reference's packed PyTorch LSTMs, as a hand-written loop or through cuDNN.

One direction (``LSTM``) computes, with the gates in PyTorch's and Keras's order (i, f, g, o),

    [i, f, g, o] = x_t W + h_{t−1} U + b
    c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g),     h_t = σ(o) ⊙ tanh(c_t)

with weights laid out as in ``keras.layers.LSTM`` (kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]).
``LSTMStack`` stacks layers (and directions), as ``torch.nn.LSTM(num_layers, bidirectional)`` does, over
right-padded batches. It runs every whole-sequence pass with one of two implementations over the same
variables (``impl``, config ``model.lstm_impl``); the step-by-step path (``step``) is the same for both,
and a loop over it reads the weights once, before the loop (``step_weights``).
A checkpoint written under one implementation loads into the other (the variables and their paths are
the same) and gives the same outputs up to float rounding.

"loop": packed sequences without per-step masks, written for the CPU. PyTorch runs each sequence only
over its own length. Here the forward direction simply runs over the padded batch: its outputs at t < L
never depend on steps ≥ L, and the outputs at padding are set to zero afterwards. The backward direction
reverses each sequence within its own length (``tf.reverse_sequence``), runs forward, and reverses back,
so it starts at each sequence's true end. No mask enters the recurrence, so equal-length and bucketed
batches take the same fast path, and padding never reaches a valid output in either direction.
The input projection x_t W (+ b) of all steps is one matmul before the loop; the loop does only h U.
Inputs may carry a leading sample axis [S, B, T, F] with a per-sequence ``context`` [B, T, C] (the
position features) that is concatenated to every sample's input: the context's share of the projection
is computed once per sequence and broadcast over the S samples. The loop is a ``tf.while_loop`` over
TensorArrays with a static trip count when T is static, so it compiles under XLA (``jit_compile``), and
a hand-written backward pass (``_recurrence``). On a GPU it runs, but launches ~20 small kernels per
step and layer-direction forward and ~35 backward.

"cudnn": Keras 3's LSTM machinery (``keras.src.backend.tensorflow.rnn``), as ``keras.layers.LSTM`` uses
it, with one call per layer and direction on [S·B, T, F + C] (the context concatenated to each sample),
the right-padded mask of the lengths, no recurrent dropout and the default activations (``ACTIVATION``,
``RECURRENT_ACTIVATION``): where the trace runs on a GPU, ``_cudnn_lstm`` (one CudnnRNNV3 op forward
and one backward per layer-direction, no loop; the backward direction by reversing each sequence within
its length, as ``keras.layers.Bidirectional`` does); on any other device, and under XLA, which cannot
compile CudnnRNNV3, Keras's generic masked ``rnn`` loop, which computes what cuDNN computes (the choice
is made at trace time, ``tflatent.layers.placement``). So on a CPU "cudnn" runs, slowly, and gives the
numbers a GPU would; a graph traced inside ``tf.device("/GPU:0")`` holds the cuDNN ops even on a machine
without a GPU (it can be inspected there, but run only on a GPU). cuDNN rejects an empty sequence; a
length of 0 runs one step whose outputs are then set to zero. cuDNN does not compute the context's
share of the gates once per sequence: it multiplies the concatenated input, which a GPU does cheaply.

"auto": "cudnn" when TensorFlow sees a GPU, else "loop" (``resolve_impl``, at construction).
``loop_implementation(model)`` makes every stack of a model run "loop" while a graph is traced, for a
graph that must run anywhere (an exported SavedModel: a CPU-only server has no CudnnRNNV3 kernel).

Initialisation (``init``):
  "pytorch"  W, U ~ U(±1/√H). PyTorch has two bias vectors (b_ih + b_hh, each U(±1/√H)) where Keras
             has one; the single bias here is drawn as the sum of two U(±1/√H) draws, which is exactly
             the distribution of PyTorch's effective bias. Each layer-direction therefore has 4H fewer
             parameters than PyTorch's (e.g. 2,000 fewer at H = 500). There is no forget-gate bias of 1.
  "keras"    the Keras defaults: Glorot-uniform W, orthogonal U, zero bias with the forget gate's at 1.
"""

from __future__ import annotations

import contextlib
import importlib
import math

import keras
import tensorflow as tf

from tflatent.config import LSTM_IMPLS
from tflatent.layers.placement import kernel_target
from tflatent.layers.position import OneHotPair, project

# Keras's LSTM kernels for its TensorFlow backend, cuDNN and the generic loop (the package re-exports a
# function under the module's name, so the module is looked up by its full name).
keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

INITS = ("pytorch", "keras")
# The activations of every LSTM here: keras.layers.LSTM's defaults, which cuDNN requires.
ACTIVATION = keras.activations.tanh
RECURRENT_ACTIVATION = keras.activations.sigmoid


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"LSTM init={init!r} is not allowed; choose one of {INITS} (config: model.lstm_init)")


def resolve_impl(impl):
    """The implementation an ``impl`` setting runs: "auto" → "cudnn" if TensorFlow sees a GPU, else "loop"."""
    if impl not in LSTM_IMPLS:
        raise ValueError(f"LSTM impl={impl!r} is not allowed; choose one of {LSTM_IMPLS} "
                         "(config: model.lstm_impl)")
    if impl == "auto":
        # Physical devices only: this must not initialise the runtime (logical devices are set up later).
        return "cudnn" if tf.config.get_visible_devices("GPU") else "loop"
    return impl


def _cell(gates, c):
    """One LSTM update from the pre-activations [N, 4H] and the carry c [N, H] → (h, c, (i, f, g, o))."""
    i, f, g, o = tf.split(gates, 4, axis=-1)
    i, f, g, o = RECURRENT_ACTIVATION(i), RECURRENT_ACTIVATION(f), ACTIVATION(g), RECURRENT_ACTIVATION(o)
    c = f * c + i * g
    return o * ACTIVATION(c), c, (i, f, g, o)


def _one_sequence(time_major):
    """Whether a time-major [T, ..., F] tensor statically holds one sequence (the batch-1 fast paths)."""
    return time_major.shape[1:-1].num_elements() == 1


def _forward(gates, recurrent_kernel, h0, c0, keep=False):
    """The forward loop over the projected inputs gates [T, N, 4H] with U [H, 4H] from (h0, c0) [N, H].

    Returns (h_t,) [T, N, H]; with ``keep`` (for ``_recurrence``'s backward pass) also c_t [T, N, H] and
    the activations (i, f, g, o) concatenated, [T, N, 4H].

    For one sequence (a static N of 1: sampling at batch 1) h U is a vector–matrix product, which runs
    faster over the rows of Uᵀ [4H, H], each a contiguous dot product with h: the loop then multiplies by
    Uᵀ, transposed once before it. Measured at H = 500, T = 256 on a 2-core CPU: one pass 16.3 → 10.3 ms
    compiled with XLA, 51 → 44 ms in graph mode; from N = 5 on the [H, 4H] layout is the faster one.
    """
    num_steps = tf.shape(gates)[0]
    steps_in = tf.TensorArray(gates.dtype, size=num_steps).unstack(gates)
    one_sequence = _one_sequence(gates)
    kernel = tf.transpose(recurrent_kernel) if one_sequence else recurrent_kernel

    def body(t, h, c, outputs):
        h, c, gate_values = _cell(steps_in.read(t) + tf.matmul(h, kernel, transpose_b=one_sequence), c)
        values = (h, c, tf.concat(gate_values, -1)) if keep else (h,)
        return t + 1, h, c, tuple(ta.write(t, value) for ta, value in zip(outputs, values))

    outputs = tuple(tf.TensorArray(gates.dtype, size=num_steps) for _ in range(3 if keep else 1))
    _, _, _, outputs = tf.while_loop(lambda t, *_: t < num_steps, body, (tf.constant(0), h0, c0, outputs),
                                     maximum_iterations=num_steps)
    return tuple(ta.stack() for ta in outputs)


@tf.custom_gradient
def _recurrence(gates, recurrent_kernel, h0, c0):
    """h_t for t = 0..T−1 from the projected inputs gates [T, N, 4H], U [H, 4H] and (h0, c0) [N, H].

    The forward loop (``_forward``) keeps the activations (i, f, g, o) and c_t. The backward loop carries
    only ∂h and ∂c from step to step, with one matmul per step (∂h_{t−1} = ∂z_t Uᵀ for z_t = gates_t +
    h_{t−1} U), and collects ∂z_t; ∂U = Σ_t h_{t−1}ᵀ ∂z_t is then one [H, T·N] × [T·N, 4H] matmul.
    Autodiff of the loop would add a [H, 4H] partial ∂U at every step instead: for small batches
    that traffic, not the arithmetic, is what the step costs (about 1.8× for 5 sequences of 500 units).
    """
    num_steps = tf.shape(gates)[0]

    def array(values=None, dtype=gates.dtype):
        ta = tf.TensorArray(dtype, size=num_steps)
        return ta if values is None else ta.unstack(values)

    hs, cs, activations = _forward(gates, recurrent_kernel, h0, c0, keep=True)  # [T, N, H], [T, N, H], [T, N, 4H]

    def grad(d_hs):
        c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
        d_hs_in, cs_in, c_prev_in, activations_in = (array(x) for x in (d_hs, cs, c_prev, activations))
        kernel_t = tf.transpose(recurrent_kernel)

        def back(k, dh_next, dc_next, d_gates):
            t = num_steps - 1 - k
            i, f, g, o = tf.split(activations_in.read(t), 4, axis=-1)
            tanh_c = tf.tanh(cs_in.read(t))
            dh = d_hs_in.read(t) + dh_next
            dc = dc_next + dh * o * (1.0 - tf.square(tanh_c))
            dz = tf.concat([dc * g * i * (1.0 - i), dc * c_prev_in.read(t) * f * (1.0 - f),
                            dc * i * (1.0 - tf.square(g)), dh * tanh_c * o * (1.0 - o)], axis=-1)
            return k + 1, tf.matmul(dz, kernel_t), dc * f, d_gates.write(t, dz)

        _, dh0, dc0, d_gates = tf.while_loop(
            lambda k, *_: k < num_steps, back, (tf.constant(0), tf.zeros_like(h0), tf.zeros_like(c0), array()),
            maximum_iterations=num_steps)
        d_gates = d_gates.stack()  # [T, N, 4H]
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
        units = tf.shape(recurrent_kernel)[0]
        d_kernel = tf.matmul(tf.reshape(h_prev, tf.stack([-1, units])), tf.reshape(d_gates, tf.stack([-1, 4 * units])),
                             transpose_a=True)
        return d_gates, d_kernel, dh0, dc0

    return hs, grad


def _inference_recurrence(gates, recurrent_kernel, h0, c0):
    """``_recurrence``'s forward loop alone (h_t [T, N, H]; nothing kept for a backward pass)."""
    return _forward(gates, recurrent_kernel, h0, c0)[0]


# The inference loop compiled alone with XLA, one executable per (T, N): its steps run fused, without
# the ~10 dispatched ops per step of graph mode (half the time at batch 1), while the graph around it
# can still run independent loops (a BiLSTM's two directions for several sequences) at once. No gradient.
_compiled_recurrence = tf.function(_inference_recurrence, jit_compile=True)


@keras.saving.register_keras_serializable(package="tflatent")
class LSTM(keras.layers.Layer):
    """One LSTM direction over time-major pre-activations; the building block of ``LSTMStack``.

    Args:
      units: H.
      init: "pytorch" or "keras" (module docstring).

    The attributes ``activation`` .. ``recurrent_dropout`` are the arguments ``keras.layers.LSTM`` has and
    Keras's cuDNN eligibility check reads; they describe this layer's fixed recurrence (``_cell``).
    """

    activation = staticmethod(ACTIVATION)
    recurrent_activation = staticmethod(RECURRENT_ACTIVATION)
    use_bias = True
    unroll = False
    recurrent_dropout = 0.0

    def __init__(self, units, init="pytorch", **kwargs):
        super().__init__(**kwargs)
        _check_init(init)
        self.units = int(units)
        self.init = init

    def build(self, input_shape):
        features = int(input_shape[-1])
        four = 4 * self.units
        if self.init == "pytorch":
            bound = 1.0 / math.sqrt(self.units)
            # One initializer object per draw: a Keras initializer has a fixed seed, so reusing one
            # would correlate the weights.
            kernel_init, recurrent_init, b_ih, b_hh = (
                keras.initializers.RandomUniform(-bound, bound) for _ in range(4))

            def bias_init(shape, dtype=None):  # PyTorch's effective bias b_ih + b_hh
                return b_ih(shape, dtype) + b_hh(shape, dtype)
        else:
            kernel_init = keras.initializers.GlorotUniform()
            recurrent_init = keras.initializers.Orthogonal()

            def bias_init(shape, dtype=None):  # unit_forget_bias=True
                units = shape[0] // 4
                return tf.concat([tf.zeros([units]), tf.ones([units]), tf.zeros([2 * units])], axis=0)
        self.kernel = self.add_weight(shape=(features, four), initializer=kernel_init, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, four), initializer=recurrent_init,
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(four,), initializer=bias_init, name="bias")

    def project(self, inputs, context=None):
        """x W + b for every step, time-major: the part of the work that is parallel over time.

        Args:
          inputs: [T, S, B, F] time-major (S = 1 when there is no sample axis).
          context: None or [T, B, C] (dense, or a ``tflatent.layers.position.OneHotPair``), shared by the S
            samples; the kernel's last C rows act on it.

        Returns:
          [T, S·B, 4H].
        """
        if context is None:
            gates = tf.tensordot(inputs, self.kernel, axes=1) + self.bias  # [T, S, B, 4H]
        else:
            input_kernel, context_kernel = self._split_kernel(context.shape[-1])
            gates = tf.tensordot(inputs, input_kernel, axes=1)  # [T, S, B, 4H]
            gates += (project(context, context_kernel) + self.bias)[:, None]  # [T, 1, B, 4H]
        shape = tf.shape(gates)
        return tf.reshape(gates, tf.stack([shape[0], shape[1] * shape[2], 4 * self.units]))

    def project_context(self, context):
        """The context's share of the gates plus the bias: context [..., C] (the kernel's last C rows; dense or
        a ``OneHotPair``) → [..., 4H]."""
        return project(context, self._split_kernel(context.shape[-1])[1]) + self.bias

    def _split_kernel(self, context_size):
        """(the inputs' rows [F, 4H], the context's last C rows [C, 4H]) of the kernel, by one Split.

        The gradient of a Split is one Concat of its pieces' gradients; two slices (``kernel[:F]``,
        ``kernel[-C:]``) would each give a zero-filled [F + C, 4H] gradient (StridedSliceGrad) and
        their sum, ~6 % of the op time of a paper-size JSB AF/AF training step.
        """
        rows = self.kernel.shape[0]
        return tf.split(self.kernel, [rows - context_size, context_size], axis=0)

    def recur(self, gates, initial_state=None, compiled=False):
        """Runs the recurrence over projected inputs.

        Args:
          gates: [T, N, 4H] from ``project``.
          initial_state: None (zeros) or (h, c), each [N, H].
          compiled: run the loop as its own XLA executable (inference only: no gradient; one
            compilation per shape, so meant for fixed shapes such as generation's).

        Returns:
          h_t for every step, [T, N, H].
        """
        if initial_state is None:
            zeros = tf.zeros(tf.stack([tf.shape(gates)[1], self.units]), gates.dtype)
            initial_state = (zeros, zeros)
        recurrence = _compiled_recurrence if compiled else _recurrence
        return recurrence(gates, tf.convert_to_tensor(self.recurrent_kernel), *initial_state)

    def step_weights(self, context_size=None):
        """(W, U, b) as ``step`` reads them: W the kernel without its last ``context_size`` rows (the
        context's, whose share of the gates comes as ``context_gates``); the whole kernel when None.

        A loop over steps reads them once, before the loop, and passes them to every ``step``: a
        slice taken inside a loop that is differentiated has a gradient the size of the whole kernel
        at every step (a zero-filled [F + C, 4H] buffer, summed over the steps), which for the
        one-hot context's 2·max_T rows was most of an IAF density's backward pass. The rows are
        taken by one Split, whose gradient is one Concat (``_split_kernel``).
        """
        if context_size is None:
            kernel = tf.convert_to_tensor(self.kernel)
        else:
            kernel = self._split_kernel(context_size)[0]
        return kernel, tf.convert_to_tensor(self.recurrent_kernel), tf.convert_to_tensor(self.bias)

    def step(self, inputs, state, context_gates=None, weights=None):
        """One step: state (h, c) → (h, (h, c)).

        Either inputs [N, F + C] (the context concatenated) or inputs [N, F] with the context's
        ``project_context`` [N, 4H] (the bias included), which a loop over steps computes once for all
        of them. ``weights``: ``step_weights(C)`` (with context gates) or ``step_weights()``, read once
        before the loop; None reads them here.
        """
        if weights is None:
            weights = self.step_weights(None if context_gates is None else self.kernel.shape[0] - inputs.shape[-1])
        kernel, recurrent_kernel, bias = weights
        gates = tf.matmul(inputs, kernel) + (bias if context_gates is None else context_gates)
        h, c, _ = _cell(gates + tf.matmul(state[0], recurrent_kernel), state[1])
        return h, (h, c)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "init": self.init}


@keras.saving.register_keras_serializable(package="tflatent")
class LSTMStack(keras.layers.Layer):
    """A multi-layer (bi)LSTM over right-padded batches, like a packed ``torch.nn.LSTM``.

    Layer l > 0 reads layer l − 1's outputs (both directions concatenated, forward first, when
    bidirectional), after dropout when training. The first layer reads [inputs, context].

    Args:
      units: H per direction.
      num_layers: the number of stacked layers.
      bidirectional: whether each layer also runs backward in time.
      dropout_between_layers: dropout rate on the outputs of every layer but the last (training only).
      init: "pytorch" or "keras" (module docstring).
      impl: "auto", "cudnn" or "loop", the whole-sequence implementation (module docstring); the one it
        resolves to is ``implementation``.
    """

    def __init__(self, units, num_layers=1, bidirectional=False, dropout_between_layers=0.0,
                 init="pytorch", impl="auto", **kwargs):
        super().__init__(**kwargs)
        _check_init(init)
        self.units = int(units)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.dropout_between_layers = float(dropout_between_layers)
        self.init = init
        self.impl = impl
        self.implementation = resolve_impl(impl)
        self.supports_masking = True  # outputs are zero at padding; the mask passes through
        directions = ("forward", "backward") if self.bidirectional else ("forward",)
        self.cells = [[LSTM(units, init=init, name=f"layer_{i}_{d}") for d in directions]
                      for i in range(self.num_layers)]
        self.dropout = keras.layers.Dropout(self.dropout_between_layers)

    def build(self, inputs_shape, context_shape=None):
        features = int(inputs_shape[-1]) + (0 if context_shape is None else int(context_shape[-1]))
        for layer in self.cells:
            for cell in layer:
                cell.build((None, features))
            features = self.units * len(layer)
        self.built = True

    def call(self, inputs, mask=None, context=None, initial_state=None, training=False, compiled=False):
        """Runs the stack over a right-padded batch.

        Args:
          inputs: [B, T, F], or [S, B, T, F] for S samples of each sequence.
          mask: None (every step valid) or [B, T] bool, True on each sequence's first L_b steps.
          context: None or [B, T, C], concatenated to the inputs of every sample (first layer only): dense,
            or the position features' ``OneHotPair``, whose share of the gates is two gathered rows.
          initial_state: None (zeros) or, for a unidirectional stack, a list of (h, c) per layer,
            each [S·B, H] (sample-major: row s·B + b).
          training: enables the dropout between layers.
          compiled: runs each layer-direction's loop as an XLA executable (``LSTM.recur``): inference only.
            For one sequence (S·B = 1) the backward direction then runs after the forward one, not
            beside it (faster at that size; see ``_call_loop``).

        Returns:
          Top-layer outputs shaped like inputs with H features, zero at padding: one tensor, or
          (forward, backward) when bidirectional.
        """
        inputs = tf.convert_to_tensor(inputs)
        has_samples = inputs.shape.rank == 4
        if not has_samples:
            inputs = inputs[None]
        if initial_state is not None and self.bidirectional:
            raise ValueError("LSTMStack: initial_state is only supported for a unidirectional stack")
        lengths = None
        if mask is not None:
            mask = tf.cast(mask, tf.bool)
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
            tf.debugging.Assert(
                tf.reduce_all(tf.equal(mask, tf.sequence_mask(lengths, tf.shape(mask)[1]))),
                ["LSTMStack: the mask must be right-padded (True on each sequence's first L steps, then "
                 "False); build it with tf.sequence_mask(lengths, T)"])
        run = self._call_keras if self.implementation == "cudnn" else self._call_loop
        outputs = [h if has_samples else h[0]
                   for h in run(inputs, lengths, context, initial_state, training, compiled)]
        return tuple(outputs) if self.bidirectional else outputs[0]

    def _call_loop(self, inputs, lengths, context, initial_state, training, compiled):
        """"loop": inputs [S, B, T, F], lengths [B] or None → the top layer's [S, B, T, H] per direction."""
        shape = tf.shape(inputs)
        num_samples, batch, num_steps = shape[0], shape[1], shape[2]
        x = tf.transpose(inputs, [2, 0, 1, 3])  # [T, S, B, F]
        context_tm = None if context is None else _time_major(context)  # [T, B, C]
        valid = None
        if lengths is not None:
            lengths = tf.tile(lengths, [num_samples])  # [S·B]
            valid = tf.transpose(tf.sequence_mask(lengths, num_steps))[..., None]  # [T, S·B, 1]

        for i, layer in enumerate(self.cells):
            if i > 0:
                x = self.dropout(x, training=training)[:, None]  # [T, 1, S·B, ·]
            state = None if initial_state is None else initial_state[i]
            outputs = [self._run(layer[0], x, context_tm, state, lengths, valid, False, compiled)]
            if self.bidirectional:
                backward_x = x
                if compiled and _one_sequence(x):
                    # One compiled sequence: each direction's loop is bound by reading U and runs fastest
                    # alone, with every core and its cache: the two at once took 30 ms where one alone
                    # took 12 (H 500, T 256, two cores). For 16 sequences, at once is the faster.
                    with tf.control_dependencies(outputs):
                        backward_x = tf.identity(x)
                outputs.append(self._run(layer[1], backward_x, context_tm, None, lengths, valid, True, compiled))
            x = tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]  # [T, S·B, H·dirs]
            context_tm = None
        # [T, S·B, H] → [S, B, T, H]
        shape = tf.stack([num_steps, num_samples, batch, self.units])
        return [tf.transpose(tf.reshape(h, shape), [1, 2, 0, 3]) for h in outputs]

    @staticmethod
    def _run(cell, x, context, state, lengths, valid, reverse, compiled):
        gates = cell.project(x, context)  # [T, N, 4H]
        if reverse:
            gates = _reverse(gates, lengths)
        h = cell.recur(gates, state, compiled=compiled)
        if reverse:
            h = _reverse(h, lengths)
        return h if valid is None else tf.where(valid, h, tf.zeros_like(h))

    def _call_keras(self, inputs, lengths, context, initial_state, training, compiled):
        """The "cudnn" implementation: as ``_call_loop``, each layer-direction one ``_keras_lstm`` call.

        ``compiled`` is the loop's XLA switch; a cuDNN call is one kernel already, so it is not used here.
        """
        shape = tf.shape(inputs)
        num_samples, batch, num_steps = shape[0], shape[1], shape[2]
        if context is not None:  # [S, B, T, F + C]: every sample reads its sequence's context
            if isinstance(context, OneHotPair):
                context = context.to_dense()
            context = tf.broadcast_to(context[None], tf.concat([shape[:3], tf.shape(context)[-1:]], axis=0))
            inputs = tf.concat([inputs, tf.cast(context, inputs.dtype)], axis=-1)
        x = tf.reshape(inputs, tf.concat([[num_samples * batch], shape[2:3], [inputs.shape[-1]]], axis=0))
        target = kernel_target(x)
        mask = valid = None
        if lengths is not None:
            lengths = tf.tile(lengths, [num_samples])  # [S·B]
            valid = tf.sequence_mask(lengths, num_steps)[..., None]  # [S·B, T, 1]
            mask = tf.sequence_mask(tf.maximum(lengths, 1), num_steps)  # cuDNN rejects empty sequences
        zeros = tf.zeros(tf.stack([num_samples * batch, self.units]), x.dtype)

        for i, layer in enumerate(self.cells):
            if i > 0:
                x = self.dropout(x, training=training)
            state = (zeros, zeros) if initial_state is None else initial_state[i]
            outputs = [_keras_lstm(layer[0], x, mask, state, target, go_backwards=False)]
            if self.bidirectional:
                outputs.append(_keras_lstm(layer[1], x, mask, (zeros, zeros), target, go_backwards=True))
            if valid is not None:
                outputs = [tf.where(valid, h, tf.zeros_like(h)) for h in outputs]
            x = tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]  # [S·B, T, H·dirs]
        # [S·B, T, H] → [S, B, T, H]
        return [tf.reshape(h, tf.stack([num_samples, batch, num_steps, self.units])) for h in outputs]

    def zero_state(self, batch_size):
        """The zero initial state of a unidirectional stack: [(h, c)] per layer, each [N, H]."""
        zeros = tf.zeros(tf.stack([batch_size, self.units]))
        return [(zeros, zeros) for _ in self.cells]

    def project_context(self, context):
        """The first layer's gates from the context, for ``step``'s ``context_gates``: [..., C] → [..., 4H]."""
        return self.cells[0][0].project_context(context)

    def step_weights(self, context_size=None):
        """Every layer's ``LSTM.step_weights``, for a loop over ``step`` to read once before it.

        ``context_size``: C, the width of the context whose share of the first layer's gates comes as
        ``context_gates`` (None: the first layer multiplies [inputs, context], its whole kernel).
        """
        if self.bidirectional:
            raise ValueError("LSTMStack.step runs a unidirectional stack; this one is bidirectional")
        return [self.cells[0][0].step_weights(context_size)] + [layer[0].step_weights() for layer in self.cells[1:]]

    def step(self, inputs, states, context=None, training=False, context_gates=None, weights=None):
        """One time step of a unidirectional stack (for sequential sampling, and the IAF density).

        Args:
          inputs: [N, F]; context: None or [N, C] (concatenated after the inputs).
          states: [(h, c)] per layer, each [N, H].
          context_gates: instead of context, its ``project_context`` [N, 4H]: a loop over time computes
            them for every step at once, so that each step multiplies only the inputs.
          weights: ``step_weights(C)`` (with context gates) or ``step_weights()``, read once before a
            loop over steps; None reads them in this step.

        Returns:
          (top-layer output [N, H], new states).
        """
        if weights is None:
            first = self.cells[0][0].kernel
            weights = self.step_weights(None if context_gates is None else first.shape[0] - inputs.shape[-1])
        x = inputs if context is None else tf.concat([inputs, context], axis=-1)
        new_states = []
        for i, (layer, state, layer_weights) in enumerate(zip(self.cells, states, weights)):
            if i > 0:
                x = self.dropout(x, training=training)
            x, state = layer[0].step(x, state, context_gates=context_gates if i == 0 else None,
                                     weights=layer_weights)
            new_states.append(state)
        return x, new_states

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_layers": self.num_layers,
                "bidirectional": self.bidirectional,
                "dropout_between_layers": self.dropout_between_layers, "init": self.init, "impl": self.impl}


def _keras_lstm(cell, inputs, mask, state, target, go_backwards):
    """One layer-direction through Keras's LSTM kernels, as ``keras.layers.LSTM`` runs it (module docstring).

    Args:
      cell: the ``LSTM`` whose variables to use.
      inputs: [N, T, F] batch-major.
      mask: None or [N, T] bool, right-padded, no row all False.
      state: (h0, c0), each [N, H].
      target: ``tflatent.layers.placement.kernel_target``: "gpu" takes cuDNN, anything else the generic loop.
      go_backwards: run from each sequence's last valid step to its first.

    Returns:
      h_t [N, T, H] in time order (Keras returns a backward pass's outputs reversed; this reverses them
      back), zero at masked steps.
    """
    kernel, recurrent_kernel, bias = (tf.convert_to_tensor(v) for v in
                                      (cell.kernel, cell.recurrent_kernel, cell.bias))
    if target == "gpu":
        _, outputs, _ = keras_rnn._cudnn_lstm(
            inputs, state[0], state[1], kernel, recurrent_kernel, bias, mask, time_major=False,
            go_backwards=go_backwards, return_sequences=True)
    else:
        if mask is not None:  # the check cuDNN's path makes, so that a run fails here where it would there
            keras_rnn._assert_valid_mask(mask)

        def step(x_t, states):
            h, c, _ = _cell(tf.matmul(x_t, kernel) + tf.matmul(states[0], recurrent_kernel) + bias, states[1])
            return h, [h, c]

        _, outputs, _ = keras_rnn.rnn(step, inputs, list(state), go_backwards=go_backwards, mask=mask,
                                      zero_output_for_mask=True, return_all_outputs=True)
    return tf.reverse(outputs, axis=[1]) if go_backwards else outputs


def _time_major(context):
    """[B, T, C] → [T, B, C], dense or a ``OneHotPair``."""
    return context.transpose([1, 0]) if isinstance(context, OneHotPair) else tf.transpose(context, [1, 0, 2])


def _reverse(x, lengths):
    """Reverses time-major x [T, N, ·] within each sequence's length (all of T when lengths is None)."""
    if lengths is None:
        return tf.reverse(x, axis=[0])
    return tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)


@contextlib.contextmanager
def loop_implementation(layer: keras.layers.Layer):
    """Inside the block every ``LSTMStack`` in ``layer`` (a model, say) runs "loop", whatever its ``impl``.

    For tracing a portable graph: "loop" uses no device-specific op (``tflatent.layers.placement`` picks
    the dense context product wherever the trace is not on a CPU), so the graph runs on a CPU or a GPU;
    the variables are the same for both implementations. Each stack's implementation is restored on exit.
    """
    stacks = [sub for sub in layer._flatten_layers() if isinstance(sub, LSTMStack)]
    chosen = [stack.implementation for stack in stacks]
    for stack in stacks:
        stack.implementation = "loop"
    try:
        yield
    finally:
        for stack, implementation in zip(stacks, chosen):
            stack.implementation = implementation
