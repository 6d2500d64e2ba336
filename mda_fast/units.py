"""Units (one attention head's parameter subspace, or a whole linear module) and architecture
adapters; the hooks that capture a block's (a, g) live in ``mda_fast.capture``.

A :class:`Unit` is head ``h`` of layer ``l`` in a block mode. Each mode is a list of Kronecker
blocks (:class:`BlockSpec`); a block is a set of weight *pieces* that share one input and are
stacked along the output dimension, so its weight is a matrix ``W [O, I]`` and the gradient of a
row's loss w.r.t. it is ``G = sum_t g_t a_t^T`` with ``a [T, I]`` the block input and ``g [T, O]``
the gradient w.r.t. the block output. Head blocks exclude biases (the authors' choice).

    mode   blocks                     input a (I)                 output g (O)
    qk     [W_Q[h]; W_K[h]]           attention input x (d)       [dL/dq_h, dL/dk_h] (2*hs), pre-rotary
    v      W_V[h]                     x (d)                       dL/dv_h (hs)
    o      W_O[:, h]                  head output z_h (hs)        dL/d(dense out) (d)
    qkvo   qk + v + o

A :class:`ModuleUnit` is one whole linear module of a layer (``L3.attention.dense``,
``L3.mlp.dense_4h_to_h``; the module path ``gpt_neox.layers.3.attention.dense`` is the same unit):
one block of the module's whole weight ``W [O, I]`` plus, when the module has a bias, the bias as
the last column ``[W | b] [O, I + 1]``, its input ``a`` given a trailing column of ones (so
``G = sum_t g_t [a_t; 1]^T`` holds the bias gradient ``sum_t g_t`` in its last column). The suffix
``.nobias`` (``L3.attention.dense.nobias``) leaves the bias out; ``.bias`` asks for it explicitly
(a module without a bias is then refused instead of attributed on its weight alone).

    GPT-NeoX   attention.query_key_value, attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h
    GPT-2      attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (Conv1D, weight [in, out])
    Llama      self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj (biases only where the config has them)

Adapters know where each architecture keeps those weights (GPT-NeoX interleaves [q, k, v] per
head in one Linear; GPT-2 uses Conv1D with [in, out] weights and [Q | K | V] column groups;
Llama has separate projections and grouped-query attention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from mda_fast.errors import ConfigError

MODES = {"qk": ("qk",), "v": ("v",), "o": ("o",), "qkvo": ("qk", "v", "o")}
NOBIAS = ".nobias"  # module-unit suffix: the weight only
WITHBIAS = ".bias"  # module-unit suffix: weight and bias, refused for a bias-less module
_HEAD = re.compile(r"^[Ll](\d+)\.[Hh]?(\d+)(?:\.(\w+))?$|^(\d+):(\d+)(?::(\w+))?$")  # L1.H3[.mode], 1:3[:mode]
_MODULE = re.compile(r"^[Ll](\d+)\.([A-Za-z_][\w.]*)$")  # L3.attention.dense[.nobias]
_PATH = re.compile(r"^([A-Za-z_][\w.]*?)\.(\d+)\.([A-Za-z_][\w.]*)$")  # gpt_neox.layers.3.attention.dense


@dataclass(frozen=True)
class Piece:
    """Rows ``out_rows`` and columns ``in_cols`` of one module's weight, in [out, in] orientation."""

    module: str  # dotted path of an nn.Linear (or GPT-2 Conv1D, stored [in, out])
    out_rows: slice | None  # None = all outputs
    in_cols: slice | None  # None = all inputs
    transposed: bool = False  # Conv1D keeps weight as [in, out]


@dataclass(frozen=True)
class BlockSpec:
    name: str  # e.g. "L1.H3.qk"
    layer: int
    head: int | None  # None for a whole-module block
    kind: str  # "qk" | "v" | "o" | "module"
    in_dim: int  # I (I + 1 with ``bias``: the input's trailing column of ones)
    out_dim: int  # O
    pieces: tuple[Piece, ...]  # stacked along O; all share the same input and in_cols
    bias: bool = False  # whole-module block: the module's bias is the weight's last column [O, I + 1]

    def shares_weights(self, other: "BlockSpec") -> bool:
        """Whether the two blocks hold a common weight entry (e.g. a key head shared under GQA)."""
        return any(a.module == b.module and _overlap(a.out_rows, b.out_rows) and _overlap(a.in_cols, b.in_cols)
                   for a in self.pieces for b in other.pieces)


