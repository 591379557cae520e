"""FLOPs and bytes per node match hand-computed values on tiny graphs built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hasten.core import HastenError
from hasten.measure.flops import NodeCost, TensorInfo, graph_costs, node_cost


def _model(nodes: list[Any], inputs: dict[str, tuple[Any, ...]], inits: dict[str, np.ndarray] | None = None,
           opset: int = 17, domains: tuple[str, ...] = ("com.microsoft",)) -> Any:
    """A model over float32 inputs with the given initializers, importing ai.onnx ``opset`` and ``domains``."""
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(k, 1, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(nodes[-1].output[0], 1, None)],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _node(op: str, ins: list[str], outs: list[str], name: str = "", **attrs: Any) -> Any:
    from onnx import helper

    domain = attrs.pop("domain", "")
    return helper.make_node(op, ins, outs, name=name or None, domain=domain, **attrs)


def _t(*shape: int, dtype: str = "float32", init: bool = False) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype, init)


def test_matmul_2d_batched_broadcast_and_1d() -> None:
    assert node_cost("MatMul", "", {}, [_t(4, 8), _t(8, 16)], [_t(4, 16)]).flops == 2 * 4 * 16 * 8
    # batch dims (2, 1) and (3,) broadcast to (2, 3); M=4, K=8, N=5
    batched = node_cost("MatMul", "", {}, [_t(2, 1, 4, 8), _t(3, 8, 5)], [None])
    assert batched.flops == 2 * (2 * 3) * 4 * 5 * 8
    assert node_cost("MatMul", "", {}, [_t(8), _t(8, 5)], [_t(5)]).flops == 2 * 5 * 8
    assert node_cost("MatMul", "", {}, [_t(7, 3, 8), _t(8)], [_t(7, 3)]).flops == 2 * 7 * 3 * 8


def test_gemm_trans_b_with_bias() -> None:
    w = np.ones((16, 8), np.float32)
    model = _model([_node("Gemm", ["a", "w", "c"], ["y"], "gemm", transB=1)], {"a": (4, 8)},
                   {"w": w, "c": np.ones(16, np.float32)})
    cost = graph_costs(model, {"a": (4, 8)})["gemm"]
    assert cost.flops == 2 * 4 * 16 * 8 + 4 * 16
    assert (cost.weight_bytes, cost.activation_bytes_in, cost.bytes_out) == (16 * 8 * 4 + 16 * 4, 4 * 8 * 4, 4 * 16 * 4)
    trans_a = node_cost("Gemm", "", {"transA": 1}, [_t(8, 4), _t(8, 16)], [None])
    assert trans_a.flops == 2 * 4 * 16 * 8


def test_conv_dense_and_depthwise_with_stride_and_padding() -> None:
    dense = _node("Conv", ["x", "w", "b"], ["y"], "dense", strides=[2, 2], pads=[1, 1, 1, 1])
    model = _model([dense], {"x": (1, 3, 8, 8)}, {"w": np.ones((4, 3, 3, 3), np.float32), "b": np.ones(4, np.float32)})
    # out spatial: (8 + 2 - 3) // 2 + 1 = 4
    assert graph_costs(model, {"x": (1, 3, 8, 8)})["dense"].flops == 2 * 4 * 16 * 3 * 9 + 4 * 16
    dw = _node("Conv", ["x", "w"], ["y"], "dw", group=4, pads=[1, 1, 1, 1])
    model = _model([dw], {"x": (2, 4, 8, 8)}, {"w": np.ones((4, 1, 3, 3), np.float32)})
    cost = graph_costs(model, {"x": (2, 4, 8, 8)})["dw"]
    assert cost.flops == 2 * 2 * 4 * 64 * 1 * 9
    assert cost.bytes_out == 2 * 4 * 8 * 8 * 4


def test_attention_chain_per_node() -> None:
    b, h, s, d = 2, 4, 16, 8
    nodes = [_node("MatMul", ["q", "kt"], ["scores"], "qk"), _node("Softmax", ["scores"], ["p"], "softmax", axis=-1),
             _node("MatMul", ["p", "v"], ["y"], "pv")]
    model = _model(nodes, {"q": (b, h, s, d), "kt": (b, h, d, s), "v": (b, h, s, d)})
    costs = graph_costs(model, {"q": (b, h, s, d), "kt": (b, h, d, s), "v": (b, h, s, d)})
    assert [c.flops for c in costs.values()] == [2 * b * h * s * s * d, 5 * b * h * s * s, 2 * b * h * s * d * s]
    assert costs["softmax"].bytes_moved == 2 * b * h * s * s * 4


def test_elementwise_add_broadcast() -> None:
    model = _model([_node("Add", ["x", "bias"], ["y"], "add")], {"x": (2, 3, 4)}, {"bias": np.ones(4, np.float32)})
    cost = graph_costs(model, {"x": (2, 3, 4)})["add"]
    assert cost.flops == 24
    assert (cost.weight_bytes, cost.activation_bytes_in, cost.bytes_out) == (16, 96, 96)


def test_bytes_split_weight_vs_activation_and_intensity() -> None:
    model = _model([_node("MatMul", ["x", "w"], ["y"], "mm")], {"x": (4, 8)}, {"w": np.ones((8, 16), np.float32)})
    cost = graph_costs(model, {"x": (4, 8)})["mm"]
    assert (cost.weight_bytes, cost.activation_bytes_in, cost.bytes_out) == (8 * 16 * 4, 4 * 8 * 4, 4 * 16 * 4)
    assert cost.bytes_moved == 512 + 128 + 256
    assert cost.intensity == pytest.approx(1024 / 896)
    d = cost.to_dict()
    assert d["bytes_moved"] == 896 and d["flops"] == 1024 and d["int_ops"] is False


def test_dtype_sizes_and_integer_ops() -> None:
    cost = node_cost("MatMulInteger", "", {}, [_t(4, 8, dtype="uint8"), _t(8, 16, dtype="int8", init=True)],
                     [_t(4, 16, dtype="int32")])
    assert cost.int_ops and cost.flops == 2 * 4 * 16 * 8
    assert (cost.weight_bytes, cost.activation_bytes_in, cost.bytes_out) == (128, 32, 256)
    sizes = {dt: _t(10, dtype=dt).nbytes for dt in ("bool", "float16", "bfloat16", "int64", "float64", "int4")}
    assert sizes == {"bool": 10, "float16": 20, "bfloat16": 20, "int64": 80, "float64": 80, "int4": 5}
    assert node_cost("Relu", "", {}, [], []) == NodeCost("Relu", "Relu", "", 0, False, 0, 0, 0)


def test_other_counted_ops() -> None:
    x = _t(2, 4, 8, 8)
    assert node_cost("MaxPool", "", {"kernel_shape": [2, 2]}, [x], [_t(2, 4, 4, 4)]).flops == 2 * 4 * 16 * 4
    assert node_cost("GlobalAveragePool", "", {}, [x], [_t(2, 4, 1, 1)]).flops == 2 * 4 * 64
    assert node_cost("BatchNormalization", "", {}, [x], [x]).flops == 2 * 2 * 4 * 64
    assert node_cost("ReduceMean", "", {}, [x], [_t(2, 4, 1, 1)]).flops == 2 * 4 * 64
    assert node_cost("LayerNormalization", "", {}, [_t(3, 16)], [_t(3, 16)]).flops == 8 * 48
    skip = [_t(3, 16), _t(3, 16), _t(16), _t(16), _t(16)]
    assert node_cost("SkipLayerNormalization", "com.microsoft", {}, skip, [_t(3, 16)]).flops == 10 * 48
    # ConvTranspose: every input pixel scatters C_out/group * kernel MACs, plus the bias per output
    convt = node_cost("ConvTranspose", "", {}, [_t(1, 4, 5, 5), _t(4, 2, 3, 3), _t(2)], [_t(1, 2, 7, 7)])
    assert convt.flops == 2 * 4 * 25 * 2 * 9 + 2 * 49
    assert node_cost("Einsum", "", {"equation": "bij,bjk->bik"}, [_t(2, 3, 4), _t(2, 4, 5)], [None]).flops == 240
    assert node_cost("Reshape", "", {}, [_t(6, 4), _t(2, dtype="int64")], [_t(4, 6)]).flops == 0


def test_symbolic_input_dims_fixed_by_input_shapes() -> None:
    nodes = [_node("MatMul", ["x", "w"], ["h"], "mm"), _node("Reshape", ["h", "shape"], ["r"], "reshape"),
             _node("Relu", ["r"], ["y"], "relu")]
    inits = {"w": np.ones((8, 16), np.float32), "shape": np.array([-1, 16], np.int64)}
    model = _model(nodes, {"x": ("batch", "seq", 8)}, inits, opset=18)
    costs = graph_costs(model, {"x": (2, 5, 8)})
    assert costs["mm"].flops == 2 * 2 * 5 * 16 * 8
    assert costs["reshape"].flops == 0 and costs["reshape"].bytes_out == 10 * 16 * 4
    assert costs["relu"].flops == 10 * 16
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the caller's model is untouched


def test_reduce_in_opset_18_and_unnamed_nodes() -> None:
    nodes = [_node("ReduceMean", ["x", "axes"], ["m"]), _node("Sqrt", ["m"], ["y"])]
    model = _model(nodes, {"x": (3, 7)}, {"axes": np.array([1], np.int64)}, opset=18)
    costs = graph_costs(model, {"x": (3, 7)})
    assert list(costs) == ["ReduceMean_0", "Sqrt_1"]
    assert costs["ReduceMean_0"].flops == 21 and costs["Sqrt_1"].flops == 3


def test_contrib_fused_matmul_then_standard_ops() -> None:
    nodes = [_node("FusedMatMul", ["a", "b"], ["m"], "fmm", domain="com.microsoft", transB=1),
             _node("Gelu", ["m"], ["g"], "gelu", domain="com.microsoft"),
             _node("Relu", ["g"], ["y"], "relu")]
    costs = graph_costs(_model(nodes, {"a": (2, 3, 4), "b": (2, 5, 4)}), {"a": (2, 3, 4), "b": (2, 5, 4)})
    assert costs["fmm"].flops == 2 * 2 * 3 * 5 * 4 and costs["fmm"].bytes_out == 2 * 3 * 5 * 4
    assert costs["gelu"].flops == 30 and costs["relu"].flops == 30


def test_contrib_attention_via_symbolic_inference() -> None:
    b, s, hidden, heads = 2, 4, 8, 2
    inits = {"w": np.ones((hidden, 3 * hidden), np.float32), "bias": np.ones(3 * hidden, np.float32)}
    nodes = [_node("Attention", ["x", "w", "bias"], ["a"], "attn", domain="com.microsoft", num_heads=heads),
             _node("Relu", ["a"], ["y"], "relu")]
    costs = graph_costs(_model(nodes, {"x": (b, s, hidden)}, inits), {"x": (b, s, hidden)})
    rows = b * s
    projection = 2 * rows * hidden * 3 * hidden + rows * 3 * hidden
    core = 2 * rows * s * hidden * 2 + 5 * rows * heads * s
    assert costs["attn"].flops == projection + core
    assert costs["attn"].bytes_out == b * s * hidden * 4 and costs["relu"].flops == b * s * hidden


def test_onnxruntime_optimised_model_gets_fused_gemm(tmp_path: Path) -> None:
    import onnxruntime as ort

    nodes = [_node("MatMul", ["x", "w"], ["xw"]), _node("Add", ["xw", "b"], ["h"]), _node("Relu", ["h"], ["y"])]
    model = _model(nodes, {"x": ("batch", 8)}, {"w": np.ones((8, 16), np.float32), "b": np.ones(16, np.float32)})
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (cost,) = graph_costs(tmp_path / "opt.onnx", {"x": (4, 8)}).values()
    assert (cost.op_type, cost.domain) == ("FusedGemm", "com.microsoft")
    assert cost.flops == 2 * 4 * 16 * 8 + 4 * 16 + 4 * 16  # + bias + fused Relu
    assert cost.bytes_out == 4 * 16 * 4


def test_nchwc_conv_shapes_from_our_rules() -> None:
    nodes = [_node("Conv", ["x", "w", "b"], ["c"], "conv", domain="com.microsoft.nchwc", pads=[1, 1, 1, 1],
                   activation="Relu"),
             _node("ReorderOutput", ["c"], ["y"], "reorder", domain="com.microsoft.nchwc", channels=16)]
    inits = {"w": np.ones((16, 8, 3, 3), np.float32), "b": np.ones(16, np.float32)}
    model = _model(nodes, {"x": (1, 8, 10, 10)}, inits, domains=("com.microsoft.nchwc",))
    costs = graph_costs(model, {"x": (1, 8, 10, 10)})
    assert costs["conv"].flops == 2 * 16 * 100 * 8 * 9 + 2 * 16 * 100
    assert costs["reorder"].bytes_out == 16 * 100 * 4


def test_unknown_op_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ORT's symbolic inference stops at this op; it must not save a model here
    nodes = [_node("Frobnicate", ["x"], ["f"], "frob", domain="example.custom"), _node("Relu", ["f"], ["y"], "relu")]
    model = _model(nodes, {"x": (2, 3)}, domains=("example.custom",))
    costs = graph_costs(model, {"x": (2, 3)})
    assert costs["frob"].flops == 0 and costs["frob"].activation_bytes_in == 24 and costs["frob"].bytes_out == 0
    assert costs["relu"].flops == 0
    assert node_cost("Frobnicate", "x", {}, [None, _t(3)], [None]).bytes_moved == 12
    assert list(tmp_path.iterdir()) == []


def test_external_data_is_not_loaded(tmp_path: Path) -> None:
    import onnx

    model = _model([_node("MatMul", ["x", "w"], ["y"], "mm")], {"x": ("n", 64)}, {"w": np.ones((64, 128), np.float32)})
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()  # the weights are never read
    cost = graph_costs(tmp_path / "m.onnx", {"x": (3, 64)})["mm"]
    assert cost.flops == 2 * 3 * 128 * 64 and cost.weight_bytes == 64 * 128 * 4


def test_bad_input_shapes_say_what_the_model_takes() -> None:
    model = _model([_node("Relu", ["x"], ["y"])], {"x": (2, 3)})
    with pytest.raises(HastenError, match="does not take"):
        graph_costs(model, {"z": (2, 3)})
    with pytest.raises(HastenError, match="declared"):
        graph_costs(model, {"x": (2, 3, 4)})


def test_gather_reads_only_the_gathered_rows_and_shape_reads_no_data() -> None:
    from hasten.measure.flops import TensorInfo, node_cost

    table = TensorInfo((30522, 384), "float32", True)
    ids = TensorInfo((8, 128), "int64", False)
    out = TensorInfo((8, 128, 384), "float32", False)
    c = node_cost("Gather", "", {}, [table, ids], [out])
    assert c.weight_bytes == 8 * 128 * 384 * 4 and c.activation_bytes_in == 8 * 128 * 8
    s = node_cost("Shape", "", {}, [out], [TensorInfo((3,), "int64", False)])
    assert s.weight_bytes == 0 and s.activation_bytes_in == 0 and s.bytes_out == 24
