"""Per-node FLOPs and bytes moved of an ONNX graph, for a roofline analysis.

`graph_costs(model, input_shapes)` fixes the graph inputs to concrete shapes, infers every
intermediate shape (ONNX shape inference with data propagation, the shape rules below for ONNX
Runtime contrib ops, then ONNX Runtime's symbolic shape inference, repeated while it helps) and
returns one `NodeCost` per top-level node. `node_cost` is the pure function on shapes underneath.

FLOP conventions (a multiply-add counts 2; integer/quantized ops put their integer op count in
`flops` and set `int_ops`):

- MatMul, MatMulInteger, QLinearMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul, FusedMatMul:
  2*M*N*K*prod(broadcast batch dims), 1-D operands per numpy; FusedMatMul's transA/transB/
  transBatchA/transBatchB are honoured. MatMulNBits: 2*M*N*K from its K and N attributes.
- Gemm, FusedGemm, QGemm: 2*M*N*K with transA/transB, + M*N if C is given, + M*N for a fused
  activation. alpha/beta scaling is not counted.
- Conv, FusedConv, ConvInteger, QLinearConv, NhwcConv, nchwc Conv: 2 * N * C_out * prod(out
  spatial) * (C_in/group) * prod(kernel), + one per output element each for bias, a fused Sum input
  and a fused activation. ConvTranspose: 2 * N * C_in * prod(in spatial) * (C_out/group) *
  prod(kernel) (+ bias).
- Elementwise binary and unary ops (Add ... Where, Relu ... Gelu, Cast, Clip, Quantize/Dequantize,
  QLinearAdd/Mul): 1 per output element; transcendentals (Exp, Erf, Tanh...) are not weighted.
- Softmax/LogSoftmax: 5 per element. LayerNormalization, SimplifiedLayerNormalization,
  Instance/GroupNormalization: 8 per element; SkipLayerNormalization: 9 (+1 with a bias input).
  BatchNormalization: 2 per element. Reduce*, ArgMax/ArgMin, Global*Pool: one per input element.
  MaxPool/AveragePool/LpPool: output elements * kernel size. Einsum: 2 * product of the sizes of
  all its indices.
- Attention (com.microsoft): the QKV projection 2*B*S*D_in*D_qkv (+ bias), then Q.K^T
  2*B*S*L*D_q, softmax 5*B*heads*S*L and .V 2*B*S*L*D_v, with L = S + past length.
  MultiHeadAttention (com.microsoft) and Attention (ai.onnx): the same without the projection,
  L from the key's shape (a past cache is not added).
- Data movement (Reshape, Transpose, Gather, Concat, Slice, Pad, Resize...) and any op not listed
  here: 0 FLOPs, bytes still counted.

Bytes: element count x dtype size (int4 packs two per byte; an unknown dtype counts 4 bytes).
Every input and output of a node is counted, as if nothing stayed in cache. Inputs that are
initializers or Constant outputs are weights; the rest are activations. Tensors whose shape stays
unknown count 0 bytes and make FLOP rules that need them give 0. Subgraphs (If/Loop/Scan bodies)
are not entered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.core import HastenError

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of known shape: numpy dtype name, and whether it is a constant (initializer)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    is_initializer: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return (self.numel * _dtype_bits(self.dtype) + 7) // 8


@dataclass(frozen=True)
class NodeCost:
    """FLOPs (or integer ops) and bytes read and written by one node."""

    name: str
    op_type: str
    domain: str
    flops: int
    int_ops: bool
    weight_bytes: int
    activation_bytes_in: int
    bytes_out: int

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.activation_bytes_in + self.bytes_out

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved; 0.0 when nothing moves."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_moved": self.bytes_moved, "intensity": self.intensity}


_BITS = {"bool": 8, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "float16": 16, "bfloat16": 16,
         "int32": 32, "uint32": 32, "float32": 32, "int64": 64, "uint64": 64, "float64": 64,
         "complex64": 64, "complex128": 128}


def _dtype_bits(dtype: str) -> int:
    if dtype in _BITS:
        return _BITS[dtype]
    if dtype.startswith("float8"):
        return 8
    if dtype.startswith(("int4", "uint4", "float4")):
        return 4
    try:
        return np.dtype(dtype).itemsize * 8 or 32
    except TypeError:
        return 32


# ---------------------------------------------------------------- FLOP rules on shapes

Infos = Sequence["TensorInfo | None"]
Rule = Callable[[dict[str, Any], Infos, Infos], int]


class _Unknown(ValueError):
    """A shape that a rule needs is not known."""


def _has(infos: Infos, i: int | None) -> bool:
    return i is not None and i < len(infos) and infos[i] is not None


def _shape(infos: Infos, i: int) -> tuple[int, ...]:
    if not _has(infos, i):
        raise _Unknown(i)
    return infos[i].shape  # type: ignore[union-attr]


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError as e:
        raise _Unknown("shapes do not broadcast") from e


def _out_numel(ins: Infos, outs: Infos) -> int:
    """Elements of output 0, or of the inputs broadcast together when it is unknown."""
    if _has(outs, 0):
        return outs[0].numel  # type: ignore[union-attr]
    known = [t.shape for t in ins if t is not None]
    if not known:
        raise _Unknown("no shapes")
    return math.prod(_broadcast(*known))


def _per_out(k: int) -> Rule:
    return lambda attrs, ins, outs: k * _out_numel(ins, outs)


def _per_in(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    return math.prod(_shape(ins, 0))


def _transposed(s: tuple[int, ...], attrs: dict[str, Any], which: str) -> tuple[int, ...]:
    """FusedMatMul/Gemm operand shape after its transBatch and trans attributes."""
    if attrs.get(f"transBatch{which}") and len(s) > 2:
        s = (*s[1:-1], s[0], s[-1])
    if attrs.get(f"trans{which}") and len(s) > 1:
        s = (*s[:-2], s[-1], s[-2])
    return s


def _matmul_out(a: tuple[int, ...], b: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, tuple[int, ...]]:
    """(K, output shape) of a numpy-style matmul after Gemm/FusedMatMul transposes."""
    a, b = _transposed(a, attrs, "A"), _transposed(b, attrs, "B")
    a2 = a if len(a) > 1 else (1, *a)
    b2 = b if len(b) > 1 else (*b, 1)
    batch = _broadcast(a2[:-2], b2[:-2])
    return a2[-1], batch + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())


def _matmul(a_idx: int = 0, b_idx: int = 1, bias_idx: int | None = None) -> Rule:
    def rule(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
        k, out = _matmul_out(_shape(ins, a_idx), _shape(ins, b_idx), attrs)
        extra = _has(ins, bias_idx) + bool(attrs.get("activation"))
        return (2 * k + extra) * math.prod(out)
    return rule


def _matmul_nbits(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    return 2 * math.prod(_shape(ins, 0)[:-1]) * attrs["N"] * attrs["K"]


def _conv_out(x: tuple[int, ...], kernel: Sequence[int], attrs: dict[str, Any], channels: int) -> tuple[int, ...]:
    """NCHW output shape of a convolution or pooling window over ``x``."""
    nd = len(x) - 2
    kernel = attrs.get("kernel_shape") or kernel
    strides, dil = attrs.get("strides") or [1] * nd, attrs.get("dilations") or [1] * nd
    pads, auto = attrs.get("pads") or [0] * (2 * nd), attrs.get("auto_pad", "NOTSET")
    out = []
    for i in range(nd):
        span = dil[i] * (kernel[i] - 1) + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-x[2 + i] // strides[i]))
        else:
            padded = x[2 + i] + (0 if auto == "VALID" else pads[i] + pads[i + nd])
            out.append((padded - span) // strides[i] + 1)
    return (x[0], channels, *out)


def _conv(x_idx: int = 0, w_idx: int = 1, bias_idx: int | None = 2, sum_idx: int | None = None) -> Rule:
    def rule(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
        w = _shape(ins, w_idx)
        out = _shape(outs, 0) if _has(outs, 0) else _conv_out(_shape(ins, x_idx), w[2:], attrs, w[0])
        extra = _has(ins, bias_idx) + _has(ins, sum_idx) + bool(attrs.get("activation"))
        return (2 * math.prod(w[1:]) + extra) * math.prod(out)
    return rule


def _conv_transpose(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    flops = 2 * math.prod(_shape(ins, 0)) * math.prod(_shape(ins, 1)[1:])
    return flops + (math.prod(_shape(outs, 0)) if _has(ins, 2) else 0)


def _pool(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    return _out_numel(ins, outs) * math.prod(attrs["kernel_shape"])


def _skip_norm(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    return (9 + _has(ins, 4)) * math.prod(_shape(ins, 0))


def _attn_core(rows: int, heads: int, kv_len: int, q_hidden: int, v_hidden: int) -> int:
    """Q.K^T, softmax and .V for ``rows`` = batch * query length."""
    return 2 * rows * kv_len * (q_hidden + v_hidden) + 5 * rows * heads * kv_len


def _ms_attention(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    x, w = _shape(ins, 0), _shape(ins, 1)
    rows = math.prod(x[:-1])
    proj = (2 * x[-1] + _has(ins, 2)) * rows * w[-1]
    sizes = attrs.get("qkv_hidden_sizes") or [w[-1] // 3] * 3
    kv_len = x[-2] + (_shape(ins, 4)[3] if _has(ins, 4) else 0)
    return proj + _attn_core(rows, attrs.get("num_heads", 1), kv_len, sizes[0], sizes[2])


def _mha(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    q, k, out = _shape(ins, 0), _shape(ins, 1), _shape(outs, 0)
    kv_len = k[2] if len(k) == 4 else k[1]
    if len(q) == 4:
        rows, heads = q[0] * q[2], q[1]
    else:
        rows, heads = q[0] * q[1], attrs.get("num_heads") or attrs.get("q_num_heads") or 1
    return _attn_core(rows, heads, kv_len, math.prod(q) // rows, math.prod(out) // rows)


def _einsum(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    lhs = str(attrs.get("equation", "")).replace(" ", "").split("->")[0]
    if "." in lhs:
        raise _Unknown("ellipsis")
    sizes: dict[str, int] = {}
    for i, term in enumerate(lhs.split(",")):
        sizes.update(zip(term, _shape(ins, i)))
    return 2 * math.prod(sizes.values())


_ELEMENTWISE = frozenset((
    "Add Sub Mul Div Pow Max Min Mean Sum Mod Where Equal Greater GreaterOrEqual Less LessOrEqual And Or Xor "
    "Not BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot PRelu Relu Sigmoid HardSigmoid HardSwish Tanh "
    "Erf Exp Log Sqrt Reciprocal Neg Abs Sign Ceil Floor Round Cast CastLike Clip LeakyRelu Elu Selu Celu "
    "ThresholdedRelu Shrink Softplus Softsign Mish Swish Gelu FastGelu BiasGelu QuickGelu BiasAdd IsNaN IsInf "
    "Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh CumSum QuantizeLinear DequantizeLinear "
    "DynamicQuantizeLinear QLinearAdd QLinearMul QLinearSigmoid QLinearLeakyRelu").split())
_NORMS = ("LayerNormalization", "SimplifiedLayerNormalization", "InstanceNormalization", "GroupNormalization",
          "GroupNorm", "RMSNormalization")
_RULES: dict[str, Rule] = {
    **{op: _per_out(1) for op in _ELEMENTWISE},
    **{op: _per_out(5) for op in ("Softmax", "LogSoftmax", "QLinearSoftmax")},
    **{op: _per_out(8) for op in _NORMS},
    "BatchNormalization": _per_out(2),
    "SkipLayerNormalization": _skip_norm, "SkipSimplifiedLayerNormalization": _skip_norm,
    **{op: _per_in for op in ("ArgMax", "ArgMin", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
                              "QLinearGlobalAveragePool")},
    **{op: _pool for op in ("MaxPool", "AveragePool", "LpPool", "QLinearAveragePool")},
    **{op: _matmul() for op in ("MatMul", "MatMulInteger", "MatMulInteger16", "FusedMatMul")},
    "MatMulIntegerToFloat": _matmul(bias_idx=6), "DynamicQuantizeMatMul": _matmul(bias_idx=4),
    "QLinearMatMul": _matmul(0, 3), "MatMulNBits": _matmul_nbits,
    "Gemm": _matmul(bias_idx=2), "FusedGemm": _matmul(bias_idx=2), "QGemm": _matmul(0, 3, bias_idx=6),
    "Conv": _conv(), "NhwcConv": _conv(), "FusedConv": _conv(sum_idx=3), "ConvInteger": _conv(bias_idx=None),
    "QLinearConv": _conv(0, 3, 8), "ConvTranspose": _conv_transpose,
    "Attention": _mha, "MultiHeadAttention": _mha, "Einsum": _einsum,
}
_DOMAIN_RULES: dict[tuple[str, str], Rule] = {
    ("com.microsoft", "Attention"): _ms_attention,
    ("com.microsoft.nchwc", "Conv"): _conv(sum_idx=3),
}
_INT_OPS = frozenset((
    "MatMulInteger MatMulInteger16 QLinearMatMul ConvInteger QLinearConv DynamicQuantizeMatMul "
    "MatMulIntegerToFloat QGemm QLinearAdd QLinearMul QLinearSigmoid QLinearLeakyRelu QLinearSoftmax "
    "QLinearAveragePool QLinearGlobalAveragePool").split())


def _rule(domain: str, op_type: str) -> Rule | None:
    if (domain, op_type) in _DOMAIN_RULES:
        return _DOMAIN_RULES[domain, op_type]
    return _per_in if op_type.startswith("Reduce") else _RULES.get(op_type)


def node_cost(op_type: str, domain: str, attrs: dict[str, Any], inputs: Infos, outputs: Infos,
              name: str = "") -> NodeCost:
    """FLOPs and bytes of one node from its input and output shapes (None: absent or unknown)."""
    domain = "" if domain == "ai.onnx" else domain
    rule = _rule(domain, op_type)
    try:
        flops = rule(attrs, inputs, outputs) if rule else 0
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):
        flops = 0  # a shape or attribute the rule needs is unknown or malformed
    ins = [t for t in inputs if t is not None]
    return NodeCost(
        name=name or op_type, op_type=op_type, domain=domain, flops=int(flops), int_ops=op_type in _INT_OPS,
        weight_bytes=sum(t.nbytes for t in ins if t.is_initializer),
        activation_bytes_in=sum(t.nbytes for t in ins if not t.is_initializer),
        bytes_out=sum(t.nbytes for t in outputs if t is not None),
    )


# ---------------------------------------------------------------- whole graphs

Known = dict[str, tuple[tuple[int, ...], int]]  # tensor name -> (shape, ONNX elem_type)
_SMALL = 4096  # initializers up to this many elements keep their values, for data propagation
_MAX_ROUNDS = 8


def graph_costs(model: onnx.ModelProto | str | Path, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, NodeCost]:
    """FLOPs and bytes of every top-level node, keyed by node name (unnamed: f"{op_type}_{index}"),
    with the graph inputs fixed to ``input_shapes``. External weights need not be loaded."""
    proto = _load(model)
    g = proto.graph
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    known = _infer(_skeleton(proto, input_shapes))
    costs: dict[str, NodeCost] = {}
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        name = f"{name}_{i}" if name in costs else name
        ins = [_info(n, known, n in constants) for n in node.input]
        outs = [_info(n, known, False) for n in node.output]
        costs[name] = node_cost(node.op_type, node.domain, _attrs(node), ins, outs, name)
    return costs


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise HastenError(f"no ONNX model at {model}", hint="pass the path of an existing .onnx file")
        return onnx.load(str(model), load_external_data=False)
    raise HastenError(f"expected an onnx.ModelProto or a path to a .onnx file, got {type(model).__name__}")


def _info(name: str, known: Known, constant: bool) -> TensorInfo | None:
    if not name or name not in known:
        return None
    shape, elem_type = known[name]
    return TensorInfo(shape, _np_name(elem_type), constant)


def _np_name(elem_type: int) -> str:
    from onnx import TensorProto, helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return TensorProto.DataType.Name(elem_type).lower()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    def plain(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = [plain(x) for x in v] if isinstance(v, list) else plain(v)
    return out


def _skeleton(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy for shape inference only: fixed input shapes; big or external weights become bare inputs."""
    import onnx
    from onnx import helper

    g = proto.graph
    skel = onnx.ModelProto(ir_version=proto.ir_version, opset_import=proto.opset_import, functions=proto.functions)
    sg = skel.graph
    sg.name = g.name
    for src, dst in ((g.node, sg.node), (g.input, sg.input), (g.output, sg.output), (g.value_info, sg.value_info)):
        dst.extend(src)
    declared = {i.name for i in g.input}
    for t in g.initializer:
        if math.prod(t.dims) <= _SMALL and t.data_location != onnx.TensorProto.EXTERNAL:
            sg.initializer.append(t)
        elif t.name not in declared:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    _fix_inputs(sg, input_shapes, {t.name for t in g.initializer})
    return skel


