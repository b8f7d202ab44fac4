"""Analysis: the paper's shortcut-learning study (docs/PAPER.md §3).

M1 / M2 latent misalignment in CLIP space (:mod:`.misalignment`), M3 the random-noise control of a
bench run (:mod:`.control`), M4 concept extraction from a trained model (:mod:`.concepts`).
"""

from .concepts import concept_prompts, extract_concepts
from .control import random_noise_control
from .misalignment import DEFAULT_CONCEPTS, analyze, concept_rates, embedding_shift, project

__all__ = ["DEFAULT_CONCEPTS", "analyze", "concept_prompts", "concept_rates", "embedding_shift", "extract_concepts",
           "project", "random_noise_control"]
