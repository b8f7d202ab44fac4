"""Purification: CodeSR (CodeFormer + SR) and the baseline red-teams, each timed per image.

``create_purifier(name, **overrides)(images)``; names compose with ``+`` (``"codeformer+realesrgan"``).

One file per method, named after it (``gridpure.py``, ``ddspure.py``, ``impress.py``, ...); the small input
filters ``jpeg``, ``blur`` and ``noise`` share ``filters.py``, ``realesrgan`` and ``spandrel-sr`` share
``realesrgan.py``, ``noisy-upscale`` lives with ``sd-upscaler``. Helpers, no purifier of their own: ``base.py``
(the base class, the registry, composition), ``pixel_diffusion.py`` (the pixel model, tiling and seeds of
the pixel diffusion purifiers), ``adm.py`` (OpenAI's ADM network), ``face_align.py`` (face detection, alignment,
paste-back), ``spandrel_io.py`` (checkpoint loading), ``resize.py``.
"""

from . import codeformer, codesr, codesr_mini, ddspure, filters, gridpure, impress  # noqa: F401  (register)
from . import latent_diffpure, pixel_diffpure, realesrgan, sd_upscaler, tvm  # noqa: F401  (register)
from .base import PURIFIERS, Compose, Purifier, create_purifier, list_purifiers

__all__ = ["PURIFIERS", "Compose", "Purifier", "create_purifier", "list_purifiers"]
