"""Protections: one PGD engine and the protective perturbations the red team is measured against.

``create_protection(name, **overrides)(images, model, seed=0)``; ``list_protections()`` names them.
Glaze is closed source: Glaze-protected images are accepted as data only (load them as any folder).
"""

from . import adaptive, advdm, aspl, caat, fsmg, metacloak, mist, photoguard, pid, random_noise, sds, simac  # noqa: F401  (register)
from .base import PROTECTIONS, Protection, create_protection, list_protections
from .engine import PGD, finalize, gradient, run_pgd
from .transforms import TRANSFORMS, make_transforms

__all__ = ["PGD", "PROTECTIONS", "TRANSFORMS", "Protection", "create_protection", "finalize", "gradient",
           "list_protections", "make_transforms", "run_pgd"]
