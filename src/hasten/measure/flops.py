"""Per-node FLOPs and bytes moved of an ONNX graph, for a roofline analysis.

`graph_costs(model, input_shapes)` fixes the graph inputs to concrete shapes, infers every
intermediate shape (ONNX shape inference with data propagation and our shape rules for ONNX Runtime
contrib ops, in rounds; ONNX Runtime's symbolic shape inference when those stall) and returns one
`NodeCost` per top-level node. `node_cost` is the pure function on shapes underneath.

FLOPs (a multiply-add is 2; integer/quantized ops count integer ops there and set `int_ops`):
- MatMul, MatMulInteger, QLinearMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul, FusedMatMul
  (trans/transBatch attributes honoured): 2*M*N*K*prod(broadcast batch dims), 1-D operands per
  numpy. MatMulNBits: 2*M*N*K. Gemm, FusedGemm, QGemm: 2*M*N*K (transA/transB), + M*N for C.
- Conv, FusedConv, ConvInteger, QLinearConv, NhwcConv, nchwc Conv: 2*N*C_out*prod(out spatial)*
  (C_in/group)*prod(kernel). ConvTranspose: 2*N*C_in*prod(in spatial)*(C_out/group)*prod(kernel).
  Bias, a fused Sum input and a fused activation (Fused*, nchwc) add 1 per output element each.
- Elementwise binary and unary ops, Cast, Clip, the Gelu family, (De)QuantizeLinear, QLinearAdd/Mul:
  1 per output element; transcendental ops (Exp, Erf, Tanh...) are not weighted more.
- Softmax/LogSoftmax 5 per element; LayerNormalization, SimplifiedLayerNormalization,
  Instance/GroupNormalization 8; SkipLayerNormalization 9 (+1 with bias); BatchNormalization 2.
  Reduce*, ArgMax/ArgMin, Global*Pool: 1 per input element. MaxPool/AveragePool/LpPool: output
  elements * kernel size. Einsum: 2 * product of the sizes of all its indices (no ellipsis).
- Attention (com.microsoft): QKV projection 2*B*S*D_in*D_qkv (+ bias), Q.K^T 2*B*S*L*D_q,
  softmax 5*B*heads*S*L, .V 2*B*S*L*D_v, where L = S + past length. MultiHeadAttention
  (com.microsoft) and Attention (ai.onnx): the same without projection; L from the key (no past).
- Data movement (Reshape, Transpose, Gather, Concat, Slice, Pad, Resize...) and any other op: 0.

Bytes: elements x dtype size (int4: half a byte; unknown dtypes: 4); every input and output is
counted, as if nothing stayed in cache. Initializer and Constant inputs are weights, the rest
activations. Tensors whose shape stays unknown count 0 bytes, and rules that need them give 0
FLOPs. Subgraphs (If/Loop/Scan bodies) are not entered.
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

_BITS = {"bool": 8, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "float16": 16, "bfloat16": 16, "int32": 32,
         "uint32": 32, "float32": 32, "int64": 64, "uint64": 64, "float64": 64, "complex64": 64, "complex128": 128}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of known shape: its numpy dtype name, and whether it is a constant (initializer)."""

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


def _dtype_bits(dtype: str) -> int:
    """Bits per element: float8 and 4-bit types by name prefix, unknown dtypes as 32."""
    if dtype.startswith(("float8", "int4", "uint4", "float4")):
        return 8 if dtype.startswith("float8") else 4
    return _BITS.get(dtype, 32)


Infos = Sequence["TensorInfo | None"]
Rule = Callable[[dict[str, Any], Infos, Infos], int]


def _has(infos: Infos, i: int | None) -> bool:
    return i is not None and i < len(infos) and infos[i] is not None


def _shape(infos: Infos, i: int) -> tuple[int, ...]:
    if not _has(infos, i):
        raise ValueError(f"shape of tensor {i} is unknown")
    return infos[i].shape  # type: ignore[union-attr]


