"""A tokenizer made on this machine, for presets: nothing is downloaded.

A byte-level BPE learned from a small built-in English corpus. Byte-level means any text
tokenises (unknown words fall back to bytes); the corpus only decides which words are cheap.
Training is deterministic, so two processes that build the same preset get the same ids.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

_WORDS = """
a an the of in on at to for from with and or not no yes is are was be this that these those it its
image picture photo scene object objects region regions text caption captions question answer query
represent given find select retrieve everyday matches matching describing describe description what
which where how many much color colour shape size position left right top bottom middle center above
below next near far behind front inside outside between small large big tiny medium huge one two three
four five six seven eight nine ten zero red green blue yellow orange purple pink brown black white gray
grey cyan magenta circle square triangle star diamond cross hexagon rectangle ellipse line dot dots
striped plain dotted background foreground count number same different change changed into instead but
make made modify modified turn turned version classify classification category class label task
instruct instruction summarize summary above sentence word one-word following represent retrieval
grounding visual answer the question based on image-text pair relevant document news wikipedia
"""


@lru_cache(maxsize=8)
def build_tokenizer(
    special_tokens: tuple[str, ...],
    pad_token: str,
    eos_token: str,
    vocab_size: int = 1024,
    extra_corpus: tuple[str, ...] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the built-in corpus; ``special_tokens`` are never split."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _corpus_lines(extra_corpus)
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_special_tokens(list(special_tokens))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad_token, eos_token=eos_token)


def _corpus_lines(extra: Sequence[str]) -> list[str]:
    words = _WORDS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    # Repeat common words in small phrases so BPE merges whole words, not just byte pairs.
    phrases = [f"the {w}" for w in words] + [f"a {w} {v}" for w, v in zip(words, words[1:])]
    return (lines + phrases) * 4 + list(extra)