def _fix_inputs(graph: onnx.GraphProto, input_shapes: dict[str, tuple[int, ...]], initializers: set[str]) -> None:
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    if unknown := sorted(set(input_shapes) - set(inputs)):
        raise HastenError(f"input_shapes names {unknown}, which the model does not take as inputs",
                          hint=f"the model's inputs are {sorted(inputs)}")
    for name, shape in input_shapes.items():
        dims = inputs[name].type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if declared and (len(declared) != len(shape) or any(d not in (None, s) for d, s in zip(declared, shape))):
            raise HastenError(f"input '{name}' is declared {declared}, but input_shapes gives {tuple(shape)}",
                              hint="give one size per axis, matching the fixed ones")
        del dims[:]
        for s in shape:
            dims.add().dim_value = int(s)


def _read_known(value_infos: Sequence[onnx.ValueInfoProto]) -> Known:
    """Tensors among ``value_infos`` whose shape is fully concrete."""
    known: Known = {}
    for vi in value_infos:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and tt.elem_type and \
                all(d.HasField("dim_value") for d in tt.shape.dim):
            known[vi.name] = (tuple(d.dim_value for d in tt.shape.dim), tt.elem_type)
    return known


def _pending(graph: onnx.GraphProto, known: Known) -> bool:
    return any(o and o not in known for n in graph.node for o in n.output)


