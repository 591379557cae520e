"""Text for training on unlabeled sentences without downloading anything: the standard library's
``pydoc_data`` topics (the language reference's help pages) and the docstrings of its own modules —
about 10,000 technical English sentences (``pydoc``) — and general-domain sentences generated from
the word-trigram model of Wikipedia text that the ``essential-generators`` package ships
(``markov-wiki``; synthetic, roughly grammatical, wide vocabulary)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from hasten.core import HastenError
from hasten.models.dataset import Dataset
from hasten.models.model import Model

PYDOC = "pydoc"
MARKOV_WIKI = "markov-wiki"
MIXED = "pydoc+markov-wiki"
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


@cache
def _trigram_model() -> dict:
    import importlib.util
    import json

    from hasten.core import MissingDependencyError

    spec = importlib.util.find_spec("essential_generators")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("essential-generators", "examples", "the markov-wiki text")
    path = Path(list(spec.submodule_search_locations)[0]) / "markov_textgen.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HastenError(f"could not read the text model {path}: {exc}",
                          hint="reinstall essential-generators==1.0") from exc


def markov_wiki_sentences(n: int = 12_000, seed: int = 0, min_words: int = 4, max_words: int = 40) -> list[str]:
    """``n`` distinct sentences walked through the trigram model of Wikipedia text that
    essential-generators ships (state = the last two words, next word drawn by the model's
    weights), from a capitalised start to a word ending in . ? or !; reproducible for a seed."""
    import numpy as np

    chain = _trigram_model()
    starts = [k for k in chain if k[:1].isupper() and k.split()[0].isalpha()]
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    for _ in range(50 * n):  # bounded: a model that rarely ends sentences cannot loop forever
        if len(out) >= n:
            break
        words = starts[int(rng.integers(len(starts)))].split()
        while len(words) < max_words and not words[-1].endswith((".", "?", "!")):
            node = chain.get(" ".join(words[-2:])) or {}
            nexts, weights = node.get("transitions"), node.get("weights")
            if not nexts or not weights:
                break
            p = np.asarray(weights, dtype=float)
            words.append(nexts[int(rng.choice(len(p), p=p / p.sum()))])
        if min_words <= len(words) <= max_words and words[-1].endswith((".", "?", "!")):
            out.setdefault(" ".join(words).replace("<br/>", " "), None)
    return list(out)


def mixed_sentences(seed: int = 0) -> list[str]:
    """The ``pydoc`` sentences and as many again (at least 12,000) from ``markov-wiki``, shuffled
    together: technical and general-domain text for distilling a text model."""
    import numpy as np

    python = python_sentences()
    texts = python + markov_wiki_sentences(max(12_000, len(python)), seed)
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order]


# Built-in unlabeled text by name: (sentences, data set name).
TEXTS = {
    PYDOC: lambda: (python_sentences(), "python-docs"),
    MARKOV_WIKI: lambda: (markov_wiki_sentences(), "markov-wiki"),
    MIXED: lambda: (mixed_sentences(), "python-docs+markov-wiki"),
}


def default_training_text() -> str:
    """``pydoc+markov-wiki`` when the package carrying the Wikipedia model is installed, else
    ``pydoc`` (a minilm student distilled 400 steps: cosine 0.836 on the mix vs 0.797 on pydoc)."""
    import importlib.util

    return MIXED if importlib.util.find_spec("essential_generators") is not None else PYDOC
