"""A CLIP byte-level BPE tokenizer built over the mini world's words.

The vocabulary is CLIP's layout: the 256 byte symbols, the same with the end-of-word mark
"</w>", one token per mini-world word (so captions tokenize to whole words), the merges that
build those words, and the two special tokens. Any text still tokenizes (it falls back to
bytes); new tokens (a museum style's "<name>") are added later with `add_tokens`.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _symbols(word: str) -> list[str]:
    byte_chars = bytes_to_unicode()
    chars = [byte_chars[b] for b in word.encode("utf-8")]
    return chars[:-1] + [chars[-1] + "</w>"]


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE: repeatedly merge the adjacent pair with the lowest rank."""
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges so that every word in `words` is a single token."""
    byte_chars = list(bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(vocab_list)
    # Merge left to right; where another word's merges split this one, merge the pieces.
    for _ in range(8):
        changed = False
        for word in words:
            pieces = _apply_merges(_symbols(word), ranks)
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                merged = pieces[0] + pieces[1]
                if merged not in known:
                    known.add(merged)
                    vocab_list.append(merged)
                pieces = [merged] + pieces[2:]
                changed = True
        if not changed:
            break
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def build_tokenizer(words: list[str], folder: Path, max_length: int) -> CLIPTokenizer:
    """Build the tokenizer and save it (save_pretrained) into `folder`."""
    vocab, merges = build_vocab(words)
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
        model_max_length=max_length,
    )
    folder = Path(folder)
    tok.save_pretrained(folder)
    # The slow-tokenizer files too, so that older transformers releases load the folder.
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    for word in words:
        if len(tok(word, add_special_tokens=False).input_ids) != 1:
            raise AssertionError(f"tokenizer splits mini-world word {word!r}")
    return tok
