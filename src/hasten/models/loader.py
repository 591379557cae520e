"""`load_model()` and `load_dataset()`: every way a model or data set comes into hasten."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from hasten.core import HastenError, ModelInfo
from hasten.models.dataset import Dataset
from hasten.models.model import Model

log = logging.getLogger(__name__)


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # if torch was never imported, obj cannot be a module
    return torch is not None and isinstance(obj, torch.nn.Module)


def load_model(source: Any, example_input: Any = None, *, name: str | None = None,
               exporter: str = "legacy", path: str | Path | None = None,
               input_names: tuple[str, ...] | None = None,
               output_names: tuple[str, ...] | None = None) -> Model:
    """Load a model from an ``.onnx`` path, a built-in example name (``minilm``, ``digits-cnn``),
    a local sentence-transformers folder, or a ``torch.nn.Module`` with ``example_input``.

    A torch module is exported to ONNX (to ``path``, or a temporary folder) with a dynamic batch
    axis and a dynamic sequence axis for integer token inputs.
    """
    if _is_torch_module(source):
        return _from_torch(source, example_input, name, exporter, path, input_names, output_names)
    if not isinstance(source, (str, Path)):
        raise HastenError(
            f"cannot load a model from a {type(source).__name__}",
            hint="pass an .onnx path, a built-in example name, a sentence-transformers folder, "
            "or a torch.nn.Module with example_input=...",
        )
    from hasten.models.examples import EXAMPLES, load_example

    if isinstance(source, str) and source in EXAMPLES:
        return load_example(source)
    p = Path(source).expanduser()
    from hasten.models.sentence import is_sentence_transformers_folder, load_sentence_transformers

    if is_sentence_transformers_folder(p):
        return load_sentence_transformers(p, name=name, exporter=exporter)
    if not p.exists() and p.suffix != ".onnx" and not str(source).startswith((".", "/", "~")):
        raise HastenError(
            f"'{source}' is neither a file nor a built-in example",
            hint="built-in examples: " + ", ".join(EXAMPLES) + "; or pass a path to an .onnx file",
        )
    from hasten.models.onnx_file import read_specs
    from hasten.models.text import encoder_from_manifest

    inputs, outputs, facts = read_specs(p)
    # a file hasten derived from a text model (a student, a quantized copy) names its tokenizer
    encoder = encoder_from_manifest(p, tuple(s.name for s in inputs))
    return Model(ModelInfo(name or p.stem, "onnx", str(p.resolve()), inputs, outputs, facts), text_encoder=encoder)


def _from_torch(module: Any, example_input: Any, name: str | None, exporter: str,
                path: str | Path | None, input_names: Any, output_names: Any) -> Model:
    from hasten.models.onnx_file import read_specs
    from hasten.models.torch_export import ExportConfig, export_module, normalize_example

    example, names = normalize_example(module, example_input, input_names)
    config = ExportConfig(exporter=exporter, input_names=names, output_names=output_names)
    target = Path(path) if path else Path(tempfile.mkdtemp(prefix="hasten-")) / "model.onnx"
    facts = export_module(module, example, target, config)
    inputs, outputs, read = read_specs(target)
    info = ModelInfo(name or type(module).__name__, "torch", str(target), inputs, outputs, {**read, **facts})
    return Model(info, torch_factory=lambda: (module, example))


def load_dataset(source: str | Path | Dataset, model: Model | None = None) -> Dataset:
    """A `Dataset` from an ``.npz`` file, a built-in example name, a ``.txt`` file (one text per
    line) or built-in text for text models — ``everyday`` (everyday English written for hasten),
    ``pydoc`` (sentences of Python's own documentation: pydoc topics and standard-library
    docstrings), ``markov-wiki`` (sentences from a Wikipedia trigram model), or several joined with
    ``+`` — or as given;
    checked against ``model``'s inputs when a model is given."""
    from hasten.models import corpus

    if isinstance(source, Dataset):
        data = source
    elif corpus.is_builtin_text(str(source)) or str(source).endswith(".txt"):
        if model is None:
            raise HastenError(f"text data ({source}) needs the model, to tokenize it")
        if corpus.is_builtin_text(str(source)):
            data = corpus.text_dataset(model, *corpus.builtin_text(str(source)))
        else:
            if not Path(source).is_file():
                raise HastenError(f"text file not found: {source}")
            data = corpus.text_dataset(model, corpus.read_lines(Path(source)), Path(source).stem)
    elif isinstance(source, str) and _example_name(source):
        from hasten.models.examples import example_dataset, load_example

        data = example_dataset(source, model if model is not None and model.name == source else load_example(source))
    elif not Path(source).suffix and not Path(source).exists():  # a name, neither built in nor a file
        from hasten.models.examples import EXAMPLES

        raise HastenError(f"no data named '{source}'",
                          hint="pass a .npz file, a .txt file (one text per line), a built-in example ("
                               + ", ".join(EXAMPLES) + ") or, for text models, built-in text: "
                               + ", ".join(corpus.TEXTS) + " (several joined with +, e.g. everyday+markov-wiki)")
    else:
        data = Dataset.from_npz(source)
    if model is not None:
        data.check_against(model.inputs)
    return data


def default_dataset(model: Model) -> Dataset | None:
    """The example's own data set for a built-in example; ``None`` for other models."""
    if model.info.source.startswith("example:"):
        return load_dataset(model.info.source.split(":", 1)[1], model)
    return None


def training_dataset(model: Model) -> Dataset | None:
    """Data to train on (fine-tuning, distillation) for a built-in example, disjoint from its
    evaluation data: digits-cnn's training split; for text examples the unlabeled ``everyday`` text
    (none of its lines shares half its words with an evaluation sentence)."""
    if not model.info.source.startswith("example:"):
        return None
    if model.info.source == "example:digits-cnn":
        from hasten.models.examples import digits

        return digits.train_dataset()
    if model.text_encoder is None:
        return None
    from hasten.models import corpus

    return load_dataset(corpus.default_training_text(), model)


def _example_name(source: str) -> bool:
    from hasten.models.examples import EXAMPLES

    return source in EXAMPLES
