"""The real CLIP BPE tokenizer built offline from the vocabulary file that ships in open_clip.

transformers 5.x dropped slow tokenizers and ``CLIPTokenizer(vocab_file=...)`` silently ignores the
file (docs/ENVIRONMENT.md §6.1), so we rebuild the vocabulary the way CLIP defines it: 256 byte symbols,
the same with ``</w>``, the 48,894 merges, then the two special tokens -> 49,408 ids. The result
matches the hub tokenizer of Stable Diffusion (``"a photo of sks person"`` ->
``[49406, 320, 1125, 539, 48136, 2533, 49407]``). Only the vocabulary file is read: open_clip is
never imported (it needs torchvision); install it with ``pip install --no-deps open_clip_torch``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """CLIP / GPT-2 byte-to-unicode table, in id order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def vocab_path() -> Path:
    """Path of the CLIP BPE vocabulary inside the installed open_clip package."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the CLIP BPE vocabulary is missing: it ships in open_clip_torch. "
            "Install it with: pip install --no-deps open_clip_torch"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE vocabulary not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.decompress(vocab_path().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A fresh (mutable: tokens may be added) real CLIP tokenizer, built without the Hub."""
    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length,
        bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
    )
