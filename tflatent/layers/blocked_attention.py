"""Multi-head attention that, outside training, reads its queries in blocks: memory linear in T.

Keras's ``MultiHeadAttention`` forms the scores of all T queries against all S keys at once,

    P = softmax(Q Kᵀ / √d_k + log M)  ∈ [N, n, T, S],     O = P V,

and keeps the logits, their masked copy and P alive together: O(N · n · T · S) memory. For the music
sets this is what bounds evaluation, not the model's weights: a Nottingham tune of 1,800 frames in an
importance-sampled batch of 32 sequences × 10 samples needs ~17 GB for one such tensor. Each row of P
depends on its own query only, so the queries can be taken ``query_block`` at a time,

    O[:, :, b·B_q : (b+1)·B_q] = softmax(Q_b Kᵀ / √d_k + log M_b) V,

with the same keys, values and mask rows, one block after the other. Peak memory is then
O(N · n · B_q · S), and O is the same function (every row is computed by Keras's own attention, on
its own query and mask row).

Training keeps Keras's single pass (its gradient keeps every block's P anyway, and a training batch
is short next to an evaluation one), as do query lengths that fit one block.
"""

from __future__ import annotations

import keras
import tensorflow as tf

QUERY_BLOCK = 64  # queries per block: [N, n, 64, S] scores at a time
MAX_SCORES = 2 ** 26  # N · n · T · S above which evaluation attends in blocks (256 MiB of float32 scores)


@keras.saving.register_keras_serializable(package="tflatent")
class QueryBlockedAttention(keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` whose inference pass attends ``query_block`` queries at a time
    when the scores would be large.

    The weights, the call signature and the outputs are Keras's (module docstring). Outside training,
    a pass whose scores P ∈ [N, n, T, S] have more than ``max_scores`` elements takes its queries in
    blocks; a smaller one (sampling a sequence, a short batch) runs Keras's single pass, without the
    loop's overhead. With static shapes the choice is made when the graph is built, else at run time.

    Args:
      num_heads, key_dim, **kwargs: as ``keras.layers.MultiHeadAttention``.
      query_block: B_q, the queries per block.
      max_scores: the largest N · n · T · S attended in one pass outside training.
    """

    def __init__(self, num_heads, key_dim, query_block=QUERY_BLOCK, max_scores=MAX_SCORES, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        if int(query_block) < 1 or int(max_scores) < 1:
            raise ValueError(f"{type(self).__name__}: query_block={query_block} and max_scores={max_scores} "
                             "must be >= 1")
        self.query_block = int(query_block)
        self.max_scores = int(max_scores)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        """query [N, T, n, d_k], key and value [N, S, n, ·], attention_mask None or bool [N | 1, T | 1, S]."""
        compute = super()._compute_attention
        if training or return_attention_scores or query.shape.rank != 4:
            return compute(query, key, value, attention_mask, training, return_attention_scores, **kwargs)
        dims = [query.shape[0], query.shape[1], query.shape[2], key.shape[1]]  # N, T, n, S
        if None not in dims:
            if dims[0] * dims[1] * dims[2] * dims[3] <= self.max_scores:
                return compute(query, key, value, attention_mask, training, **kwargs)
            return self._attend_in_blocks(compute, query, key, value, attention_mask), None
        shape = tf.cast(tf.concat([tf.shape(query)[:3], tf.shape(key)[1:2]], 0), tf.int64)
        output = tf.cond(tf.reduce_prod(shape) <= self.max_scores,
                         lambda: compute(query, key, value, attention_mask, training, **kwargs)[0],
                         lambda: self._attend_in_blocks(compute, query, key, value, attention_mask))
        return output, None

    def _attend_in_blocks(self, compute, query, key, value, attention_mask):
        """``compute``'s output [N, T, n, d_v], its queries taken ``query_block`` at a time, in order."""
        block = self.query_block
        shape = tf.shape(query)
        batch, num_steps = shape[0], shape[1]
        num_blocks = (num_steps + block - 1) // block
        padding = num_blocks * block - num_steps

        def blocks(tensor, leading, fill):  # [L, T, ...] → [num_blocks, L, B_q, ...]
            tensor = tf.pad(tensor, [[0, 0], [0, padding]] + [[0, 0]] * (tensor.shape.rank - 2),
                            constant_values=fill)
            tensor = tf.reshape(tensor, tf.concat([[leading, num_blocks, block], tf.shape(tensor)[2:]], 0))
            return tf.transpose(tensor, [1, 0] + list(range(2, tensor.shape.rank)))

        query_blocks = blocks(query, batch, tf.zeros([], query.dtype))
        mask_rows = attention_mask is not None and attention_mask.shape[-2] != 1
        if mask_rows:  # one mask row per query (e.g. causal): each block takes its rows
            mask = tf.cast(attention_mask, tf.bool)
            mask_blocks = blocks(mask, tf.shape(mask)[0], True)  # padded queries see every key
        else:  # one row for all queries (key padding), or none: every block takes it whole
            mask_blocks = tf.zeros([num_blocks], tf.bool)

        def attend(elements):
            query_block, mask_block = elements
            return compute(query_block, key, value, mask_block if mask_rows else attention_mask)[0]

        output = tf.map_fn(attend, (query_blocks, mask_blocks), parallel_iterations=1,
                           fn_output_signature=tf.TensorSpec(None, value.dtype))  # [blocks, N, B_q, n, d_v]
        output = tf.transpose(output, [1, 0, 2, 3, 4])
        output = tf.reshape(output, tf.concat([[batch, num_blocks * block], tf.shape(output)[3:]], 0))
        output = output[:, :num_steps]
        output.set_shape(query.shape[:2].concatenate(value.shape[2:]))
        return output

    def get_config(self):
        return {**super().get_config(), "query_block": self.query_block, "max_scores": self.max_scores}
