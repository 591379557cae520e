"""Built-in examples: loaded by name, built from packages, nothing downloaded at run time."""

from __future__ import annotations

from collections.abc import Callable

from hasten.core import HastenError
from hasten.models.dataset import Dataset
from hasten.models.model import Model


def _minilm() -> tuple[Callable[[], Model], Callable[[Model], Dataset]]:
    from hasten.models.examples import minilm

    return minilm.load, minilm.dataset


def _digits() -> tuple[Callable[[], Model], Callable[[Model], Dataset]]:
    from hasten.models.examples import digits

    return digits.load, digits.dataset


EXAMPLES: dict[str, tuple[str, Callable[[], tuple]]] = {
    "minilm": ("all-MiniLM-L6-v2 sentence embeddings (384-d), 540 evaluation sentences", _minilm),
    "digits-cnn": ("151k-parameter CNN on scikit-learn's 8x8 digits, 360 test images", _digits),
}


def example_names() -> list[str]:
    return list(EXAMPLES)


def _entry(name: str) -> tuple[Callable[[], Model], Callable[[Model], Dataset]]:
    if name not in EXAMPLES:
        raise HastenError(f"unknown example '{name}'", hint="built-in examples: " + ", ".join(EXAMPLES))
    return EXAMPLES[name][1]()


def load_example(name: str) -> Model:
    return _entry(name)[0]()


def example_dataset(name: str, model: Model) -> Dataset:
    return _entry(name)[1](model)
