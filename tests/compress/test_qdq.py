"""Putting nodes of a QDQ model back in float by graph surgery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hasten
from hasten.compress import StaticInt8, quantize
from hasten.compress.manifest import node_split
from hasten.compress.qdq import keep_in_float, with_float_nodes
from hasten.core import HastenError
from hasten.models import Dataset

torch = pytest.importorskip("torch")


@pytest.fixture
def models(tmp_path: Path):  # noqa: ANN201
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                 torch.nn.Linear(64, 8)).eval()
    src = hasten.load_model(module, example_input=torch.randn(2, 32), path=tmp_path / "mlp.onnx")
    data = Dataset({"input": np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)})
    return src, quantize(src, StaticInt8(), data, tmp_path / "q.onnx"), data


def _out(path: Path, data: Dataset) -> np.ndarray:
    return hasten.compile(hasten.load_model(path), "ort-cpu").run(data.batch(0, 16))["output"]


def test_one_node_back_in_float(models, tmp_path: Path) -> None:
    src, q, data = models
    changed = keep_in_float(q.path, src.path, ("/2/Gemm",), tmp_path / "k.onnx")
    assert changed == ["/2/Gemm"]
    assert node_split(src.path, tmp_path / "k.onnx") == (["/0/Gemm", "/4/Gemm"], ["/2/Gemm"])


def test_all_nodes_back_in_float_is_close_to_fp32(models, tmp_path: Path) -> None:
    src, q, data = models
    keep_in_float(q.path, src.path, ("/0/Gemm", "/2/Gemm", "/4/Gemm"), tmp_path / "f.onnx")
    ref, fl, qu = _out(src.path, data), _out(tmp_path / "f.onnx", data), _out(q.path, data)
    assert np.abs(fl - ref).max() < 0.5 * np.abs(qu - ref).max()  # only the graph output's Q/DQ remains
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node]
    assert ops.count("Gemm") == 3 and ops.count("QuantizeLinear") <= 1


def test_manifest_follows_the_surgery(models, tmp_path: Path) -> None:
    src, q, _ = models
    m = with_float_nodes(q, src, ("/4/Gemm",), tmp_path / "w.onnx")
    man = m.info.extra["manifest"]
    assert man["float_nodes"] == ["/4/Gemm"] and man["kept_in_float_by_fallback"] == ["/4/Gemm"]
    assert (tmp_path / "w.manifest.json").exists()


def test_unknown_node_is_an_error(models, tmp_path: Path) -> None:
    src, q, _ = models
    with pytest.raises(HastenError, match="not in the quantized graph"):
        keep_in_float(q.path, src.path, ("/9/Gemm",), tmp_path / "x.onnx")
