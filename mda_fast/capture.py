"""Capture hooks: the block inputs ``a [B, T, I]`` and output gradients ``g [B, T, O]`` of every
block of a set of units, from one forward and a backward that stops at the lowest unit's layer.

    with Capture(model, blocks) as cap:
        loss = model(tokens).loss; loss.backward()
    cap.a["L1.H3.qk"], cap.g["L1.H3.qk"]         # per-sample factors of G = sum_t g_t a_t^T

The blocks are ``units.BlockSpec`` (where each block's weight pieces live: ``units.Adapter``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mda_fast.units import Adapter, BlockSpec, get_adapter


class Capture:
    """Record each block's input ``a [B, T, I]`` and output gradient ``g [B, T, O]``.

    Use as a context manager around one forward and one backward pass. With
    ``grad_only_from_layer`` every parameter is frozen for the duration, the hidden state entering
    the lowest target layer is detached, and each captured module output that then needs no grad
    (the lowest layer's qkv, or its o when only o is captured) starts the graph (:class:`_GraphStart`):
    backward stops at the captured outputs and computes no weight gradient at all (the per-sample
    gradient is formed from ``a`` and ``g`` instead), nor the lowest layer's input gradient (its
    LayerNorm, the qkv input GEMM and, with a parallel residual, the whole MLP branch).
    """

    def __init__(self, model: nn.Module, blocks: Sequence[BlockSpec], grad_only_from_layer: bool = True,
                 adapter: Adapter | None = None):
        self.model, self.blocks = model, list(blocks)
        self.adapter = adapter or get_adapter(model)
        self.grad_only_from_layer = grad_only_from_layer
        self._inputs: dict[str, torch.Tensor] = {}  # module path -> input [B, T, in_full]
        self._grads: dict[str, torch.Tensor] = {}  # module path -> output grad [B, T, out_full]
        self._outputs: dict[str, torch.Tensor] = {}  # module path -> output (meta: shape/dtype only)
        self._handles: list = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []

    # -- results ----------------------------------------------------------------------------
    @property
    def a(self) -> dict[str, torch.Tensor]:
        """Block name -> input ``[B, T, I]`` (``[B, T, I + 1]``, a trailing column of ones, for a
        block with ``bias``)."""
        out = {}
        for b in self.blocks:
            piece = b.pieces[0]
            x = self._need(self._inputs, piece.module, "forward")
            x = x if piece.in_cols is None else x[..., piece.in_cols]
            out[b.name] = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1) if b.bias else x
        return out

    @property
    def g(self) -> dict[str, torch.Tensor]:
        """Block name -> gradient w.r.t. the block output ``[B, T, O]``.

        A block whose output the loss does not depend on (e.g. the ``o`` block under a probe that
        reads attention patterns) gets no backward call; its gradient is zero.
        """
        out = {}
        for b in self.blocks:
            parts = []
            for piece in b.pieces:
                if piece.module not in self._grads:
                    out_like = self._need(self._outputs, piece.module, "forward")
                    device = self._inputs[piece.module].device
                    self._grads[piece.module] = torch.zeros(out_like.shape, dtype=out_like.dtype, device=device)
                grad = self._grads[piece.module]
                parts.append(grad if piece.out_rows is None else grad[..., piece.out_rows])
            out[b.name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return out

    @staticmethod
    def _need(store, key, phase):
        if key not in store:
            raise RuntimeError(f"no {phase} pass reached {key}; run the model inside the Capture context")
        return store[key]

    # -- hooks --------------------------------------------------------------------------------
    def __enter__(self) -> "Capture":
        modules = sorted({p.module for b in self.blocks for p in b.pieces})
        for path in modules:
            self._handles.append(self.model.get_submodule(path).register_forward_hook(self._hook_for(path)))
        if self.grad_only_from_layer and self.blocks:
            self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
            for p, _ in self._requires_grad:
                p.requires_grad_(False)
            lowest = min(b.layer for b in self.blocks)
            layer = self.model.get_submodule(self.adapter.layer_path(lowest))
            self._handles.append(layer.register_forward_pre_hook(_detach_input, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
        self._requires_grad.clear()

    def _hook_for(self, path: str):
        def hook(module, args, output):
            self._inputs[path] = args[0].detach()
            self._outputs[path] = torch.empty_like(output, device="meta")
            if self.grad_only_from_layer and not output.requires_grad:
                output = _GraphStart.apply(output, torch.zeros((), requires_grad=True))  # nothing below needs one
            if output.requires_grad:
                output.register_hook(lambda grad: self._grads.__setitem__(path, grad.detach()))
            return output
        return hook


class _GraphStart(torch.autograd.Function):
    """y = x, where backward starts: y requires grad (through ``anchor``, a scalar leaf) but its
    gradient flows on to nothing. Not a leaf tensor itself, so no .grad accumulates across the
    backward passes of one forward (a leaf would add the second pass's gradient into the first's)."""

    @staticmethod
    def forward(ctx, x, anchor):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return None, None


def _detach_input(module, args, kwargs):
    """Forward pre-hook: the layer's hidden-state input, detached (no gradient flows below it)."""
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = kwargs["hidden_states"].detach()
    return args, kwargs