def _overlap(a: slice | None, b: slice | None) -> bool:
    """Whether two row/column ranges (None = all) intersect."""
    if a is None or b is None:
        return True
    return max(a.start or 0, b.start or 0) < min(a.stop, b.stop)


@dataclass(frozen=True)
class Unit:
    layer: int
    head: int
    mode: str = "qk"

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}.{self.mode}"

    def blocks(self, adapter: "Adapter") -> list[BlockSpec]:
        if self.mode not in MODES:
            raise ConfigError(f"unknown block mode {self.mode!r}; expected one of {sorted(MODES)}")
        adapter.check_head(self.layer, self.head)
        return [adapter.block(self.layer, self.head, kind) for kind in MODES[self.mode]]

    @classmethod
    def parse(cls, text: str) -> "Unit | ModuleUnit":
        """Parse a head ``"L1.H3.qk"`` / ``"1:3:qk"`` / ``"1:3"``, or a whole module ``"L3.attention.dense"``
        / ``"gpt_neox.layers.3.attention.dense"`` (``.nobias``: without its bias) as a ModuleUnit."""
        t = text.strip()
        m = _HEAD.match(t)
        if m:
            layer, head, mode = (m.group(1), m.group(2), m.group(3)) if m.group(1) else m.group(4, 5, 6)
            return cls(int(layer), int(head), mode or "qk")
        m = _MODULE.match(t)
        prefix, layer, path = (None, m.group(1), m.group(2)) if m else (_PATH.match(t) or _no_unit(text)).groups()
        bias, required = not path.endswith(NOBIAS), path.endswith(WITHBIAS)
        path = path[: -len(NOBIAS)] if not bias else path[: -len(WITHBIAS)] if required else path
        return ModuleUnit(int(layer), path, bias, prefix, required)


def _no_unit(text: str):
    raise ConfigError(f"cannot parse unit {text!r}; write a head as L<layer>.H<head>.<mode>, e.g. L1.H3.qk, or a "
                      f"whole module as L<layer>.<module>, e.g. L3.attention.dense (.nobias: without its bias)")


@dataclass(frozen=True)
class ModuleUnit:
    """One whole linear module of layer ``layer`` (``module``: its path inside the layer), its bias
    the last weight column when ``bias`` and the module has one. One block, named like the unit."""

    layer: int
    module: str  # e.g. "attention.dense", "mlp.dense_4h_to_h"
    bias: bool = True  # include the module's bias (when it has one)
    prefix: str | None = field(default=None, compare=False)  # layers' path as written ("gpt_neox.layers"), or None
    bias_required: bool = field(default=False, compare=False)  # ".bias": a module without one is refused
    head = None  # not a head: head-only commands (mda intervene) refuse it
    mode = "module"

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.module}" + ("" if self.bias else NOBIAS)

    def blocks(self, adapter: "Adapter") -> list[BlockSpec]:
        block = adapter.module_block(self.layer, self.module, self.bias, self.prefix, self.name)
        if self.bias_required and not block.bias:
            raise ConfigError(f"unit {self.name}{WITHBIAS}: the model's {block.pieces[0].module} has no bias; "
                              f"write {self.name} (its weight) without {WITHBIAS}")
        return [block]


