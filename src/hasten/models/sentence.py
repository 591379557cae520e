"""Local sentence-transformers model folders: exported to ONNX with pooling and normalisation
inside the graph, so the ONNX output is the sentence embedding itself."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from hasten.core import HastenError, ModelInfo
from hasten.models.cache import build_once, cache_root, digest
from hasten.models.model import Model
from hasten.models.onnx_file import read_specs
from hasten.models.text import TextEncoder

OUTPUT_NAME = "sentence_embedding"
# Exported with transformers' plain ("eager") attention: the default SDPA path traces into a
# NaN-guarded masked softmax (Where + IsNaN per layer) that ONNX Runtime runs as slow separate
# kernels — ~9 % of minilm's time at 8 × 128 (docs/profile.md). Same outputs (cosine 1 − 1e-12).
# The torch-eager backend keeps the default (SDPA), which is faster in torch.
EXPORT_ATTENTION = "eager"
# Opset 14 (LayerNorm as primitive ops) is the form ONNX Runtime's transformer optimizer recognises:
# with it minilm fuses into EmbedLayerNormalization + 6 Attention + 12 SkipLayerNormalization +
# BiasGelu; from opset 17's LayerNormalization op it fuses nothing. Plain ORT fuses LayerNorm at load.
EXPORT_OPSET = 14
_POOLINGS = ("mean", "cls", "max")


def is_sentence_transformers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "modules.json").exists()


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "none"


def describe_folder(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation, max length and token inputs, read from the folder's JSON files."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HastenError(f"{folder / 'modules.json'} is not a valid sentence-transformers modules file: {exc}") from exc
    if not kinds or kinds[0] != "Transformer" or not set(kinds[1:]) <= {"Pooling", "Normalize"}:
        raise HastenError(
            f"{folder}: hasten supports Transformer + Pooling (+ Normalize) sentence-transformers "
            f"models, this one has {kinds}",
        )
    pooling = "mean"
    for m in modules:
        if m["type"].endswith("Pooling"):
            cfg = json.loads((folder / m["path"] / "config.json").read_text())
            modes = [k.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens") for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
            if len(modes) != 1 or modes[0] not in _POOLINGS:
                raise HastenError(f"{folder}: unsupported pooling {modes}", hint="supported: " + ", ".join(_POOLINGS))
            pooling = modes[0]
    max_length = 256
    bert_cfg = folder / "sentence_bert_config.json"
    if bert_cfg.exists():
        max_length = int(json.loads(bert_cfg.read_text()).get("max_seq_length") or max_length)
    model_cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    shape = {"num_heads": model_cfg.get("num_attention_heads", 0), "hidden_size": model_cfg.get("hidden_size", 0)}
    inputs = ("input_ids", "attention_mask") + (("token_type_ids",) if model_cfg.get("type_vocab_size", 0) > 0 else ())
    if not (folder / "tokenizer.json").exists():
        raise HastenError(f"{folder} has no tokenizer.json", hint="save the model with a fast tokenizer")
    return {"pooling": pooling, "normalize": "Normalize" in kinds, "max_length": max_length, "inputs": inputs, **shape}


def load_sentence_transformers(folder: Path, name: str | None = None, source: str = "sentence-transformers",
                               exporter: str = "legacy") -> Model:
    """Load a local sentence-transformers folder as a `Model` (exported once, then cached)."""
    folder = Path(folder).resolve()
    desc = describe_folder(folder)
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    key = digest(folder, [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights], desc,
                 _version("torch"), _version("transformers"), exporter, EXPORT_ATTENTION, EXPORT_OPSET)
    target = cache_root() / "sentence-transformers" / f"{folder.name}-{key}"

    def factory() -> tuple[Any, tuple[Any, ...]]:
        return _build_torch(folder, desc)

    def build(tmp: Path) -> None:
        from hasten.models.torch_export import ExportConfig, export_module

        module, example = _build_torch(folder, desc, attention=EXPORT_ATTENTION)
        facts = export_module(module, example, tmp / "model.onnx",
                              ExportConfig(exporter=exporter, opset=EXPORT_OPSET, input_names=desc["inputs"],
                                           output_names=(OUTPUT_NAME,)))
        (tmp / "export.json").write_text(json.dumps(facts))

    build_once(target, "export.json", build)
    path = target / "model.onnx"
    inputs, outputs, facts = read_specs(path)
    facts.update(json.loads((target / "export.json").read_text()), pooling=desc["pooling"], folder=str(folder),
                 num_heads=desc["num_heads"], hidden_size=desc["hidden_size"])
    info = ModelInfo(name=name or folder.name, source=source, path=str(path), inputs=inputs, outputs=outputs, extra=facts)
    encoder = TextEncoder(folder / "tokenizer.json", desc["max_length"], desc["inputs"])
    return Model(info=info, text_encoder=encoder, torch_factory=factory)


def _build_torch(folder: Path, desc: dict[str, Any], attention: str | None = None) -> tuple[Any, tuple[Any, ...]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach for the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from hasten.models.torch_export import import_torch

    torch = import_torch()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("sentence-transformers", "torch", "loading a sentence-transformers model") from exc
    kwargs = {"model_kwargs": {"attn_implementation": attention}} if attention else {}
    st = SentenceTransformer(str(folder), device="cpu", **kwargs)
    module = _EmbeddingModule.build(torch, st[0].auto_model, desc["pooling"], desc["normalize"], desc["inputs"])
    ids = torch.full((2, 16), 1000, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded row, so a trace cannot bake in "no padding"
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return module.eval(), tuple(arrays[n] for n in desc["inputs"])


class _EmbeddingModule:
    """Transformer + pooling (+ L2 normalisation) as one torch module taking token tensors."""

    @staticmethod
    def build(torch: Any, encoder: Any, pooling: str, normalize: bool, inputs: tuple[str, ...]) -> Any:
        class SentenceEmbedding(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask, token_type_ids=None):  # noqa: ANN001
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    kwargs["token_type_ids"] = token_type_ids
                hidden = self.encoder(**kwargs).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                if pooling == "mean":
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                elif pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    emb = hidden.masked_fill(mask == 0, -1e9).max(1).values
                return torch.nn.functional.normalize(emb, p=2, dim=1) if normalize else emb

        return SentenceEmbedding()
