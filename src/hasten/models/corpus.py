"""Text that ships with Python, for training on unlabeled sentences without downloading anything:
the standard library's ``pydoc_data`` topics (the language reference's help pages) and the
docstrings of the standard library's own modules — about 10,000 English sentences in all."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from hasten.core import HastenError
from hasten.models.dataset import Dataset
from hasten.models.model import Model

PYDOC = "pydoc"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_CODE_LIKE = re.compile(r"[>{}=\[\]|]{2,}|\*\*|\.\.\.|::|^\W")
_IDENTIFIER_LIKE = re.compile(r"[>{}=\[\]|]{2,}|\*\*|\.\.\.|::|^\W|_\w|\w_|\(\)|`")


def pydoc_sentences(min_words: int = 6, max_words: int = 60) -> list[str]:
    """English sentences from ``pydoc_data.topics``: prose only (lines that look like code are
    dropped), deduplicated, in a fixed order — about 1,600 of them."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise HastenError("this Python has no pydoc_data module (some distributions leave it out)",
                          hint="pass your own text: --data sentences.txt (one per line)") from exc
    out: dict[str, None] = {}
    for key in sorted(topics):
        prose = " ".join(line.strip() for line in topics[key].splitlines()
                         if line.strip() and not line.startswith((" " * 3, "\t")))
        for sentence in _SENTENCE_END.split(re.sub(r"\s+", " ", prose)):
            sentence = sentence.strip()
            if min_words <= len(sentence.split()) <= max_words and not _CODE_LIKE.search(sentence):
                out.setdefault(sentence, None)
    return list(out)


def stdlib_docstring_sentences(min_words: int = 6, max_words: int = 50) -> list[str]:
    """Prose sentences from the docstrings of the standard library's modules, classes and
    functions (parsed with ``ast``, never imported; tests and examples left out), in a fixed order."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo"}
    out: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for para in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                lines = [line.strip() for line in para.splitlines()]
                if any(line.startswith((">>>", "-", "*", ":")) for line in lines):
                    continue  # examples, lists, field lists: not prose
                for sentence in _SENTENCE_END.split(" ".join(lines)):
                    sentence = sentence.strip()
                    if (min_words <= len(sentence.split()) <= max_words and sentence[:1].isupper()
                            and sentence[-1:] in ".!?" and not _IDENTIFIER_LIKE.search(sentence)):
                        out.setdefault(sentence, None)
    return list(out)


@cache
def _python_sentences() -> tuple[str, ...]:
    return tuple(dict.fromkeys(pydoc_sentences() + stdlib_docstring_sentences()))


def python_sentences() -> list[str]:
    """pydoc topics then standard-library docstrings, deduplicated (the ``pydoc`` data set);
    parsed once per process (~5 s)."""
    return list(_python_sentences())


def text_dataset(model: Model, texts: list[str], name: str) -> Dataset:
    """``texts`` tokenized for ``model`` (padded to the longest; batches trim themselves)."""
    if model.text_encoder is None:
        raise HastenError(f"'{model.name}' does not take text (it has no tokenizer)",
                          hint="pass a .npz file with one array per model input")
    if not texts:
        raise HastenError(f"data set '{name}' holds no text")
    return Dataset(model.text_encoder.encode(texts), None, name=name, texts=texts)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HastenError(f"{path} is not UTF-8 text ({exc})", hint="save it as UTF-8, one sentence per line") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]
