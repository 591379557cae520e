"""Built-in unlabeled text: Python's own documentation and sentences from a Wikipedia trigram model."""

from __future__ import annotations

import importlib.util

import pytest

from hasten.core import HastenError
from hasten.models import corpus

needs_generators = pytest.mark.skipif(importlib.util.find_spec("essential_generators") is None,
                                      reason="essential-generators is not installed (hasten[examples])")


@needs_generators
def test_markov_wiki_sentences_are_reproducible_distinct_and_sentence_shaped() -> None:
    a = corpus.markov_wiki_sentences(300, seed=1)
    assert a == corpus.markov_wiki_sentences(300, seed=1)
    assert a != corpus.markov_wiki_sentences(300, seed=2)
    assert len(a) == len(set(a)) == 300
    for s in a:
        words = s.split()
        assert 4 <= len(words) <= 40 and s[0].isupper() and s[-1] in ".?!"
    vocabulary = {w.strip(".,;:?!()\"'").lower() for s in a for w in s.split()}
    assert len(vocabulary) > 2000  # general-domain: a wide vocabulary, not one topic


@needs_generators
def test_the_mixed_text_holds_every_pydoc_sentence_and_as_many_generated_ones() -> None:
    python = corpus.python_sentences()
    mixed = corpus.mixed_sentences()
    assert set(python) <= set(mixed) and len(mixed) >= 2 * len(python)
    assert mixed[: len(python)] != python  # shuffled together


def test_markov_wiki_without_the_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus._trigram_model.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "essential_generators" else real(name, *a))
    with pytest.raises(HastenError, match="essential-generators"):
        corpus.markov_wiki_sentences(10)
    corpus._trigram_model.cache_clear()
