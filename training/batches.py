"""Tensors for training and evaluation batches: tokens, labels and photos."""

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from db.photos import PhotoError, decode_photo
from db.storage import ObjectStore
from model.fusion import ModelConfig
from model.inference import ngram_inputs, stack_images, text_ngrams
from model.inputs import collate_tokens, tokenize
from model.labels import LabelSpace
from training.data import Example

logger = logging.getLogger(__name__)

PHOTO_THREADS = 8


class ExampleTensors:
    """Pre-tokenised descriptions, their n-grams and label indices of some examples."""

    def __init__(self, examples: Sequence[Example], tokenizer, labels: LabelSpace,
                 config: ModelConfig) -> None:
        self.examples = list(examples)
        self.tokenizer = tokenizer
        texts = [e.description for e in self.examples]
        if tokenizer is not None and texts:
            self.tokens = tokenize(tokenizer, texts, config.max_length)
        else:
            self.tokens = [[0] for _ in texts]
        self.ngrams = text_ngrams(config, texts)
        self.lengths = [len(t) for t in self.tokens]
        self.codes = [e.hs_code for e in self.examples]
        self.subheadings = torch.tensor(
            [_index(labels.subheading_index(c)) for c in self.codes]
        )
        self.headings = torch.tensor([_index(labels.heading_index(c)) for c in self.codes])


def _index(value: int | None) -> int:
    return -1 if value is None else value


def load_photos(
    store: ObjectStore,
    keys: Sequence[str | None],
    transform: Callable,
    pool: ThreadPoolExecutor,
    image_size: int,
) -> list[torch.Tensor | None]:
    """Fetch and transform photos on threads; a photo that fails counts as missing.

    JPEGs are decoded at a reduced scale that keeps `image_size` pixels, as
    the worker decodes them.
    """

    def load(key: str | None) -> torch.Tensor | None:
        if key is None:
            return None
        try:
            return transform(decode_photo(store.get(key), image_size))
        except (PhotoError, KeyError, OSError) as error:
            logger.warning("photo %s skipped in training: %s", key, error)
            return None

    return list(pool.map(load, keys))


def batch_inputs(
    data: ExampleTensors,
    rows: list[int],
    photos: list[torch.Tensor | None] | None,
    device: torch.device,
) -> dict[str, torch.Tensor | None]:
    """Build the model's keyword inputs for some rows of `data`."""
    inputs: dict[str, torch.Tensor | None] = {}
    if data.ngrams is not None:
        inputs.update(ngram_inputs([data.ngrams[i] for i in rows], device))
    if data.tokenizer is not None:
        ids, mask = collate_tokens([data.tokens[i] for i in rows],
                                   data.tokenizer.pad_token_id)
        inputs["input_ids"] = ids.to(device)
        inputs["attention_mask"] = mask.to(device)
    if photos is not None:
        inputs.update(stack_images(photos, device))
    return inputs


def new_photo_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(PHOTO_THREADS, thread_name_prefix="photos")
