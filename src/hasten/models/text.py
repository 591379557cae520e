"""Turning sentences into token inputs, with the `tokenizers` library (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hasten.core import HastenError


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
