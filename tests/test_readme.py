"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    ns: dict = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), ns)
    # what the README claims each block gives
    if "logits" in ns:
        assert ns["logits"].shape == (8, 10)
        assert [r.batch_size for r in ns["result"].results] == [1, 32]
        assert all(0 < r.stats.p50_ms <= r.stats.p99_ms for r in ns["result"].results)
    if "emb" in ns:
        import numpy as np

        assert ns["emb"].shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(ns["emb"], axis=1), 1.0, atol=1e-5)
