"""Self-attention sequence networks: the paper's stated future work as an alternative to its LSTMs.

Paper §7: "Future work can explore moving to alternate architectures such as those based on
self-attention, which give performance and are more parallelizable than LSTMs." The two networks here
take the places of the model's LSTMs (``tflatent.layers.lstm``), with the same call contract:

  ``AttentionEncoder``        bidirectional, for q(z|x) and p(x|z) (where the BiLSTMs are): every
                              position attends to every valid position of its own sequence.
  ``CausalAttentionContext``  causal, for the prior's time context h̃_t (where the prior's LSTM is):
                              h̃_t depends on the inputs y_<t only; a parallel pass and a cached
                              step-by-step pass that agree.

Attention (Vaswani et al. 2017) with a mask M ∈ {0, 1}^{T×T} (M_ts = 1: query t may read key s):

    Attn(Q, K, V; M) = softmax(Q Kᵀ / √d_k + log M) V          log 0 = −∞ (a large negative number,
                                                               whose exp is exactly 0 in float32)
    MultiHead(X; M)  = [head_1, ..., head_n] W_O,   head_i = Attn(X W_Q^i, X W_K^i, X W_V^i; M)

with Keras 3's ``MultiHeadAttention`` (n heads of d_k = d / n; as ``QueryBlockedAttention``, which outside
training takes the queries of a large pass in blocks: the same outputs, memory linear in T rather than
quadratic). A pre-norm block (Xiong et al. 2020):

    X ← X + Drop(MultiHead(LN(X); M))
    X ← X + Drop(ReLU(LN(X) W_1 + b_1) W_2 + b_2)               W_1: d × d_ff

and a stack of such blocks ends in a final LN; outputs at padding are set to zero.

Inputs and length conditioning. The first block reads X⁰ = Drop(E) with E_t = x̃_t + c_t W_c + b, where
c_t is the ``context`` [B, T, C]: the position features of ``tflatent.layers.position`` (position t
and remaining length L − 1 − t, one-hot or sinusoidal), the only positional signal (self-attention
itself is permutation-equivariant). x̃ differs:

    AttentionEncoder:        x̃_t = x_t W_x,                          M_ts = [s < L]   (padding keys masked)
    CausalAttentionContext:  x̃_0 = s (learned, initially 0),
                             x̃_t = x_{t−1} W_x  (t ≥ 1),             M_ts = [s ≤ t]   (the causal shift)

so the causal output h_t depends on x_<t and on c_≤t, and on nothing else. This is exactly what the
prior's LSTM gives (``tflatent.priors.time_flow``): its h̃_0 is computed from pos_0, and h̃_t (t ≥ 1) is
its output after reading [y_s, pos_{s+1}] for s < t, so h̃_t depends on y_<t and pos_≤t. The context
here is aligned with the outputs, pos[t] (``PositionFeatures(..., shift=0)``), where the LSTM reads the
shifted pos[t + 1] beside y_t. For a valid query t < L every key s ≤ t is valid, so the causal mask
alone keeps padding out of every valid output; the bidirectional mask excludes padding keys.

Step by step (``CausalAttentionContext.step``): per block, the keys and values of rows 0..T_max−1 live
in a preallocated cache [N, n, T_max, d_k] (zeros until written). Step t computes row t's query, key
and value from row t alone, writes the key and value at t (``tf.tensor_scatter_nd_update``: static
shapes, XLA-compilable inside ``tf.while_loop``) and attends over the keys ≤ t. It reads x_{t−1} and
c_t and returns h_t, equal to the parallel pass's; a step costs O(blocks · (d² + d·d_ff + T_max·d)).
TensorFlow's gradient of a loop keeps, once per step, every tensor the step's gradient reads. A loop
over steps therefore reads its weights once, before the loop (``step_weights``), and the attention read
has a written-out gradient (``cached_attention``) that takes the keys and values from the loop's final
cache (``finish_steps``) rather than from each step's: a differentiated loop keeps O(T · (d + T_max)) per
block for T steps, not a [N, n, T_max, d_k] cache per step (O(T² · d), tens of GB for the longest
Nottingham tune) nor a copy of every weight per step.

Sequential depth: the parallel passes have O(blocks) sequential operations for the whole sequence,
where an LSTM has O(T).

Dropout (``dropout``, default 0): on E and on the output of every attention and feed-forward branch
before its residual sum (Vaswani et al.'s residual dropout); the attention weights themselves are not
dropped, so the parallel and cached step paths compute the same function.

Shapes: inputs [B, T, F] or [S, B, T, F] (S samples of each sequence sharing one context [B, T, C],
whose projection is computed once per sequence); mask [B, T] bool (True on each sequence's first L
steps); outputs [B, T, d] or [S, B, T, d].

#### References

[1]: Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob Uszkoreit, Llion Jones, Aidan N. Gomez, Łukasz
     Kaiser, Illia Polosukhin. Attention Is All You Need. NeurIPS 2017. https://arxiv.org/abs/1706.03762
[2]: Ruibin Xiong, Yunchang Yang, Di He, Kai Zheng, Shuxin Zheng, Chen Xing, Huishuai Zhang, Yanyan Lan,
     Liwei Wang, Tie-Yan Liu. On Layer Normalization in the Transformer Architecture. ICML 2020.
     https://arxiv.org/abs/2002.04745
[3]: Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences. ICML 2019,
     §7 (future work). https://arxiv.org/abs/1901.10548
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tflatent.layers.blocked_attention import QueryBlockedAttention
from tflatent.layers.position import project

LAYER_NORM_EPSILON = 1e-5  # PyTorch's (and the original Transformer code's order of magnitude)
_LARGE_NEGATIVE = -0.7 * 3.38953e38  # log 0 for a masked score, as Keras's dot_product_attention uses


@keras.saving.register_keras_serializable(package="tflatent")
class TransformerBlock(keras.layers.Layer):
    """One pre-norm block: X ← X + Drop(MultiHead(LN(X); M)); X ← X + Drop(FF(LN(X))).

    Args:
      units: d, the width of X.
      num_heads: n; d must be divisible by n (d_k = d / n).
      feed_forward_units: d_ff, the hidden width of the feed-forward branch.
      dropout: rate on each branch's output before the residual sum (training only).
    """

    def __init__(self, units, num_heads, feed_forward_units, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.num_heads = int(num_heads)
        self.feed_forward_units = int(feed_forward_units)
        self.dropout_rate = float(dropout)
        _check_sizes(self.units, self.num_heads, self.feed_forward_units, self.dropout_rate)
        self.key_dim = self.units // self.num_heads
        policy = dict(dtype=self.dtype_policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="attention_norm", **policy)
        # No dropout of the attention weights, so that ``step`` (the same products) is the same function.
        self.attention = QueryBlockedAttention(self.num_heads, self.key_dim, name="attention", **policy)
        self.feed_forward_norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="feed_forward_norm", **policy)
        self.feed_forward_hidden = keras.layers.Dense(self.feed_forward_units, activation="relu",
                                                      name="feed_forward_hidden", **policy)
        self.feed_forward_output = keras.layers.Dense(self.units, name="feed_forward_output", **policy)
        self.dropout = keras.layers.Dropout(self.dropout_rate, **policy)

    def build(self, input_shape=None):
        shape = (None, None, self.units)
        self.attention_norm.build(shape)
        self.attention.build(shape, shape)
        self.feed_forward_norm.build(shape)
        self.feed_forward_hidden.build(shape)
        self.feed_forward_output.build((None, None, self.feed_forward_units))
        self.built = True

    def call(self, x, attention_mask=None, training=False):
        """x [N, T, d], attention_mask None or bool broadcastable to [N, T, T] (M) → [N, T, d]."""
        a = self.attention_norm(x)
        x = x + self.dropout(self.attention(a, a, attention_mask=attention_mask, training=training),
                             training=training)
        h = self.feed_forward_output(self.feed_forward_hidden(self.feed_forward_norm(x)))
        return x + self.dropout(h, training=training)

    def step_weights(self, dtype):
        """(W_QKV [d, 3d], b_QKV [3d], W_O [d, d], b_O [d], W_1 [d, d_ff], b_1, W_2 [d_ff, d], b_2) in
        ``dtype``, as ``step`` reads them.

        W_Q, W_K and W_V side by side make one matrix-vector product per step instead of three; each
        EinsumDense's [d, n, d_k] kernel is read as [d, d]. A loop over steps computes them once before
        the loop: in a differentiated loop the concatenation's gradient would otherwise be taken at every
        step, and every weight read inside the loop is kept once per step for the gradient.
        """
        attention = self.attention

        def weight(variable, shape):  # read as a layer call would (a method call has no autocast scope)
            return tf.reshape(tf.cast(variable, dtype), shape)

        dense = (attention.query_dense, attention.key_dense, attention.value_dense)
        kernel = tf.concat([weight(layer.kernel, [self.units, self.units]) for layer in dense], axis=1)
        bias = tf.concat([weight(layer.bias, [-1]) for layer in dense], axis=0)
        output, hidden, last = attention.output_dense, self.feed_forward_hidden, self.feed_forward_output
        return (kernel, bias, weight(output.kernel, [self.units, self.units]), weight(output.bias, [-1]),
                *(weight(v, v.shape) for v in (hidden.kernel, hidden.bias, last.kernel, last.bias)))

    def step(self, x, keys, values, index, training=False, weights=None, final_cache=None):
        """Row ``index`` of ``call`` under the causal mask, from that row and the cache of earlier rows.

        The same weights and operations as the ``MultiHeadAttention`` call, written as plain matrix
        products with a head-major cache, so that a step does no transposes or mask broadcasts. Rows are
        [N, d] throughout, so every dense layer is one matrix product (on [N, 1, d] Keras contracts with
        ``tensordot``, whose permutations, computed from the shape, are not compile-time constants in the
        gradient of a step loop under XLA).

        Args:
          x: [N, d], the block's input at row t = index.
          keys, values: [N, n, T_max, d_k], this block's keys and values of rows < t (zeros after).
          index: t, a scalar int32 tensor.
          weights: ``step_weights`` in the compute dtype, or None to compute them here.
          final_cache: for a step in a loop, a callable giving this block's (keys, values) after the
            loop (``FinalCache.block``), which the gradient of the attention read takes (``cached_attention``).

        Returns:
          (output [N, d], keys, values) with row t's key and value written in.
        """
        a = self.attention_norm(x)  # [N, d], in the compute dtype
        qkv_kernel, qkv_bias, output_kernel, output_bias, *feed_forward = (
            self.step_weights(a.dtype) if weights is None else weights)
        qkv = tf.reshape(tf.matmul(a, qkv_kernel) + qkv_bias, [-1, 3, self.num_heads, self.key_dim])
        query, key, value = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [N, n, d_k] each
        batch = tf.shape(a)[0]
        slots = tf.stack(tf.meshgrid(tf.range(batch), tf.range(self.num_heads), indexing="ij")
                         + [tf.fill(tf.stack([batch, self.num_heads]), index)], axis=-1)  # [N, n, 3]: b, i, t
        keys = tf.tensor_scatter_nd_update(keys, slots, key)
        values = tf.tensor_scatter_nd_update(values, slots, value)
        attended = cached_attention(query, keys, values, index, final_cache)  # [N, n, d_k]
        attended = tf.reshape(attended, [-1, self.units])  # the heads side by side, as W_O reads them
        out = tf.matmul(attended, output_kernel) + output_bias
        x = x + self.dropout(out, training=training)
        hidden_kernel, hidden_bias, output_kernel, output_bias = feed_forward  # the Dense layers' products
        h = tf.nn.relu(tf.matmul(self.feed_forward_norm(x), hidden_kernel) + hidden_bias)
        x = x + self.dropout(tf.matmul(h, output_kernel) + output_bias, training=training)
        return x, keys, values

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_heads": self.num_heads,
                "feed_forward_units": self.feed_forward_units, "dropout": self.dropout_rate}


class AttentionStack(keras.layers.Layer):
    """The shared part of both networks: input and context projections, blocks, final LN.

    Subclasses define ``_embed`` (how x̃ is formed from the inputs) and ``_attention_mask`` (M).

    Args:
      units: d, the width of every block and of the outputs.
      num_layers: the number of blocks.
      num_heads: attention heads per block (d divisible by it).
      feed_forward_units: d_ff, the feed-forward branch's hidden width.
      dropout: rate on the embedding and on every branch's output (training only).
    """

    def __init__(self, units, num_layers=2, num_heads=4, feed_forward_units=1000, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.feed_forward_units = int(feed_forward_units)
        self.dropout_rate = float(dropout)
        _check_sizes(self.units, self.num_heads, self.feed_forward_units, self.dropout_rate)
        if self.num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers={num_layers} must be >= 1")
        self.supports_masking = True  # outputs are zero at padding; the mask passes through
        self.blocks = [TransformerBlock(units, num_heads, feed_forward_units, dropout, name=f"block_{i}",
                                        dtype=self.dtype_policy) for i in range(self.num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm",
                                                          dtype=self.dtype_policy)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def build(self, inputs_shape, context_shape=None):
        """Creates every weight now (as a TFP bijector that calls the layer later needs)."""
        glorot = keras.initializers.GlorotUniform
        self.input_kernel = self.add_weight(shape=(int(inputs_shape[-1]), self.units), initializer=glorot(),
                                            name="input_kernel")
        self.context_kernel = None if context_shape is None else self.add_weight(
            shape=(int(context_shape[-1]), self.units), initializer=glorot(), name="context_kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        for block in self.blocks:
            block.build()
        self.final_norm.build((None, None, self.units))
        self.built = True

    def project_context(self, context):
        """c W_c + b: context [..., C] (dense or a ``OneHotPair``) → [..., d], the per-sequence share of E
        (for ``step``'s loops)."""
        if self.context_kernel is None:
            raise ValueError(f"{self.name} was built without a context; build it with context_shape")
        return project(context, self.context_kernel) + self.bias

    def call(self, inputs, mask=None, context=None, training=False):
        """Runs the stack over a right-padded batch.

        Args:
          inputs: [B, T, F], or [S, B, T, F] for S samples of each sequence.
          mask: None (every step valid) or [B, T] bool, True on each sequence's first L_b steps.
          context: None or [B, T, C] (the position features), shared by the S samples. Required when
            the layer was built with a context, refused otherwise.
          training: enables dropout.

        Returns:
          [B, T, d] (or [S, B, T, d]), zero at padding.
        """
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank not in (3, 4):
            raise ValueError(f"{self.name}: inputs must be [B, T, F] or [S, B, T, F], got {inputs.shape}")
        if (context is None) != (self.context_kernel is None):
            built_with = "with" if self.context_kernel is not None else "without"
            raise ValueError(f"{self.name}: built {built_with} a context but called "
                             f"{'without' if context is None else 'with'} one; pass the position features "
                             "as context exactly when the layer was built with context_shape")
        has_samples = inputs.shape.rank == 4
        x = inputs if has_samples else inputs[None]  # [S, B, T, F]
        shape = tf.shape(x)
        num_samples, batch, num_steps = shape[0], shape[1], shape[2]
        sequence_part = self.bias if context is None else self.project_context(context)  # [B, T, d] or [d]
        embedded = self._embed(tf.tensordot(x, self.input_kernel, axes=1)) + sequence_part  # [S, B, T, d]
        h = self.dropout(tf.reshape(embedded, tf.stack([-1, num_steps, self.units])), training=training)

        valid = None if mask is None else tf.cast(mask, tf.bool)  # [B, T]
        attention_mask = self._attention_mask(num_steps, valid, num_samples)
        for block in self.blocks:
            h = block(h, attention_mask=attention_mask, training=training)
        h = tf.reshape(self.final_norm(h), tf.stack([num_samples, batch, num_steps, self.units]))
        if valid is not None:
            h = tf.where(valid[..., None], h, tf.zeros_like(h))
        return h if has_samples else h[0]

    def _embed(self, projected):
        """x̃ from x W_x, both [S, B, T, d]."""
        raise NotImplementedError

    def _attention_mask(self, num_steps, valid, num_samples):
        """M for the blocks: bool broadcastable to [S·B, T, T], or None (no masking)."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "feed_forward_units": self.feed_forward_units,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="tflatent")
class AttentionEncoder(AttentionStack):
    """Bidirectional self-attention over a right-padded batch: every position reads every valid one.

    For q(z|x) (over the embedded x) and p(x|z) (over z), in place of ``LSTMStack(bidirectional=True)``;
    returns one [.., T, d] tensor where the BiLSTM returns (forward, backward). Padding keys are masked
    in every block, so no valid output depends on padding. Arguments as ``AttentionStack``.
    """

    def _embed(self, projected):
        return projected

    def _attention_mask(self, num_steps, valid, num_samples):
        if valid is None:
            return None
        return tf.tile(valid, tf.stack([num_samples, 1]))[:, None, :]  # [S·B, 1, T]: keys s < L


@keras.saving.register_keras_serializable(package="tflatent")
class CausalAttentionContext(AttentionStack):
    """Causal self-attention: h_t from the inputs x_<t and the context c_≤t (module docstring).

    The prior's time context h̃_t from y_<t (z_<t for an AF time flow, ε_<t for IAF), in place of its
    LSTM: ``call`` gives every h_t in one parallel pass; ``initial_cache`` and ``step`` give them one at
    a time with cached keys and values. Pass the context aligned with the outputs, pos[t]
    (``PositionFeatures(..., shift=0)``). Arguments as ``AttentionStack``.
    """

    def build(self, inputs_shape, context_shape=None):
        self.start = self.add_weight(shape=(self.units,), initializer="zeros", name="start")  # x̃_0
        super().build(inputs_shape, context_shape)

    def _embed(self, projected):
        start = tf.broadcast_to(self.start, tf.concat([tf.shape(projected)[:-2], [1, self.units]], axis=0))
        return tf.concat([start, projected[..., :-1, :]], axis=-2)  # x̃_t = x_{t−1} W_x, x̃_0 = s

    def _attention_mask(self, num_steps, valid, num_samples):
        positions = tf.range(num_steps)
        return (positions[None, :] <= positions[:, None])[None]  # [1, T, T]: keys s ≤ t

    def initial_cache(self, batch_size, num_steps):
        """The empty cache for ``step``: {"index": 0, "keys": [...], "values": [...]}.

        Args:
          batch_size: N, the rows that ``step`` will read (S·B when there are S samples).
          num_steps: T_max, the number of steps (a Python int for static shapes under XLA).

        Returns:
          A dict: "index" a scalar int32 (the next step t), and "keys", "values" one zero tensor
          [N, n, T_max, d_k] per block (head-major).
        """
        shape = tf.stack([batch_size, self.num_heads, num_steps, self.units // self.num_heads])
        empty = [tf.zeros(shape, self.compute_dtype) for _ in self.blocks]
        return {"index": tf.constant(0, tf.int32), "keys": empty, "values": list(empty)}

    def step_weights(self):
        """What every ``step`` of a loop reads, for the loop to prepare once before it: the weights in the
        compute dtype, {"input_kernel": W_x, "start": s, "blocks": each block's
        ``TransformerBlock.step_weights``}, and "final_cache", a ``FinalCache`` to which the loop binds
        its final cache after it has run (``finish_steps``), for the gradient of the steps."""
        dtype = self.compute_dtype
        return {"input_kernel": tf.cast(self.input_kernel, dtype), "start": tf.cast(self.start, dtype),
                "blocks": [block.step_weights(dtype) for block in self.blocks], "final_cache": FinalCache()}

    @staticmethod
    def finish_steps(weights, cache):
        """Binds the cache after the last step to the loop's ``weights`` (see ``cached_attention``)."""
        weights["final_cache"].bind(cache)

    def step(self, inputs, cache, context=None, context_projection=None, training=False, weights=None):
        """h_t from x_{t−1} and c_t, t = cache["index"]: equal to ``call``'s output at t.

        Args:
          inputs: x_{t−1} [N, F], the input of the previous step; ignored at t = 0, where the
            learned start vector takes its place (pass zeros).
          cache: from ``initial_cache`` or the previous ``step``.
          context: c_t [N, C] (pos[t]); or instead ``context_projection``: its ``project_context``
            [N, d], which a loop over steps computes for all steps at once. None of both: no context.
          training: enables dropout.
          weights: ``step_weights()``, which a loop over steps prepares once (and, if it is differentiated,
            passes with its final cache to ``finish_steps``); None: prepared here.

        Returns:
          (h_t [N, d], the cache with step t's keys and values and index t + 1).
        """
        index = cache["index"]
        if context_projection is None:
            context_projection = self.bias if context is None else self.project_context(context)
        if weights is None:
            weights = self.step_weights()
        # In the compute dtype, as a layer call would run (a method call has no autocast scope): under
        # mixed precision the inputs, the context's projection and the raw weights are cast.
        dtype = self.compute_dtype
        projected = tf.matmul(tf.cast(inputs, dtype), weights["input_kernel"])
        x = tf.where(index > 0, projected, weights["start"]) + tf.cast(context_projection, dtype)
        x = self.dropout(x, training=training)  # [N, d]
        keys, values = [], []
        final_cache = weights["final_cache"]
        for i, (block, block_keys, block_values, block_weights) in enumerate(
                zip(self.blocks, cache["keys"], cache["values"], weights["blocks"])):
            x, block_keys, block_values = block.step(
                x, block_keys, block_values, index, training=training, weights=block_weights,
                final_cache=final_cache.block(i))
            keys.append(block_keys)
            values.append(block_values)
        return self.final_norm(x), {"index": index + 1, "keys": keys, "values": values}


def cached_attention(query, keys, values, index, final_cache=None):
    """One query row's attention over the cached keys and values of rows ≤ ``index``.

        o_t = Σ_{s ≤ t} p_ts v_s,     p_t = softmax_s(q_t · k_s / √d_k)   (rows s > t masked)

    The scores and the weighted sum are elementwise products and sums (fused loops under XLA) rather than
    batched [1, d_k] × [d_k, T_max] matrix products. The gradient is written out,

        ∂q_t = Σ_s g_s k_s / √d_k,   ∂k_s = g_s q_t / √d_k,   ∂v_s = p_ts ∂o_t,
        g_s = p_ts (∂o_t · v_s − ∂o_t · o_t),

    so that it keeps only the row-sized q_t, o_t and p_t of the forward pass and reads the keys and values
    from ``final_cache`` when given: the cache of the finished loop, whose rows ≤ t are those that step t
    read (each row is written once, at its own step). TensorFlow's gradient of a loop otherwise keeps
    every cache a step read, one [N, n, T_max, d_k] tensor per step and block: O(T²) memory (tens of GB
    for a music sequence of 1,800 steps).

    Args:
      query: q_t [N, n, d_k].
      keys, values: the cache [N, n, T_max, d_k] with row t written.
      index: t, a scalar int32 tensor.
      final_cache: None, or a callable giving (keys, values) of the finished loop (``FinalCache.block``),
        or None when the loop has not bound them (then the gradient reads ``keys`` and ``values``).

    Returns:
      o_t [N, n, d_k].
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    visible = tf.range(tf.shape(keys)[2]) <= index  # [T_max]: keys 0..t

    @tf.custom_gradient
    def attend(query, keys, values):
        scores = tf.where(visible, tf.reduce_sum(query[:, :, None] * keys, axis=-1) * scale, _LARGE_NEGATIVE)
        probs = tf.nn.softmax(scores)  # [N, n, T_max], exactly 0 at rows > t
        out = tf.reduce_sum(probs[..., None] * values, axis=2)

        def grad(d_out):
            final = None if final_cache is None else final_cache()
            read_keys, read_values = (keys, values) if final is None else final
            d_probs = tf.reduce_sum(d_out[:, :, None] * read_values, axis=-1)
            d_scores = probs * (d_probs - tf.reduce_sum(d_out * out, axis=-1, keepdims=True))
            d_query = tf.reduce_sum(d_scores[..., None] * read_keys, axis=2) * scale
            return d_query, d_scores[..., None] * query[:, :, None] * scale, probs[..., None] * d_out[:, :, None]

        return out, grad

    return attend(query, keys, values)


class FinalCache:
    """The cache after a loop over ``CausalAttentionContext.step``, for the gradient of every step's
    attention read (``cached_attention``): ``CausalAttentionContext.step_weights`` makes one per loop,
    the loop binds its final cache to it (``bind``) once it has run, and the gradient, built after that,
    reads it."""

    def __init__(self):
        self._cache = None

    def bind(self, cache):
        """Records the loop's final cache (``initial_cache``'s structure)."""
        self._cache = cache

    def block(self, index):
        """A callable giving block ``index``'s (keys, values) of the bound cache, or None before ``bind``."""
        def read():
            return None if self._cache is None else (self._cache["keys"][index], self._cache["values"][index])
        return read


def _check_sizes(units, num_heads, feed_forward_units, dropout):
    if units < 1 or num_heads < 1 or feed_forward_units < 1:
        raise ValueError(f"attention: units={units}, num_heads={num_heads} and feed_forward_units="
                         f"{feed_forward_units} must all be >= 1")
    if units % num_heads:
        raise ValueError(f"attention: units={units} is not divisible by num_heads={num_heads}; choose heads "
                         "that divide the width (each head reads units / num_heads features)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"attention: dropout={dropout} must be in [0, 1)")
