"""The character vocabulary of ``ptb_char``: id ↔ character, built on the training sentences.

Ids: 0 is padding, 1 is the unknown character, then the characters of the training split by
descending frequency, ties broken by the character itself, so that the same text always gives the
same vocabulary. The reference (torchtext) had ``<unk>`` = 0 and ``<pad>`` = 1; we swap the two so that
padding is 0 (what Keras masking and ``tf.RaggedTensor.to_tensor`` assume). The swap changes no
number: neither id is a character of the data, and padding never enters a loss.
"""

from __future__ import annotations

import collections
from typing import Iterable, Sequence

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
UNK_CHARACTER = "\ufffd"  # what decode() writes for the unknown id ("<unk>" is five PTB characters)


class CharVocabulary:
    """Maps characters to ids and back; ``tokens[i]`` is the string of id ``i``."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary has distinct tokens; got duplicates")
        self.tokens = tokens
        self._ids = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: Iterable[str]) -> "CharVocabulary":
        counts = collections.Counter()
        for sentence in sentences:
            counts.update(sentence)
        return cls([PAD, UNK] + sorted(counts, key=lambda char: (-counts[char], char)))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocabulary) and self.tokens == other.tokens

    def encode(self, text: str) -> np.ndarray:
        """[len(text)] int32 ids; a character outside the vocabulary becomes UNK_ID."""
        return np.array([self._ids.get(char, UNK_ID) for char in text], np.int32)

    def decode(self, ids) -> str:
        """The text of ``ids``; padding is dropped, the unknown id is written as U+FFFD."""
        pieces = []
        for i in np.asarray(ids).ravel().tolist():
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"id {i} is outside the vocabulary of {len(self.tokens)} ids")
            if i != PAD_ID:
                pieces.append(UNK_CHARACTER if i == UNK_ID else self.tokens[i])
        return "".join(pieces)
