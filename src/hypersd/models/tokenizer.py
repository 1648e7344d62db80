"""An offline CLIP tokenizer whose vocabulary is the Shapes-world words plus single characters.

CLIP's tokenizer is byte-pair encoding over words ending in "</w>". We build merges so that every
Shapes word is one token; any other word falls back to characters, so every prompt tokenizes.
The result is a standard `vocab.json` + `merges.txt` that `transformers.CLIPTokenizer` loads.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from hypersd.shapes.world import COLORS, COUNT_WORDS, PLURALS, REGIONS, RELATIONS, SHAPES, SIZES

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32


def shapes_words() -> list[str]:
    words = {"a", "and", "in", "the"}
    words.update(COLORS, SHAPES, PLURALS.values(), SIZES, COUNT_WORDS.values())
    for phrase in (*REGIONS, *RELATIONS):
        words.update(phrase.split())
    return sorted(words)


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: merge the lowest-ranked adjacent pair until none is mergeable."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return symbols


def build_vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Merges that make each word one token; appending only max-rank merges keeps earlier words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [BOS, EOS] + chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
            symbols = _bpe(symbols, ranks)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab_and_merges(shapes_words())
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, indent=0))
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_file, merges_file


def build_tokenizer(folder: Path):
    """A `CLIPTokenizer` over the Shapes vocabulary (files written into `folder`)."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_tokenizer_files(folder)
    return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=MAX_LENGTH)
