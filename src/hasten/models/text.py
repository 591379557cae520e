"""Turning sentences into token inputs, with the `tokenizers` library (no torch needed)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError

log = logging.getLogger(__name__)


class TextEncoder:
    """Tokenizes text into ``input_ids``, ``attention_mask`` (and ``token_type_ids``) arrays."""

    def __init__(self, tokenizer_file: Path, max_length: int, input_names: tuple[str, ...]):
        from tokenizers import Tokenizer

        self.tokenizer_file = Path(tokenizer_file)
        self.max_length = max_length
        self.input_names = input_names
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.pad_id = self._tok.padding["pad_id"] if self._tok.padding else 0

    def encode(self, texts: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Token arrays ``[len(texts), L]``; L is the longest text, or ``pad_to`` if given."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise HastenError("text input must be a list of strings", hint='e.g. ["Hello there."]')
        encodings = self._tok.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encodings), default=1)
        length = pad_to or longest
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = min(len(enc.ids), length)
            ids[row, :n] = enc.ids[:n]
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids[:n]
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in self.input_names}


def encoder_record(encoder: TextEncoder | None) -> dict[str, Any] | None:
    """What a manifest keeps of a model's tokenizer, so a file derived from it (a distilled student,
    a quantized copy) takes text again when loaded on its own."""
    if encoder is None:
        return None
    return {"tokenizer": str(encoder.tokenizer_file.resolve()), "max_length": encoder.max_length,
            "inputs": list(encoder.input_names)}


def encoder_from_manifest(onnx_path: Path, input_names: tuple[str, ...]) -> TextEncoder | None:
    """The tokenizer that ``<model>.manifest.json`` records (see `encoder_record`), if there is one
    that fits the model's inputs; None otherwise (with a warning when it is named but unusable)."""
    manifest = onnx_path.with_suffix(".manifest.json")
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text()).get("text_encoder")
    except (OSError, ValueError, AttributeError):
        return None  # not a manifest of ours: nothing to take from it
    if not isinstance(record, dict):
        return None
    tokenizer, names = Path(str(record.get("tokenizer", ""))), tuple(record.get("inputs") or ())
    if sorted(names) != sorted(input_names):
        log.warning("%s names a tokenizer for inputs %s, not this model's %s: not used", manifest, list(names),
                    list(input_names))
        return None
    try:
        return TextEncoder(tokenizer, int(record["max_length"]), names)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable tokenizer: say so, load the model anyway
        log.warning("%s names the tokenizer %s, which cannot be read (%s): text data will be refused, "
                    "pass a .npz of token arrays instead", manifest, tokenizer, exc)
        return None
