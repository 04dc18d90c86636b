"""Per-operator operation and memory-traffic counts, and their roofline aggregation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from llava.analysis.roofline import GIGA, TERA, Device, TransformerSpec


@dataclass
class Op:
    """One operator: operations and bytes moved (weights, activations, KV cache)."""

    name: str
    ops: float = 0.0
    weight_bytes: float = 0.0
    act_in: float = 0.0
    act_out: float = 0.0
    kv_in: float = 0.0
    kv_out: float = 0.0

    @property
    def traffic(self) -> float:
        """Bytes read and written by the operator."""
        return self.weight_bytes + self.act_in + self.act_out + self.kv_in + self.kv_out


@dataclass
class Totals:
    """Sums over a stack of operators and their roofline time."""

    ops: float = 0.0
    traffic: float = 0.0
    weight_bytes: float = 0.0
    act_out: float = 0.0
    kv_out: float = 0.0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    memory_seconds: float = 0.0
    bound: dict[str, str] = field(default_factory=dict)

    def add(self, op: Op, repeat: int, peak: float, bandwidth: float) -> None:
        """Accumulate ``repeat`` copies of ``op`` under the roofline ``max(compute, memory)``."""
        t_compute, t_memory = op.ops / peak, op.traffic / bandwidth
        self.ops += repeat * op.ops
        self.traffic += repeat * op.traffic
        self.weight_bytes += repeat * op.weight_bytes
        self.act_out += repeat * op.act_out
        self.kv_out += repeat * op.kv_out
        self.seconds += repeat * max(t_compute, t_memory)
        self.compute_seconds += repeat * t_compute
        self.memory_seconds += repeat * t_memory
        self.bound[op.name] = "compute" if t_compute >= t_memory else "memory"


def _linear_ops(spec: TransformerSpec, rows: int, bits: tuple[int, int, int]) -> list[Op]:
    """Weight matmuls of one layer on ``rows`` = batch x query tokens."""
    w, a, kv = (b / 8 for b in bits)
    ops = []
    for name, (i, o) in spec.linear_shapes().items():
        to_cache = name in ("k_proj", "v_proj")
        ops.append(
            Op(
                name,
                ops=2.0 * i * o * rows,
                weight_bytes=i * o * w,
                act_in=i * rows * a,
                act_out=0.0 if to_cache else o * rows * a,
                kv_out=o * rows * kv if to_cache else 0.0,
            )
        )
    return ops


def _attention_ops(
    spec: TransformerSpec, batch: int, q_len: int, ctx: int, bits: tuple[int, int, int]
) -> list[Op]:
    """Score matmul, softmax and value matmul, unfused and without causal-mask savings."""
    a, kv = bits[1] / 8, bits[2] / 8
    scores = batch * spec.heads * q_len * ctx
    q_elems = batch * q_len * spec.hidden
    kv_elems = batch * ctx * spec.kv_width
    return [
        Op(
            "qk_matmul",
            ops=2.0 * scores * spec.head_dim,
            act_in=q_elems * a,
            act_out=scores * a,
            kv_in=kv_elems * kv,
        ),
        Op("softmax", ops=5.0 * scores, act_in=scores * a, act_out=scores * a),
        Op(
            "sv_matmul",
            ops=2.0 * scores * spec.head_dim,
            act_in=scores * a,
            act_out=q_elems * a,
            kv_in=kv_elems * kv,
        ),
    ]


#: Counting conventions: ``exact`` charges the MLP activation (SiLU x gate) on the MLP's intermediate
#: width; ``llm-viewer`` charges it as LLM-Viewer does, on ``hidden`` elements (2 ops, 2 inputs, 1 output
#: per element), which is how PruMerge's Table 2 was computed.
CONVENTIONS = ("exact", "llm-viewer")


def _elementwise_ops(spec: TransformerSpec, rows: int, a_bits: int, convention: str = "exact") -> list[Op]:
    """Two norms (7 ops/element), two residual adds and the MLP activation (x gate for SwiGLU)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}: use one of {CONVENTIONS}")
    a = a_bits / 8
    h, inter = rows * spec.hidden, rows * spec.intermediate
    if convention == "llm-viewer":
        mlp_act = Op("mlp_act", ops=2.0 * h, act_in=2 * h * a, act_out=h * a)
    else:
        act_in = (2 if spec.gated_mlp else 1) * inter
        mlp_act = Op(
            "mlp_act", ops=(5.0 if spec.gated_mlp else 8.0) * inter, act_in=act_in * a, act_out=inter * a
        )
    return [
        Op("attn_norm", ops=7.0 * h, act_in=h * a, act_out=h * a),
        Op("mlp_norm", ops=7.0 * h, act_in=h * a, act_out=h * a),
        Op("attn_add", ops=1.0 * h, act_in=2 * h * a, act_out=h * a),
        Op("mlp_add", ops=1.0 * h, act_in=2 * h * a, act_out=h * a),
        mlp_act,
    ]


def layer_ops(
    spec: TransformerSpec,
    batch: int,
    q_len: int,
    ctx: int,
    bits: tuple[int, int, int],
    convention: str = "exact",
) -> list[Op]:
    """All operators of one block for ``q_len`` new tokens attending to ``ctx`` tokens."""
    rows = batch * q_len
    return (
        _linear_ops(spec, rows, bits)
        + _attention_ops(spec, batch, q_len, ctx, bits)
        + _elementwise_ops(spec, rows, bits[1], convention)
    )


def head_op(spec: TransformerSpec, batch: int, bits: tuple[int, int, int]) -> Op:
    """LM head on the last position only (what ``generate`` needs), plus the embedding table read."""
    w, a = bits[0] / 8, bits[1] / 8
    return Op(
        "lm_head",
        ops=2.0 * batch * spec.hidden * spec.vocab,
        weight_bytes=2 * spec.hidden * spec.vocab * w,
        act_in=batch * spec.hidden * a,
        act_out=batch * spec.vocab * a,
    )


def run_stack(
    spec: TransformerSpec,
    batch: int,
    q_len: int,
    ctx: int,
    bits: tuple[int, int, int],
    device: Device,
    convention: str = "exact",
) -> Totals:
    """Roofline totals of the whole stack for one forward step, every layer on the same tokens."""
    return run_layers(spec, batch, [(q_len, ctx)] * spec.layers, bits, device, convention)


def run_layers(
    spec: TransformerSpec,
    batch: int,
    shapes: Sequence[tuple[int, int]],
    bits: tuple[int, int, int],
    device: Device,
    convention: str = "exact",
) -> Totals:
    """Roofline totals of one forward step where layer ``i`` runs ``shapes[i] = (q_len, ctx)``: its own new
    tokens and attended context (in-LLM pruning gives each layer its own token count and KV cache).

    Raises:
        ValueError: ``shapes`` does not have one entry per layer of ``spec``.
    """
    if len(shapes) != spec.layers:
        raise ValueError(f"{spec.name} has {spec.layers} layers; got token counts for {len(shapes)}.")
    peak, bandwidth = device.peak(bits[0], bits[1]), device.bandwidth_gbps * GIGA
    totals = Totals()
    for (q_len, ctx), repeat in Counter(shapes).items():  # equal layers are costed once
        for op in layer_ops(spec, batch, q_len, ctx, bits, convention):
            totals.add(op, repeat, peak, bandwidth)
    if spec.vocab:
        totals.add(head_op(spec, batch, bits), 1, peak, bandwidth)
    return totals


def tera(x: float) -> float:
    """Scale to 1e12."""
    return x / TERA
