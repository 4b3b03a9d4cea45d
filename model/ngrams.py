"""Hashed word and character n-grams: a second view of the text beside the encoder.

Goods names are short, often misspelt, and mix English with Korean, which
the English encoder's tokenizer breaks into single jamo. Character n-grams
of each word (Korean syllables included) and word unigrams and bigrams,
hashed into a fixed number of buckets, give a bag-of-n-grams view that
handles all of these and that the encoder's view complements.
"""

import math
import re
import zlib
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

WORD = re.compile(r"\w+")
CHAR_SIZES = (2, 3, 4, 5)
"""Lengths of the character n-grams taken from each word, marked at both ends."""


def hash_ngrams(text: str, buckets: int) -> list[int]:
    """Return the bucket of each word, word bigram and character n-gram of a text.

    Hashing uses CRC-32, which is the same in every process, so training and
    scoring agree. A text without a word maps to bucket 0.
    """
    words = WORD.findall(text.lower())
    features = [f"w {word}" for word in words]
    features += [f"b {first} {second}" for first, second in pairwise(words)]
    for word in words:
        marked = f"<{word}>"
        for size in CHAR_SIZES:
            features += [
                f"c {marked[i : i + size]}" for i in range(len(marked) - size + 1)
            ]
    return [zlib.crc32(f.encode()) % buckets for f in features] or [0]


def collate_ngrams(
    ngram_lists: Sequence[list[int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten n-gram lists for `nn.EmbeddingBag`: ids, offsets and weights.

    Each row's n-grams weigh 1/sqrt(count), so long and short texts give
    embeddings of similar size.
    """
    ids = torch.tensor([i for row in ngram_lists for i in row], dtype=torch.long)
    counts = torch.tensor([len(row) for row in ngram_lists], dtype=torch.long)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    weights = torch.repeat_interleave(counts.float().rsqrt(), counts)
    return ids, offsets, weights


class NgramEncoder(nn.Module):
    """A weighted sum of n-gram bucket embeddings: [B] bags -> [B, D]."""

    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.embedding_dim = dim
        self.bag = nn.EmbeddingBag(buckets, dim, mode="sum")
        nn.init.normal_(self.bag.weight, std=1 / math.sqrt(dim))

    def forward(
        self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return self.bag(ids, offsets, per_sample_weights=weights)
