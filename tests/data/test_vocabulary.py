"""The character vocabulary: id layout, stable order, encode/decode."""

import numpy as np
import pytest

from tflatent.data.vocabulary import PAD, PAD_ID, UNK, UNK_CHARACTER, UNK_ID, CharVocabulary


def test_pad_is_0_unk_is_1_then_characters_by_descending_frequency_ties_by_character():
    vocabulary = CharVocabulary.build(["abca", "cb d"])
    assert (PAD_ID, UNK_ID) == (0, 1)
    assert vocabulary.tokens == [PAD, UNK, "a", "b", "c", " ", "d"]  # a, b, c twice; ' ' < 'd' once
    assert CharVocabulary.build(["cb d", "abca"]) == vocabulary  # order of the sentences is irrelevant


def test_encode_decode_round_trip_and_unknown_characters():
    vocabulary = CharVocabulary.build(["hello world"])
    ids = vocabulary.encode("hello world")
    assert ids.dtype == np.int32 and vocabulary.decode(ids) == "hello world"
    assert vocabulary.encode("hi!").tolist() == [vocabulary.tokens.index("h"), UNK_ID, UNK_ID]
    assert vocabulary.decode([[PAD_ID, vocabulary.encode("h")[0], UNK_ID, PAD_ID]]) == "h" + UNK_CHARACTER


def test_invalid_vocabularies_and_ids_are_errors():
    with pytest.raises(ValueError, match="starts with '<pad>', '<unk>'"):
        CharVocabulary(["a", PAD, UNK])
    with pytest.raises(ValueError, match="duplicates"):
        CharVocabulary([PAD, UNK, "a", "a"])
    with pytest.raises(ValueError, match="id 3 is outside the vocabulary of 3 ids"):
        CharVocabulary([PAD, UNK, "a"]).decode([2, 3])
