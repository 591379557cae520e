"""Text for training on unlabeled sentences without downloading anything: the standard library's
``pydoc_data`` topics (the language reference's help pages) and the docstrings of its own modules —
about 10,000 technical English sentences (``pydoc``); general-domain sentences generated from
the word-trigram model of Wikipedia text that the ``essential-generators`` package ships
(``markov-wiki``; synthetic, roughly grammatical, wide vocabulary); and ``everyday``: 15,817
lines of everyday English written for hasten (chat, spoken replies, questions and answers,
support requests, reviews, news, explanations, notices), kept apart from the minilm example's
evaluation sentences. Names join with ``+`` (``everyday+markov-wiki``): each part then gets an
equal share of the examples."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from hasten.core import HastenError
from hasten.models.dataset import Dataset
from hasten.models.model import Model

PYDOC = "pydoc"
MARKOV_WIKI = "markov-wiki"
EVERYDAY = "everyday"
EVERYDAY_FILE = Path(__file__).parent / "examples" / "data" / "everyday.txt"
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


def everyday_sentences() -> list[str]:
    """The ``everyday`` text: lines of everyday English written for hasten, in a fixed order. No
    line shares half or more of its words with one of the minilm example's evaluation sentences
    (checked by the tests), so that evaluation stays held out."""
    return read_lines(EVERYDAY_FILE)


# Built-in unlabeled text by name: () -> sentences, and the data set's name.
TEXTS = {
    PYDOC: (python_sentences, "python-docs"),
    MARKOV_WIKI: (markov_wiki_sentences, "markov-wiki"),
    EVERYDAY: (everyday_sentences, "everyday"),
}


def is_builtin_text(name: str) -> bool:
    """``name`` is one built-in text or several joined with ``+`` (``everyday+markov-wiki``)."""
    parts = str(name).split("+")
    return all(p in TEXTS for p in parts) and len(set(parts)) == len(parts)


def builtin_text(name: str, seed: int = 0) -> tuple[list[str], str]:
    """(sentences, data set name) of a built-in text; for ``a+b+...`` each part gets an equal share:
    the smaller parts are repeated (cycled) up to the largest one's count, then all is shuffled."""
    import numpy as np

    if not is_builtin_text(name):
        raise HastenError(f"unknown built-in text '{name}'",
                          hint="use one of " + ", ".join(TEXTS) + ", or several joined with +, e.g. everyday+markov-wiki")
    parts = [TEXTS[p][0]() for p in name.split("+")]
    label = "+".join(TEXTS[p][1] for p in name.split("+"))
    if len(parts) == 1:
        return parts[0], label
    most = max(len(p) for p in parts)
    texts = [p[i % len(p)] for p in parts for i in range(most)]
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], label


def default_training_text() -> str:
    """``everyday``, the text that ships with hasten. A minilm student (3 blocks, 400 steps, lr 5e-4,
    no dropout) reaches mean cosine 0.907 on the evaluation sentences after it, 0.899 after
    ``everyday+markov-wiki``, 0.843 after ``pydoc+markov-wiki`` (docs/prune-distill.md)."""
    return EVERYDAY
