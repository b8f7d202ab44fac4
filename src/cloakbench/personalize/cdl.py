"""Contrastive Decoupling Learning (CDL; arXiv 2406.18944 §CDL, docs/PAPER.md §5) as a prompt policy.

The noise pattern gets its own words so the identifier ("sks") does not absorb it:
instance prompt ``"<instance prompt>, <noise>"``, class (prior) prompt ``"<class prompt>, without
<noise>"``, with ``noise = "bhj noisy pattern"`` (the reference code's default; ordinary text learned
through the text-encoder fine-tune). There is no extra loss term. At sampling time the reference appends
``", without <noise>"`` to every prompt (:meth:`sample_prompt`; ``protocol.SAMPLE_SUFFIX``).

Extension: ``new_token`` adds a fresh token (lowercase: CLIP's tokenizer lowercases, docs/ENVIRONMENT.md
§6.2) with its own embedding, initialised from ``init_from`` and learned (textual-inversion style);
the noise phrase then uses it, e.g. ``new_token="<bhj>"`` -> ``"<bhj> noisy pattern"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .. import protocol

DEFAULT_NOISE = protocol.CDL_NOISE


@dataclass
class CDLPolicy:
    """Prompt rewriting for CDL; ``enabled=False`` leaves prompts unchanged."""

    enabled: bool = False
    noise: str = DEFAULT_NOISE
    instance_template: str = protocol.CDL_INSTANCE_TEMPLATE
    class_template: str = protocol.CDL_CLASS_TEMPLATE
    sample_suffix: str = protocol.CDL_SAMPLE_SUFFIX
    new_token: str | None = None
    init_from: str = "noisy"

    def __post_init__(self) -> None:
        if self.new_token is not None:
            if self.new_token != self.new_token.lower():
                raise ValueError(f"CDL new_token must be lowercase (CLIP lowercases text): {self.new_token!r}")
            if self.noise == DEFAULT_NOISE:
                self.noise = f"{self.new_token} noisy pattern"

    def instance_prompt(self, prompt: str) -> str:
        return self.instance_template.format(prompt=prompt, noise=self.noise) if self.enabled else prompt

    def class_prompt(self, prompt: str) -> str:
        return self.class_template.format(prompt=prompt, noise=self.noise) if self.enabled else prompt

    def sample_prompt(self, prompt: str) -> str:
        """``prompt`` + ``", without <noise>"`` (when sampling applies it: :func:`cloakbench.stages.sampling.use_suffix`)."""
        return prompt + self.sample_suffix.format(noise=self.noise)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_token(model, token: str, init_from: str = "noisy") -> int:
    """Add ``token`` to the tokenizer and a new embedding row initialised from ``init_from``; returns its id."""
    tok, te = model.tokenizer, model.text_encoder
    if token in tok.get_vocab():
        return tok.convert_tokens_to_ids(token)
    if tok.add_tokens([token]) != 1:
        raise ValueError(f"could not add token {token!r}")
    te.resize_token_embeddings(len(tok))
    new_id = tok.convert_tokens_to_ids(token)
    init_ids = tok(init_from, add_special_tokens=False).input_ids
    emb = te.get_input_embeddings().weight
    with torch.no_grad():
        emb[new_id] = emb[init_ids].mean(0)
    return new_id