def _numel(infos: Infos, i: int) -> int:
    return math.prod(_shape(infos, i))


def _out_numel(ins: Infos, outs: Infos) -> int:
    """Elements of output 0, or of the inputs broadcast together when it is unknown."""
    if _has(outs, 0):
        return _numel(outs, 0)
    shapes = [t.shape for t in ins if t is not None]
    return math.prod(np.broadcast_shapes(*shapes)) if shapes else 0


def _per_out(k: int) -> Rule:
    return lambda attrs, ins, outs: k * _out_numel(ins, outs)


def _transposed(s: tuple[int, ...], attrs: dict[str, Any], which: str) -> tuple[int, ...]:
    """A Gemm/FusedMatMul operand's shape after its transBatch and trans attributes."""
    if attrs.get(f"transBatch{which}") and len(s) > 2:
        s = (*s[1:-1], s[0], s[-1])
    if attrs.get(f"trans{which}") and len(s) > 1:
        s = (*s[:-2], s[-1], s[-2])
    return s


def _matmul_out(a: tuple[int, ...], b: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, tuple[int, ...]]:
    """(K, output shape) of a numpy-style matmul, after Gemm/FusedMatMul transposes."""
    a, b = _transposed(a, attrs, "A"), _transposed(b, attrs, "B")
    a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    return a2[-1], batch + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())


