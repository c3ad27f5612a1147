"""The trie-factored secret pattern masks exactly what a flat longest-first alternation does."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.logging import _trie_regex

_ALPHABET = "ab.-*(?\\x"
_words = st.sets(st.text(alphabet=_ALPHABET, min_size=4, max_size=9), min_size=1, max_size=20)


@given(words=_words, text=st.text(alphabet=_ALPHABET + "z ", max_size=80), at=st.integers(0, 80))
def test_trie_pattern_masks_like_a_flat_alternation(words: set[str], text: str, at: int) -> None:
    text = text[:at] + min(words) + text[at:]  # at least one occurrence
    flat = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))
    trie = re.compile(_trie_regex(words))
    assert trie.sub("***", text) == flat.sub("***", text)


def test_prefix_secrets_mask_the_longest() -> None:
    trie = re.compile(_trie_regex({"abcd", "abcdef", "abcdefgh"}))
    assert trie.sub("*", "abcdefg abcdefgh abcde") == "*g * *e"
