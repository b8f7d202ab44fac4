"""Stage 1 of CodeSR: codebook face restoration (CodeFormer; Zhou et al., NeurIPS 2022).

Each face is detected, aligned to the 512 FFHQ template (:mod:`.faces`), restored with fidelity
``w = 0.5`` (``net(2x - 1, w=0.5, adain=True)``, outputs mapped back from [-1, 1]) and pasted back into
the background upscaled x2 (docs/PAPER.md §4). The network is loaded through spandrel +
spandrel_extra_arches (optional extra ``cloakbench[codeformer]``: CodeFormer is S-Lab non-commercial);
GFPGAN and RestoreFormer checkpoints work through the same code. Images without a face skip the
restoration (logged) and are only resampled.
"""

from __future__ import annotations

import logging

import torch

from .base import Purifier, register_purifier
from .faces import restore_faces
from .spandrel_io import load_restorer, resolve_weights

log = logging.getLogger(__name__)


@register_purifier
class CodeFormerStage(Purifier):
    name = "codeformer"
    paper = "Zhou et al., Towards Robust Blind Face Restoration with Codebook Lookup Transformer (CodeFormer), NeurIPS 2022"
    options = {"weights": "codeformer", "fidelity": 0.5, "upscale": 2, "upsample": 1}

    def __init__(self, **kw):
        super().__init__(**kw)
        device = self.device or "cpu"
        self.desc = load_restorer(resolve_weights(str(self.weights)), str(device))
        self.faces_found: list[int] = []

    @torch.no_grad()
    def restore(self, crop: torch.Tensor) -> torch.Tensor:
        """``1 x 3 x 512 x 512`` in [0, 1] -> restored, same shape."""
        net = self.desc.model
        x = crop.to(next(net.parameters()).device) * 2 - 1
        arch = type(net).__name__.lower()
        y = net(x, w=self.fidelity, adain=True) if "codeformer" in arch else net(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return ((y.float() + 1) / 2).clamp(0, 1).to(crop.device)

    def purify(self, images):
        out, self.faces_found = [], []
        for img in images:
            restored, n = restore_faces(img, self.restore, upscale=int(self.upscale), upsample=int(self.upsample))
            if n == 0:
                log.info("no face found: restoration skipped, image only resampled x%d", self.upscale)
            self.faces_found.append(n)
            out.append(restored)
        return torch.stack(out)
