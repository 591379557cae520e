"""`import hasten` stays light, and the public surface is what we mean it to be."""

from __future__ import annotations

import subprocess
import sys

import hasten

HEAVY = ("torch", "openvino", "ray", "executorch", "tensorrt", "transformers", "sentence_transformers")


def test_import_hasten_loads_no_heavy_package() -> None:
    code = (
        "import sys, hasten, hasten.cli, hasten.runtime, hasten.measure, hasten.models\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import hasten pulled in: {out.stdout.strip()}"


def test_public_surface_is_pinned() -> None:
    assert sorted(hasten.__all__) == sorted([
        "BackendConfig", "BenchConfig", "BenchResult", "Dataset", "HastenError", "LatencyStats", "Model",
        "ModelInfo", "ProfileConfig", "Runner", "TensorSpec", "__version__", "available_backends", "benchmark",
        "compare", "compile", "load_dataset", "load_model", "machine_peaks", "profile", "synthetic_dataset",
    ])
    for name in hasten.__all__:
        assert hasattr(hasten, name), name
