"""Purification: CodeSR (CodeFormer + SR) and the baseline red-teams, each timed per image.

``create_purifier(name, **overrides)(images)``; names compose with ``+`` (``"codeformer+realesrgan"``).
"""

from . import codeformer, codesr, latent, mini, pixel, simple, sr, tvm  # noqa: F401  (register)
from .base import PURIFIERS, Compose, Purifier, create_purifier, list_purifiers

__all__ = ["PURIFIERS", "Compose", "Purifier", "create_purifier", "list_purifiers"]