def _infer(skel: onnx.ModelProto) -> Known:
    """Concrete shapes of every tensor that ONNX, our contrib rules and ORT's symbolic inference find."""
    g = skel.graph
    known: Known = {t.name: (tuple(t.dims), t.data_type) for t in g.initializer}
    known.update(_read_known([*g.input, *g.value_info, *g.output]))
    for _ in range(_MAX_ROUNDS):
        before = len(known)
        known.update(_onnx_infer(skel, known))
        _propagate(g, known)
        if _pending(g, known):
            known.update(_symbolic_infer(skel, known))
        if not _pending(g, known) or len(known) == before:
            break
    return known


def _onnx_infer(skel: onnx.ModelProto, known: Known) -> Known:
    import onnx
    from onnx import helper

    g = skel.graph
    fixed = {i.name for i in g.input} | {t.name for t in g.initializer}
    del g.value_info[:]
    g.value_info.extend(helper.make_tensor_value_info(n, t, s) for n, (s, t) in known.items() if n not in fixed)
    try:
        out = onnx.shape_inference.infer_shapes(skel, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a model ONNX cannot infer still gets the other passes
        return {}
    return _read_known([*out.graph.input, *out.graph.value_info, *out.graph.output])


def _symbolic_infer(skel: onnx.ModelProto, known: Known) -> Known:
    """ONNX Runtime's symbolic shape inference on the part of the graph still unknown."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return {}
    try:
        sym = SymbolicShapeInference(2**31 - 1, True, False, 0)
        # Its public infer_shapes() saves a model into the working directory when it stops early.
        sym._preprocess(_frontier(skel, known))
        for _ in range(64):
            if not sym.run_:
                break
            sym._infer_impl()
        return _read_known(list(sym.known_vi_.values()))
    except Exception:  # noqa: BLE001 - it asserts on graphs it cannot handle; the other passes still count
        return {}


def _frontier(skel: onnx.ModelProto, known: Known) -> onnx.ModelProto:
    """The nodes with unknown outputs, reading every known tensor as a graph input."""
    import onnx
    from onnx import helper

    g = skel.graph
    inits = {t.name for t in g.initializer}
    declared = {i.name: i for i in g.input}
    available = set(known) | set(declared) | inits | {""}
    nodes, needed = [], {}
    for n in g.node:
        if any(o and o not in known for o in n.output) and all(i in available for i in n.input):
            nodes.append(n)
            needed.update({i: None for i in n.input if i and i not in inits})
            available.update(n.output)
    produced = {o for n in nodes for o in n.output}
    inputs = [helper.make_tensor_value_info(i, known[i][1], known[i][0]) if i in known else declared[i]
              for i in needed if i not in produced]
    graph = helper.make_graph(nodes, g.name, inputs, [onnx.ValueInfoProto(name=o) for o in produced if o],
                              [t for t in g.initializer if any(t.name in n.input for n in nodes)])
    return onnx.ModelProto(ir_version=skel.ir_version, opset_import=skel.opset_import, graph=graph,
                           functions=skel.functions)


# Output-0 shape rules for ops ONNX's own inference does not know (ONNX Runtime contrib ops).
Shapes = list["tuple[int, ...] | None"]
_SHAPE_RULES: dict[str, Callable[[dict[str, Any], Shapes], tuple[int, ...]]] = {
    **{op: lambda at, s: _matmul_out(s[0], s[1], at)[1]
       for op in ("FusedMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FusedGemm")},
    "QGemm": lambda at, s: _matmul_out(s[0], s[3], at)[1],
    "MatMulNBits": lambda at, s: (*s[0][:-1], at["N"]),
    **{op: lambda at, s: _conv_out(s[0], s[1][2:], at, s[1][0]) for op in ("Conv", "FusedConv")},
    **{op: lambda at, s: _conv_out(s[0], at["kernel_shape"], at, s[0][1]) for op in ("MaxPool", "AveragePool")},
    **{op: lambda at, s: (*s[0][:2], *[1] * (len(s[0]) - 2)) for op in ("GlobalMaxPool", "GlobalAveragePool")},
    "ReorderOutput": lambda at, s: (s[0][0], *s[0][2:], at["channels"]) if at.get("channels_last")
    else (s[0][0], at["channels"], *s[0][2:]),
}
_DTYPE_FROM = {"MatMulIntegerToFloat": (2,), "QGemm": (8, 1)}  # input whose dtype the output takes
_KEEP_SHAPE = _ELEMENTWISE | set(_NORMS) | {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
                                             "Softmax", "BatchNormalization", "ReorderInput", "Identity", "Dropout"}


def _propagate(graph: onnx.GraphProto, known: Known) -> None:
    """Last resort, in graph order: contrib-op rules, and elementwise ops keep their inputs' shape."""
    for node in graph.node:
        if not node.output or not node.output[0] or node.output[0] in known:
            continue
        shapes = [known[i][0] if i in known else None for i in node.input]
        try:
            shape = _guess_shape(node.op_type, _attrs(node), shapes)
            dtype_idx = next(i for i in _DTYPE_FROM.get(node.op_type, (0,)) if shapes[i] is not None)
        except (ValueError, IndexError, KeyError, TypeError, StopIteration):
            continue
        if shape is not None:
            elem_type = _attrs(node)["to"] if node.op_type == "Cast" else known[node.input[dtype_idx]][1]
            known[node.output[0]] = (shape, elem_type)


def _guess_shape(op_type: str, attrs: dict[str, Any], shapes: Shapes) -> tuple[int, ...] | None:
    if op_type in _SHAPE_RULES:
        return tuple(_SHAPE_RULES[op_type](attrs, shapes))
    if op_type in _KEEP_SHAPE and shapes and shapes[0] is not None:
        return _broadcast(*[s for s in shapes if s is not None])
    return None
