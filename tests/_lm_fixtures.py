"""Tiny GPT-2 models and a tokenizer trained on the bundled standard-library corpus, shared by the LM tests."""

from __future__ import annotations

import functools

import torch

from kdaudit.data._corpus import load_stdlib_corpus, train_tokenizer


#: docstring-like sentences for the small prompt sets and tokenizers of the LM audit and config tests
DOCSTRING_TEXTS = [
    "Return the number of items in the container.",
    "Return a new list containing all items from the iterable in ascending order.",
    "Split the string at the first occurrence of sep, and return a 3-tuple.",
    "Return a copy of the string with leading and trailing whitespace removed.",
    "Open file and return a corresponding file object.",
    "Return the absolute value of a number.",
    "Return True if all elements of the iterable are true.",
    "Compute the square root of x.",
    "Return the sum of a start value plus an iterable of numbers.",
    "Create a new dictionary with keys from iterable and values set to value.",
    "Return the string obtained by replacing the leftmost occurrences of pattern.",
    "Return a list of the words in the string, using sep as the delimiter string.",
]


@functools.lru_cache(maxsize=1)
def corpus():
    return load_stdlib_corpus()


@functools.lru_cache(maxsize=2)
def tokenizer(vocab_size: int = 400):
    return train_tokenizer(corpus().texts[:300], vocab_size=vocab_size)


def gpt2(seed: int = 0, *, vocab_size: int = 400, n_layer: int = 2, n_embd: int = 32, n_positions: int = 128):
    import transformers

    torch.set_num_threads(1)
    tok = tokenizer(vocab_size)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                  n_head=2, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval(), tok


def gpt2_classifier(seed: int = 0, *, num_labels: int = 2, pad: bool = True):
    import transformers

    torch.set_num_threads(1)
    tok = tokenizer()
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                  num_labels=num_labels, pad_token_id=tok.pad_token_id if pad else None,
                                  bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return transformers.GPT2ForSequenceClassification(cfg).eval(), tok


TEXTS = [
    "Return the sum of a and b.",
    "x",
    "",
    "A longer text about the standard library of Python and its many modules, written to need padding.",
    "Split the string at the first occurrence of sep.",
]
