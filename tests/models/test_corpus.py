"""Built-in unlabeled text: Python's own documentation, sentences from a Wikipedia trigram model, everyday English, and joins of them."""

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
    mixed = corpus.builtin_text("pydoc+markov-wiki")[0]
    assert set(python) <= set(mixed) and len(mixed) >= 2 * len(python)
    assert mixed[: len(python)] != python  # shuffled together


def test_markov_wiki_without_the_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus._trigram_model.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "essential_generators" else real(name, *a))
    with pytest.raises(HastenError, match="essential-generators"):
        corpus.markov_wiki_sentences(10)
    corpus._trigram_model.cache_clear()


def _words(text: str) -> frozenset[str]:
    import re

    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def test_everyday_text_is_distinct_and_kept_apart_from_the_minilm_evaluation_sentences() -> None:
    from hasten.models.examples.minilm import sentences

    everyday = corpus.everyday_sentences()
    assert len(everyday) > 9000 and len(set(everyday)) == len(everyday)
    lengths = sorted(len(s.split()) for s in everyday)
    assert lengths[len(lengths) // 5] <= 6 and lengths[-len(lengths) // 5] >= 25  # chat-short to paragraph-long
    held_out = [_words(s) for s in sentences()]
    for line in everyday:  # no line shares half or more of its words with an evaluation sentence
        w = _words(line)
        assert max(len(w & e) / len(w | e) for e in held_out) < 0.5, line


@needs_generators
def test_joined_texts_give_each_part_an_equal_share_shuffled() -> None:
    everyday, markov = corpus.everyday_sentences(), corpus.markov_wiki_sentences()
    joined, label = corpus.builtin_text("everyday+markov-wiki")
    assert label == "everyday+markov-wiki"
    most = max(len(everyday), len(markov))
    assert len(joined) == 2 * most
    assert set(joined) == set(everyday) | set(markov)
    assert sum(s in set(markov) for s in joined) == most  # the smaller part is cycled up to the larger
    assert joined[:50] != (everyday + markov)[:50]


def test_builtin_text_names_are_checked() -> None:
    assert corpus.is_builtin_text("everyday") and corpus.is_builtin_text("pydoc+markov-wiki")
    assert not corpus.is_builtin_text("everyday+everyday") and not corpus.is_builtin_text("wiki")
    with pytest.raises(HastenError, match="everyday"):
        corpus.builtin_text("pydoc+nonsense")


def test_an_unknown_data_name_lists_what_is_built_in() -> None:
    import hasten

    with pytest.raises(HastenError, match="no data named 'everyday\\+wiki'") as err:
        hasten.load_dataset("everyday+wiki")
    assert "pydoc, markov-wiki, everyday" in err.value.hint and "minilm" in err.value.hint
