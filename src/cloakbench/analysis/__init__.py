"""Analysis: the paper's latent-misalignment study in CLIP space."""

from .misalignment import DEFAULT_CONCEPTS, analyze, concept_rates, embedding_shift, project

__all__ = ["DEFAULT_CONCEPTS", "analyze", "concept_rates", "embedding_shift", "project"]