class Adapter:
    """Where an architecture keeps head weights. Subclasses fill in the module paths and slices."""

    def __init__(self, config, linears: dict | None = None):
        self.config = config
        self.linears: dict[str, tuple[int, int, bool, bool]] = linears or {}  # path -> (O, I, has bias, Conv1D)
        self.n_layers: int = config.num_hidden_layers
        self.n_heads: int = config.num_attention_heads
        self.d_model: int = config.hidden_size
        self.head_size: int = getattr(config, "head_dim", None) or self.d_model // self.n_heads

    # -- to implement ---------------------------------------------------------------------
    def layer_path(self, layer: int) -> str:
        raise NotImplementedError

    def qkv_pieces(self, layer: int, head: int, kind: str) -> tuple[Piece, ...]:
        raise NotImplementedError

    def out_piece(self, layer: int, head: int) -> Piece:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def check_head(self, layer: int, head: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer} is out of range: the model has {self.n_layers} layers (0..{self.n_layers - 1})")
        if not 0 <= head < self.n_heads:
            raise ConfigError(f"head {head} is out of range: layer {layer} has {self.n_heads} heads (0..{self.n_heads - 1})")

    def block(self, layer: int, head: int, kind: str) -> BlockSpec:
        self.check_head(layer, head)
        hs = self.head_size
        if kind == "o":
            pieces = (self.out_piece(layer, head),)
            in_dim, out_dim = hs, self.d_model
        elif kind in ("qk", "v"):
            pieces = self.qkv_pieces(layer, head, kind)
            in_dim, out_dim = self.d_model, sum(p.out_rows.stop - p.out_rows.start for p in pieces)
        else:
            raise ConfigError(f"unknown block kind {kind!r}")
        return BlockSpec(f"L{layer}.H{head}.{kind}", layer, head, kind, in_dim, out_dim, pieces)

    def module_block(self, layer: int, path: str, bias: bool, prefix: str | None, name: str) -> BlockSpec:
        """The one block of a whole linear module ``layer_path(layer).path`` ([W | b] when ``bias``
        and the module has one); ConfigError naming the unit when the model has no such module."""
        self.check_head(layer, 0)
        full = f"{self.layer_path(layer)}.{path}"
        if prefix is not None and f"{prefix}.{layer}" != self.layer_path(layer):
            raise ConfigError(f"unit {prefix}.{layer}.{path}: this model's layers are {self.layer_path(layer)}, "
                              f"not {prefix}.{layer}; write it as {name}")
        if full not in self.linears:
            here = sorted(p[len(self.layer_path(layer)) + 1 :] for p in self.linears if p.startswith(self.layer_path(layer) + "."))
            raise ConfigError(f"unit {name}: the model has no linear module {full}; layer {layer}'s linear modules: "
                              f"{', '.join(here) or 'none'}")
        out_dim, in_dim, has_bias, transposed = self.linears[full]
        with_bias = bias and has_bias
        piece = Piece(full, None, None, transposed=transposed)
        return BlockSpec(name, layer, None, "module", in_dim + with_bias, out_dim, (piece,), bias=with_bias)

    def slice_weight(self, model: nn.Module, block: BlockSpec, grad: bool = False) -> torch.Tensor:
        """The block's weight (or its ``.grad`` when ``grad``) as a [O, I] tensor (a copy if stacked;
        [O, I + 1] with the bias as the last column for a whole-module block with ``bias``)."""
        parts = []
        for piece in block.pieces:
            w = _param(model, piece.module, "weight", grad)
            parts.append(_piece_view(w, piece))
        if block.bias:
            parts = [torch.cat([parts[0], _param(model, block.pieces[0].module, "bias", grad)[:, None]], dim=1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def add_to_weight(self, model: nn.Module, block: BlockSpec, delta: torch.Tensor) -> None:
        """In place ``W_block += delta`` (``delta [O, I]``): writes through to the parameters (the unit
        tests use it to check that a block maps to exactly the weights it names)."""
        row = 0
        with torch.no_grad():
            for piece in block.pieces:
                view = _piece_view(model.get_submodule(piece.module).weight, piece)
                view.add_(delta[row : row + view.shape[0], : view.shape[1]])
                if block.bias:
                    model.get_submodule(piece.module).bias.add_(delta[row : row + view.shape[0], view.shape[1]])
                row += view.shape[0]


def _param(model: nn.Module, module: str, what: str, grad: bool) -> torch.Tensor:
    """``module``'s ``what`` ("weight" | "bias") parameter, or its ``.grad`` when ``grad``."""
    w = getattr(model.get_submodule(module), what)
    w = w.grad if grad else w
    if w is None:
        raise ValueError(f"{module}.{what} has no gradient; run backward with the {what} requiring grad")
    return w


def linear_modules(model: nn.Module) -> dict[str, tuple[int, int, bool, bool]]:
    """{path: (out features O, in features I, has a bias, Conv1D [in, out])} of every nn.Linear and
    GPT-2 Conv1D of ``model`` (what module units may name)."""
    out = {}
    for path, m in model.named_modules():
        conv1d = type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None and m.weight.dim() == 2
        if isinstance(m, nn.Linear) or conv1d:
            O, I = (m.weight.shape[1], m.weight.shape[0]) if conv1d else tuple(m.weight.shape)
            out[path] = (int(O), int(I), getattr(m, "bias", None) is not None, conv1d)
    return out


def _piece_view(weight: torch.Tensor, piece: Piece) -> torch.Tensor:
    """A view [O_piece, I] of ``weight`` for ``piece``; writes go through to the parameter."""
    w = weight.t() if piece.transposed else weight
    if piece.out_rows is not None:
        w = w[piece.out_rows]
    if piece.in_cols is not None:
        w = w[:, piece.in_cols]
    return w


class GPTNeoXAdapter(Adapter):
    """``query_key_value`` rows are grouped per head as [q, k, v]; ``dense`` columns per head."""

    def layer_path(self, layer: int) -> str:
        return f"gpt_neox.layers.{layer}"

    def qkv_pieces(self, layer, head, kind):
        hs, base = self.head_size, 3 * self.head_size * head
        rows = slice(base, base + 2 * hs) if kind == "qk" else slice(base + 2 * hs, base + 3 * hs)
        # q and k of one head are adjacent rows: one piece serves the whole qk block.
        return (Piece(f"{self.layer_path(layer)}.attention.query_key_value", rows, None),)

    def out_piece(self, layer, head):
        hs = self.head_size
        return Piece(f"{self.layer_path(layer)}.attention.dense", None, slice(hs * head, hs * (head + 1)))


class GPT2Adapter(Adapter):
    """Conv1D ``c_attn`` (weight [d, 3d]) outputs [Q | K | V], each split per head."""

    def layer_path(self, layer: int) -> str:
        return f"transformer.h.{layer}"

    def qkv_pieces(self, layer, head, kind):
        hs, d, m = self.head_size, self.d_model, f"{self.layer_path(layer)}.attn.c_attn"
        cols = lambda group: slice(group * d + hs * head, group * d + hs * (head + 1))  # noqa: E731
        groups = (0, 1) if kind == "qk" else (2,)
        return tuple(Piece(m, cols(g), None, transposed=True) for g in groups)

    def out_piece(self, layer, head):
        hs = self.head_size
        return Piece(f"{self.layer_path(layer)}.attn.c_proj", None, slice(hs * head, hs * (head + 1)), transposed=True)


class LlamaAdapter(Adapter):
    """Separate q/k/v/o projections; with grouped-query attention head h reads key/value head h // group."""

    def layer_path(self, layer: int) -> str:
        return f"model.layers.{layer}"

    def qkv_pieces(self, layer, head, kind):
        hs, p = self.head_size, f"{self.layer_path(layer)}.self_attn"
        n_kv = getattr(self.config, "num_key_value_heads", None) or self.n_heads
        kv = head // (self.n_heads // n_kv)
        kv_rows = slice(hs * kv, hs * (kv + 1))
        if kind == "qk":
            return (Piece(f"{p}.q_proj", slice(hs * head, hs * (head + 1)), None), Piece(f"{p}.k_proj", kv_rows, None))
        return (Piece(f"{p}.v_proj", kv_rows, None),)

    def out_piece(self, layer, head):
        hs = self.head_size
        return Piece(f"{self.layer_path(layer)}.self_attn.o_proj", None, slice(hs * head, hs * (head + 1)))


ADAPTERS = {"gpt_neox": GPTNeoXAdapter, "gpt2": GPT2Adapter, "llama": LlamaAdapter, "mistral": LlamaAdapter, "qwen2": LlamaAdapter}


def get_adapter(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ConfigError(f"no unit adapter for model type {model_type!r}; supported: {sorted(ADAPTERS)}")
    return ADAPTERS[model_type](model.config, linear_modules(model))
