"""Facts about the machine and libraries a measurement was taken on."""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import Any

from hasten.runtime.base import usable_cores


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_dot_product() -> str | None:
    """The CPU's INT8 dot-product extension (what makes U8S8 GEMMs fast), or None."""
    flags = cpu_flags()
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in flags:
            return name
    return None


def versions(packages: tuple[str, ...] = ("hasten", "numpy", "onnx", "onnxruntime", "torch", "openvino")) -> dict[str, str]:
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_facts() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
    }
