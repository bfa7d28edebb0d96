"""Two backward streams through one autograd pass: (Jᵀa, Jᵀb) for one graph with the graph walked once.

DLBacktrace's contrastive mode sends a positive and a negative stream back through the same forward. Two
``autograd.grad`` calls would keep the graph (``retain_graph``) and everything the rules derive per unit for
the second call; here autograd runs the first stream and a pre-hook on every node of the graph runs the same
node's backward on the second stream's gradient just before autograd runs it on the first. A node runs once
all its consumers have, so the second stream's gradient at it is complete by then, and the rules can share
per-unit work between the two calls of one node (they come one right after the other) and free it at once.

``switch(grads)`` before each second-stream call, with the first stream's gradients at the node's outputs (the
ones autograd is about to pass it), and ``switch(None)`` after it, tell rules which stream they serve and let
a node compute both streams in its second-stream call. Nodes of custom ``autograd.Function``s are called through their ``backward`` with their own context,
built-in nodes directly; each result goes to the same edges autograd would send it along.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def paired_grad(
    output: Tensor, source: Tensor, first: Tensor, second: Tensor, switch: Callable[[tuple | None], None]
) -> tuple[Tensor, Tensor]:
    """(∂output/∂source)ᵀ applied to ``first`` and to ``second`` (``source`` a leaf): one backward pass, zeros
    where nothing arrives."""
    pending: dict[Any, dict[int, Tensor]] = {}
    root = output.grad_fn
    if root is None:
        zeros = torch.zeros_like(source)
        return zeros, zeros.clone()
    pending[root] = {output.output_nr: second}
    leaf, handles = None, []

    def prehook(node: Any) -> Callable:
        def run(grads: tuple) -> None:
            arrived = pending.pop(node, {})
            inputs = tuple(
                None if g is None else arrived[i] if i in arrived else torch.zeros_like(g)
                for i, g in enumerate(grads)
            )
            switch(grads)
            try:
                _send(node, inputs, pending)
            finally:
                switch(None)

        return run

    try:
        seen, stack = set(), [root]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if getattr(node, "variable", None) is not None:  # AccumulateGrad of a leaf
                if node.variable is source:
                    leaf = node
                continue
            handles.append(node.register_prehook(prehook(node)))
            stack.extend(next_node for next_node, _ in node.next_functions)
        (result,) = torch.autograd.grad(output, source, first, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    other = pending.get(leaf, {}).get(0) if leaf is not None else None
    result = torch.zeros_like(source) if result is None else result
    return result, torch.zeros_like(source) if other is None else other


def _send(node: Any, grads: tuple, pending: dict[Any, dict[int, Tensor]]) -> None:
    """Run ``node``'s backward on ``grads`` and queue each input gradient at the node that produced the input."""
    if hasattr(node, "_forward_cls"):  # a custom autograd.Function: its outputs follow the forward's inputs
        outs = node._forward_cls.backward(node, *grads)
        outs = outs if isinstance(outs, tuple) else (outs,)
        outs = [g for g, needed in zip(outs, node.needs_input_grad) if needed]
        edges = [edge for edge in node.next_functions if edge[0] is not None]
    else:
        outs = node(*grads)
        outs = outs if isinstance(outs, tuple) else (outs,)
        edges = list(node.next_functions)
    for (target, index), g in zip(edges, outs):
        if target is None or g is None:
            continue
        slot = pending.setdefault(target, {})
        slot[index] = g if index not in slot else slot[index] + g
