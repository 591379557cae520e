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
