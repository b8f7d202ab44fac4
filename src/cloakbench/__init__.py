"""cloakbench: red-team and benchmark protective perturbations against personalized diffusion models.

Implements the system of "Rethinking and Red-Teaming Protective Perturbation in Personalized
Diffusion Models" (arXiv 2406.18944) and the evaluation around it. Images at every public boundary
are float32 ``B x C x H x W`` tensors in ``[0, 1]``; budgets are in ``[0, 1]`` units written ``k/255``.
"""

__version__ = "0.1.0"
