"""What a traced function runs: op types of its graph and of every function it calls."""

from __future__ import annotations

import collections

import tensorflow as tf


def traced_op_types(fn, *args, device=None, jit_compile=False):
    """Counter of op types in ``tf.function(fn)`` traced on ``args`` (tensors or TensorSpecs).

    The count covers the function library too (``tf.while_loop`` bodies, ``tf.cond`` branches, gradient
    functions). ``device`` (e.g. "/GPU:0") is entered inside the traced function, so that layers that
    choose kernels by device at trace time (``tflatent.layers.placement``) see it; nothing runs, so a
    GPU's graph can be inspected on a machine without one. ``jit_compile`` traces it for XLA.
    """
    def traced(*inner):
        if device is None:
            return fn(*inner)
        with tf.device(device):
            return fn(*inner)

    graph_def = tf.function(traced, jit_compile=jit_compile).get_concrete_function(*args).graph.as_graph_def()
    counts = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def loops(counts):
    """How many while loops a ``traced_op_types`` counter holds."""
    return sum(n for op, n in counts.items() if op in ("While", "StatelessWhile"))


def loop_accumulators(graph):
    """The shapes of the tensors that the while loops of a traced ``graph`` (and of the functions it
    calls) keep per step for a gradient: TensorFlow pushes each onto a TensorList accumulator."""
    return [tuple(op.inputs[1].shape) for current in _graphs(graph) for op in current.get_operations()
            if op.type == "TensorListPushBack"]


def output_shapes(graph, dtype=tf.float32):
    """The static shapes of every ``dtype`` tensor that the ops of a traced ``graph`` (and of the functions
    it calls: loop bodies, branches) produce."""
    return [tuple(out.shape) for current in _graphs(graph) for op in current.get_operations()
            for out in op.outputs if out.dtype == dtype and out.shape.rank is not None]


def _graphs(graph):
    """``graph`` and every function graph it calls, transitively."""
    found, pending, seen = [], [graph], set()
    while pending:
        current = pending.pop()
        found.append(current)
        for function in getattr(current, "_functions", {}).values():
            inner = getattr(function, "graph", None)
            if inner is not None and id(inner) not in seen:
                seen.add(id(inner))
                pending.append(inner)
    return found
