"""Model repositories: hasten's config.yaml and Triton's config.pbtxt, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hasten.core import HastenError
from hasten.serve.repository import check_name, load_repository
from tests.conftest import make_linear_onnx


def _model(root: Path, name: str, config: str, file: str = "config.yaml", versions: tuple[int, ...] = (1,)) -> Path:
    folder = root / name
    for v in versions:
        (folder / str(v)).mkdir(parents=True)
        make_linear_onnx(folder / str(v) / "model.onnx")
    (folder / file).write_text(config)
    return folder


def test_a_hasten_repository_is_read_with_its_batching_settings(tmp_path: Path) -> None:
    _model(tmp_path, "lin", "max_batch_size: 16\ninstances: 2\ndynamic_batching:\n  max_queue_delay_ms: 2.5\n"
                            "  preferred_batch_sizes: [4, 8]\n  max_queue_size: 100\n  timeout_ms: 50\n",
           versions=(1, 3))
    models = load_repository(tmp_path)
    entry = models["lin"]
    assert entry.latest == 3 and entry.path().name == "model.onnx" and entry.path(1).parent.name == "1"
    cfg = entry.config.batching()
    assert cfg.max_batch_size == 16 and cfg.instances == 2 and cfg.preferred_batch_sizes == (4, 8)
    assert cfg.max_queue_delay_s == pytest.approx(0.0025) and cfg.queue_policy.max_queue_size == 100
    assert cfg.queue_policy.default_timeout_s == pytest.approx(0.05) and cfg.combine
    with pytest.raises(HastenError, match="has no version 2"):
        entry.path(2)


def test_a_triton_repository_of_onnx_models_is_accepted(tmp_path: Path) -> None:
    _model(tmp_path, "tri", 'name: "tri"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n'
                            'input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]\n'
                            'output [{ name: "y" data_type: TYPE_FP32 dims: [3] }]\n'
                            'dynamic_batching { preferred_batch_size: [16] max_queue_delay_microseconds: 500 '
                            'default_queue_policy { max_queue_size: 7 } }\n'
                            'instance_group [{ count: 2 kind: KIND_CPU }]\n', file="config.pbtxt")
    entry = load_repository(tmp_path)["tri"]
    cfg = entry.config.batching()
    assert entry.source == "triton" and cfg.max_batch_size == 32 and cfg.instances == 2
    assert cfg.preferred_batch_sizes == (16,) and cfg.max_queue_delay_s == pytest.approx(0.0005)
    assert cfg.queue_policy.max_queue_size == 7


def test_without_dynamic_batching_each_request_runs_alone(tmp_path: Path) -> None:
    _model(tmp_path, "lin", "max_batch_size: 8\n")
    assert not load_repository(tmp_path)["lin"].config.batching().combine


@pytest.mark.parametrize("config, file, message", [
    ("max_batch_size: -1\n", "config.yaml", "max_batch_size"),
    ("dynamic_batching:\n  max_queue_delay_ms: -2\n", "config.yaml", "dynamic_batching.max_queue_delay_ms"),
    ("dynamic_batching:\n  window: 2\n", "config.yaml", "dynamic_batching.window: Extra inputs are not permitted"),
    ("max_batch_size: 4\ndynamic_batching:\n  preferred_batch_sizes: [8]\n", "config.yaml", "outside 1..max_batch_size"),
    ("- a list\n", "config.yaml", "must hold a mapping"),
    ("max_batch_size: [\n", "config.yaml", "not valid YAML"),
    ("!!python/object/apply:os.system ['echo hi']\n", "config.yaml", "not valid YAML"),
    ('platform: "tensorflow_savedmodel"\n', "config.pbtxt", "is not served by hasten"),
    ("max_batch_size: eight\n", "config.pbtxt", "not a valid Triton model config"),
    ("dynamic_quant_group: 64\n", "config.yaml", "on an openvino backend .got 64 on ort-cpu"),
    ("backend: openvino\ndynamic_quant_group: 8\n", "config.yaml", "from 16 to 4096"),
])
def test_bad_configs_name_the_file_and_the_field(tmp_path: Path, config: str, file: str, message: str) -> None:
    folder = _model(tmp_path, "m", config, file=file)
    with pytest.raises(HastenError, match=message) as info:
        load_repository(tmp_path)
    assert str(folder / file) in str(info.value) or "not served" in str(info.value)


def test_layout_problems_and_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HastenError, match="not found"):
        load_repository(tmp_path / "nope")
    with pytest.raises(HastenError, match="holds no model folders"):
        load_repository(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("max_batch_size: 1\n")
    with pytest.raises(HastenError, match="no version folder"):
        load_repository(tmp_path)
    for bad in ("../etc", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(HastenError, match="invalid model name"):
            check_name(bad)
    assert check_name("minilm-v2.1") == "minilm-v2.1"


def test_a_model_with_a_fixed_batch_dimension_is_served_without_batching_or_refused_clearly(tmp_path: Path) -> None:
    import asyncio

    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from hasten.serve.server import ModelServer
    from hasten.serve.tensors import InferRequest

    (tmp_path / "fixed" / "1").mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "fixed" / "1" / "model.onnx"))
    (tmp_path / "fixed" / "config.yaml").write_text("max_batch_size: 8\n")
    with pytest.raises(HastenError, match="(?s)fixed batch dimension .* set max_batch_size: 0"):
        asyncio.run(ModelServer(load_repository(tmp_path)).start())
    (tmp_path / "fixed" / "config.yaml").write_text("max_batch_size: 0\n")

    async def main() -> np.ndarray:
        server = ModelServer(load_repository(tmp_path))
        await server.start()
        _, outputs, _ = await server.infer("fixed", None, InferRequest({"x": np.array([[-1.0, 0.0, 2.0]], np.float32)}))
        await server.stop()
        return outputs["y"]

    assert asyncio.run(main()).tolist() == [[0.0, 0.0, 2.0]]


def test_single_model_flags_become_its_config_including_the_slo(tmp_path: Path) -> None:
    from hasten.cli_serve import _serve_entries

    make_linear_onnx(tmp_path / "lin.onnx")
    entries = _serve_entries(str(tmp_path / "lin.onnx"), "ort-cpu", 16, 1.5, 64, 1, 1, slo_p99_ms=40.0)
    cfg = entries["lin"].config
    assert cfg.max_batch_size == 16 and cfg.dynamic_batching.max_queue_delay_ms == 1.5
    assert cfg.dynamic_batching.max_queue_size == 64 and cfg.dynamic_batching.slo_p99_ms == 40.0
    with pytest.raises(HastenError, match="bad serving flags"):
        _serve_entries(str(tmp_path / "lin.onnx"), "ort-cpu", 16, 1.5, 64, 1, 1, slo_p99_ms=-1.0)
    assert _serve_entries(str(tmp_path / "lin.onnx"), "openvino", 16, 1.5, 64, 1, 1,
                          dynamic_quant_group=64)["lin"].config.dynamic_quant_group == 64
    with pytest.raises(HastenError, match="(?s)bad serving flags.*on an openvino backend"):
        _serve_entries(str(tmp_path / "lin.onnx"), "ort-cpu", 16, 1.5, 64, 1, 1, dynamic_quant_group=64)


def test_serving_a_quantized_model_otherwise_than_its_manifest_says_is_noted(tmp_path: Path, capsys) -> None:
    from hasten.cli_serve import _serve_entries

    make_linear_onnx(tmp_path / "lin.onnx")
    (tmp_path / "lin.manifest.json").write_text(json.dumps(
        {"method": "nncf", "run_with": {"backend": "openvino", "dynamic_quant_group": 128, "dynamic_int8_matmuls": 1}}))
    _serve_entries(str(tmp_path / "lin.onnx"), "ort-cpu", 16, 1.5, 64, 1, 1)
    assert "judged and timed with -b openvino --dynamic-quant-group 128; served with -b ort-cpu" in capsys.readouterr().err
    _serve_entries(str(tmp_path / "lin.onnx"), "openvino", 16, 1.5, 64, 1, 1, dynamic_quant_group=128)
    assert "judged and timed" not in capsys.readouterr().err
