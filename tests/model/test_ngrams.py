"""Hashed n-grams and their encoder."""

import torch

from model.ngrams import NgramEncoder, collate_ngrams, hash_ngrams

BUCKETS = 1024


def test_hash_ngrams_is_stable_across_calls():
    assert hash_ngrams("Laptop computer", BUCKETS) == hash_ngrams("Laptop computer", BUCKETS)


def test_hash_ngrams_ignores_case():
    assert hash_ngrams("LAPTOP", BUCKETS) == hash_ngrams("laptop", BUCKETS)


def test_hash_ngrams_counts_words_bigrams_and_character_ngrams():
    # "ab": 1 word; "<ab>" has 3 bigrams, 2 trigrams, 1 four-gram, no five-gram.
    assert len(hash_ngrams("ab", BUCKETS)) == 1 + 3 + 2 + 1


def test_hash_ngrams_word_bigram():
    one_word = len(hash_ngrams("ab", BUCKETS))
    assert len(hash_ngrams("ab ab", BUCKETS)) == 2 * one_word + 1


def test_hash_ngrams_reads_korean_syllables():
    # "노트북": 1 word; "<노트북>" has 4 + 3 + 2 + 1 character n-grams.
    assert len(hash_ngrams("노트북", BUCKETS)) == 1 + 4 + 3 + 2 + 1


def test_hash_ngrams_no_words_bucket_zero():
    assert hash_ngrams(" ;-- ", BUCKETS) == [0]


def test_hash_ngrams_stays_inside_the_buckets():
    assert max(hash_ngrams("a long description of goods", 7)) < 7


def test_collate_ngrams_offsets_start_each_row():
    _, offsets, _ = collate_ngrams([[1, 2, 3], [4], [5, 6]])
    assert offsets.tolist() == [0, 3, 4]


def test_collate_ngrams_weighs_rows_by_inverse_square_root():
    _, _, weights = collate_ngrams([[1, 2, 3, 4], [5]])
    assert weights.tolist() == [0.5, 0.5, 0.5, 0.5, 1.0]


def test_ngram_encoder_returns_one_embedding_per_row():
    encoder = NgramEncoder(BUCKETS, 16)
    embedded = encoder(*collate_ngrams([hash_ngrams("a b", BUCKETS), [3]]))
    assert embedded.shape == torch.Size([2, 16])