def _matmul(a_idx: int = 0, b_idx: int = 1, bias_idx: int | None = None) -> Rule:
    def rule(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
        k, out = _matmul_out(_shape(ins, a_idx), _shape(ins, b_idx), attrs)
        return (2 * k + _has(ins, bias_idx) + bool(attrs.get("activation"))) * math.prod(out)
    return rule


def _conv_out(x: tuple[int, ...], kernel: Sequence[int], attrs: dict[str, Any], channels: int) -> tuple[int, ...]:
    """NCHW output shape of a convolution or pooling window over ``x``."""
    nd = len(x) - 2
    kernel = attrs.get("kernel_shape") or kernel
    strides, dil = attrs.get("strides") or [1] * nd, attrs.get("dilations") or [1] * nd
    pads, auto = attrs.get("pads") or [0] * (2 * nd), attrs.get("auto_pad", "NOTSET")
    out = []
    for i in range(nd):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-x[2 + i] // strides[i]))
        else:
            padded = x[2 + i] + (0 if auto == "VALID" else pads[i] + pads[i + nd])
            out.append((padded - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1)
    return (x[0], channels, *out)


def _conv(x_idx: int = 0, w_idx: int = 1, bias_idx: int | None = 2, sum_idx: int | None = None) -> Rule:
    def rule(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
        w = _shape(ins, w_idx)
        out = _shape(outs, 0) if _has(outs, 0) else _conv_out(_shape(ins, x_idx), w[2:], attrs, w[0])
        extra = _has(ins, bias_idx) + _has(ins, sum_idx) + bool(attrs.get("activation"))
        return (2 * math.prod(w[1:]) + extra) * math.prod(out)
    return rule


def _attn_core(rows: int, heads: int, kv_len: int, q_hidden: int, v_hidden: int) -> int:
    """Q.K^T, softmax and .V, for ``rows`` = batch * query length."""
    return 2 * rows * kv_len * (q_hidden + v_hidden) + 5 * rows * heads * kv_len


def _ms_attention(attrs: dict[str, Any], ins: Infos, outs: Infos) -> int:
    x, w = _shape(ins, 0), _shape(ins, 1)
    rows, sizes = math.prod(x[:-1]), attrs.get("qkv_hidden_sizes") or [w[-1] // 3] * 3
    kv_len = x[-2] + (_shape(ins, 4)[3] if _has(ins, 4) else 0)  # past: (2, B, heads, past, head size)
    projection = (2 * x[-1] + _has(ins, 2)) * rows * w[-1]
    return projection + _attn_core(rows, attrs.get("num_heads", 1), kv_len, sizes[0], sizes[2])


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
        raise ValueError("ellipsis is not counted")
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
_SKIP_NORMS = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
_PER_INPUT = ("ArgMax ArgMin GlobalAveragePool GlobalMaxPool GlobalLpPool QLinearGlobalAveragePool ReduceSum ReduceMean "
              "ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare").split()
_RULES: dict[str, Rule] = {
    **{op: _per_out(1) for op in _ELEMENTWISE},
    **{op: _per_out(5) for op in ("Softmax", "LogSoftmax", "QLinearSoftmax")},
    **{op: _per_out(8) for op in _NORMS},
    **{op: lambda a, i, o: (9 + _has(i, 4)) * _numel(i, 0) for op in _SKIP_NORMS},
    "BatchNormalization": _per_out(2),
    **{op: lambda a, i, o: _numel(i, 0) for op in _PER_INPUT},
    **{op: lambda a, i, o: _out_numel(i, o) * math.prod(a["kernel_shape"])
       for op in ("MaxPool", "AveragePool", "LpPool", "QLinearAveragePool")},
    **{op: _matmul() for op in ("MatMul", "MatMulInteger", "MatMulInteger16", "FusedMatMul")},
    "MatMulIntegerToFloat": _matmul(bias_idx=6), "DynamicQuantizeMatMul": _matmul(bias_idx=4),
    "QLinearMatMul": _matmul(0, 3), "MatMulNBits": lambda a, i, o: 2 * _numel(i, 0) * a["N"],
    "Gemm": _matmul(bias_idx=2), "FusedGemm": _matmul(bias_idx=2), "QGemm": _matmul(0, 3, bias_idx=6),
    "Conv": _conv(), "NhwcConv": _conv(), "FusedConv": _conv(sum_idx=3), "ConvInteger": _conv(bias_idx=None),
    "QLinearConv": _conv(0, 3, 8),
    "ConvTranspose": lambda a, i, o: (2 * _numel(i, 0) * math.prod(_shape(i, 1)[1:])
                                      + (_numel(o, 0) if _has(i, 2) else 0)),
    "Attention": _mha, "MultiHeadAttention": _mha, "Einsum": _einsum,
}
_DOMAIN_RULES: dict[tuple[str, str], Rule] = {
    ("com.microsoft", "Attention"): _ms_attention, ("com.microsoft.nchwc", "Conv"): _conv(sum_idx=3)}
_INT_OPS = frozenset((
    "MatMulInteger MatMulInteger16 QLinearMatMul ConvInteger QLinearConv DynamicQuantizeMatMul "
    "MatMulIntegerToFloat QGemm QLinearAdd QLinearMul QLinearSigmoid QLinearLeakyRelu QLinearSoftmax "
    "QLinearAveragePool QLinearGlobalAveragePool").split())


def node_cost(op_type: str, domain: str, attrs: dict[str, Any], inputs: Infos, outputs: Infos,
              name: str = "") -> NodeCost:
    """FLOPs and bytes of one node from its input and output shapes (None: absent or unknown)."""
    domain = "" if domain == "ai.onnx" else domain
    rule = _DOMAIN_RULES.get((domain, op_type)) or _RULES.get(op_type)
    try:
        flops = rule(attrs, inputs, outputs) if rule else 0
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):
        flops = 0  # a shape or attribute the rule needs is unknown or malformed
    ins = _bytes_read(op_type, inputs, outputs)
    return NodeCost(name or op_type, op_type, domain, int(flops), op_type in _INT_OPS,
                    weight_bytes=sum(t.nbytes for t in ins if t.is_initializer),
                    activation_bytes_in=sum(t.nbytes for t in ins if not t.is_initializer),
                    bytes_out=sum(t.nbytes for t in outputs if t is not None))


# Ops that read only their inputs' shapes, never the data.
_METADATA_OPS = frozenset({"Shape", "Size"})


def _bytes_read(op_type: str, inputs: Infos, outputs: Infos) -> list[TensorInfo]:
    """The inputs as far as the op reads them: Shape/Size read no data, and Gather reads only
    the gathered rows of its data input (an embedding lookup does not stream the whole table)."""
    ins = [t for t in inputs if t is not None]
    if op_type in _METADATA_OPS:
        return []
    if op_type in ("Gather", "GatherElements", "GatherND") and inputs and inputs[0] is not None and outputs and outputs[0] is not None:
        data, out = inputs[0], outputs[0]
        rows = TensorInfo(out.shape, data.dtype, data.is_initializer)
        return [rows] + [t for t in inputs[1:] if t is not None]
    return ins


Known = dict[str, tuple[tuple[int, ...], int]]  # tensor name -> (shape, ONNX elem_type)
_SMALL = 4096  # initializers up to this many elements keep their values, for data propagation


def graph_costs(model: onnx.ModelProto | str | Path, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, NodeCost]:
    """FLOPs and bytes of every top-level node, keyed by node name (unnamed: f"{op_type}_{index}"),
    with the graph inputs fixed to ``input_shapes``. External weights need not be loaded."""
    import onnx

    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise HastenError(f"no ONNX model at {model}", hint="pass the path of an existing .onnx file")
        model = onnx.load(str(model), load_external_data=False)
    if not isinstance(model, onnx.ModelProto):
        raise HastenError(f"expected an onnx.ModelProto or a path to a .onnx file, got {type(model).__name__}")
    g = model.graph
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    known = _infer(_skeleton(model, input_shapes))
    costs: dict[str, NodeCost] = {}
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        name = f"{name}_{i}" if name in costs else name
        ins = [_info(n, known, n in constants) for n in node.input]
        outs = [_info(n, known, False) for n in node.output]
        costs[name] = node_cost(node.op_type, node.domain, _attrs(node), ins, outs, name)
    return costs


def _info(name: str, known: Known, constant: bool) -> TensorInfo | None:
    from onnx import TensorProto, helper

    if name not in known:
        return None
    shape, elem_type = known[name]
    try:
        dtype = helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = TensorProto.DataType.Name(elem_type).lower()
    return TensorInfo(shape, dtype, constant)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    def plain(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else [plain(x) for x in v] if isinstance(v, list) else v

    return {a.name: plain(helper.get_attribute_value(a)) for a in node.attribute}


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
                              hint="give one size per axis, equal to the fixed ones")
        del dims[:]
        for s in shape:
            dims.add().dim_value = int(s)


def _read_known(value_infos: Sequence[onnx.ValueInfoProto]) -> Known:
    """The tensors among ``value_infos`` whose shape is fully concrete."""
    known: Known = {}
    for vi in value_infos:
        tt = vi.type.tensor_type
        if tt.elem_type and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            known[vi.name] = (tuple(d.dim_value for d in tt.shape.dim), tt.elem_type)
    return known


def _pending(graph: onnx.GraphProto, known: Known) -> bool:
    return any(o and o not in known for n in graph.node for o in n.output)


def _infer(skel: onnx.ModelProto) -> Known:
    """Concrete shapes of the tensors that ONNX's inference and our rules find, in rounds while they find
    more (a contrib op we resolve unblocks ONNX downstream); ORT's symbolic inference when they stall."""
    g = skel.graph
    known: Known = {t.name: (tuple(t.dims), t.data_type) for t in g.initializer}
    known.update(_read_known([*g.input, *g.value_info, *g.output]))
    for _ in range(len(g.node) + 1):
        before = len(known)
        known.update(_onnx_infer(skel, known))
        _propagate(g, known)
        if len(known) == before:  # stalled: the slower symbolic inference (it imports sympy) gets a turn
            known.update(_symbolic_infer(skel))
            _propagate(g, known)
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
    except Exception:  # noqa: BLE001 - a graph ONNX cannot infer still gets the other passes
        return {}
    return _read_known([*out.graph.input, *out.graph.value_info, *out.graph.output])


def _symbolic_infer(skel: onnx.ModelProto) -> Known:
    """ONNX Runtime's symbolic shape inference, taught our shape rules for the contrib ops it lacks."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return {}
    sym = SymbolicShapeInference(2**31 - 1, True, False, 0)
    for op in (*_SHAPE_RULES, "ReorderInput"):
        sym.dispatcher_.setdefault(op, lambda node, sym=sym: _symbolic_rule(sym, node))
    try:
        # Not its public infer_shapes(): that saves a model into the working directory when it stops early.
        sym._preprocess(skel)
        for _ in range(64):
            if not sym.run_:
                break
            sym._infer_impl()
    except Exception:  # noqa: BLE001 - it raises on nodes it cannot handle; what it found before still counts
        pass
    return _read_known(list(getattr(sym, "known_vi_", {}).values()))


def _symbolic_rule(sym: Any, node: onnx.NodeProto) -> None:
    from onnx import helper

    out = _guess(node, _read_known([sym.known_vi_[i] for i in node.input if i in sym.known_vi_]))
    if out is not None:
        vi = helper.make_tensor_value_info(node.output[0], out[1], list(out[0]))
        if node.output[0] in sym.known_vi_:
            sym.known_vi_[node.output[0]].CopyFrom(vi)
        else:
            sym.known_vi_[node.output[0]] = vi


# Output-0 shape of ONNX Runtime contrib ops that neither ONNX nor ORT's symbolic inference knows.
Shapes = list["tuple[int, ...] | None"]
_SHAPE_RULES: dict[str, Callable[[dict[str, Any], Shapes], tuple[int, ...]]] = {
    **{op: lambda a, s: _matmul_out(s[0], s[1], a)[1]
       for op in ("FusedMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FusedGemm")},
    "QGemm": lambda a, s: _matmul_out(s[0], s[3], a)[1],
    **{op: lambda a, s: _conv_out(s[0], s[1][2:], a, s[1][0]) for op in ("Conv", "FusedConv")},
    **{op: lambda a, s: _conv_out(s[0], a["kernel_shape"], a, s[0][1]) for op in ("MaxPool", "AveragePool")},
    **{op: lambda a, s: (*s[0][:2], *[1] * (len(s[0]) - 2)) for op in ("GlobalMaxPool", "GlobalAveragePool")},
    "ReorderOutput": lambda a, s: ((s[0][0], *s[0][2:], a["channels"]) if a.get("channels_last")
                                   else (s[0][0], a["channels"], *s[0][2:])),
}
_DTYPE_FROM = {"MatMulIntegerToFloat": (2,), "QGemm": (8, 1)}  # the input whose dtype the output takes
_KEEP_SHAPE = _ELEMENTWISE | {*_NORMS, *_SKIP_NORMS, "Softmax", "BatchNormalization", "ReorderInput", "Identity"}


def _propagate(graph: onnx.GraphProto, known: Known) -> None:
    """Last resort, in graph order: our shape rules for the outputs still unknown."""
    for node in graph.node:
        if node.output and node.output[0] and node.output[0] not in known and (out := _guess(node, known)):
            known[node.output[0]] = out


def _guess(node: onnx.NodeProto, known: Known) -> tuple[tuple[int, ...], int] | None:
    """Output 0's (shape, elem_type) by a contrib-op rule, or as its inputs broadcast for shape-keeping ops."""
    shapes, attrs = [known[i][0] if i in known else None for i in node.input], _attrs(node)
    try:
        if node.op_type in _SHAPE_RULES:
            shape = tuple(_SHAPE_RULES[node.op_type](attrs, shapes))
        elif node.op_type in _KEEP_SHAPE and shapes and shapes[0] is not None:
            shape = tuple(np.broadcast_shapes(*[s for s in shapes if s is not None]))
        else:
            return None
        source = next(i for i in _DTYPE_FROM.get(node.op_type, (0,)) if shapes[i] is not None)
    except (ValueError, IndexError, KeyError, TypeError, StopIteration):
        return None
    return shape, attrs["to"] if node.op_type == "Cast" else known[node.input[source]][1]

