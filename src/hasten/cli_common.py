"""Helpers every `hasten` command shares (parsing lists and bars, loading with a status line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hasten.core import HastenError
from hasten.core.console import stderr_console

# Text models are benchmarked at a fixed token length unless --seq-len says otherwise, so that
# every batch size sees the same per-example work (real sentences vary from 3 to 80 tokens).
DEFAULT_TEXT_SEQ_LEN = 128


def _split_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise HastenError(f"{what} must be comma-separated integers, got '{text}'", hint="e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise HastenError(f"{what} must be positive integers, got '{text}'", hint="e.g. 1,8,32")
    return values


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (empty: none)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _requirements(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items:
        name, sep, value = item.partition(">=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise HastenError(f"--require wants METRIC>=VALUE, got '{item}'", hint="e.g. --require nn_agreement>=0.95") from None
        if not sep:
            raise HastenError(f"--require wants METRIC>=VALUE, got '{item}'", hint="e.g. --require nn_agreement>=0.95")
    return tuple(out)


def _batch_sizes(text: str | None, model: Any, flag: str = "--batch-sizes") -> tuple[int, ...]:
    fixed = model.fixed_batch
    if fixed is None:
        return _split_ints(text or "1,8,32", flag)
    if text is None:
        stderr_console().print(f"note: {model.name} has a fixed batch dimension of {fixed} (no dynamic batch axis): "
                               f"measuring batch {fixed} only", highlight=False, soft_wrap=True)
        return (fixed,)
    sizes = _split_ints(text, flag)
    if sizes != (fixed,):
        raise HastenError(f"{model.name} only takes batches of {fixed} (its first dimension is fixed), "
                          f"{flag} asked for {text}",
                          hint=f"use {flag} {fixed}, or re-export the model with a dynamic batch axis")
    return sizes


def _load(source: str) -> Any:
    from hasten.models import load_model

    with stderr_console().status(f"loading {source} (the first load of an example exports or trains it)…"):
        return load_model(source)


def _data_for(m: Any, data: Path | None, seq_len: int | None) -> tuple[Any, int | None]:
    from hasten.models import default_dataset, load_dataset, synthetic_dataset

    if seq_len is None and m.text_encoder is not None:
        seq_len = DEFAULT_TEXT_SEQ_LEN
    if data is not None:
        return load_dataset(data, m), seq_len
    return default_dataset(m) or synthetic_dataset(m.inputs, dynamic_dim=seq_len or 16), seq_len
