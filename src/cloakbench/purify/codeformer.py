"""Stage 1 of CodeSR: codebook face restoration (CodeFormer; Zhou et al., NeurIPS 2022).

Each face is detected, aligned to the 512 FFHQ template (:mod:`.faces`), restored with fidelity
``w = 0.5`` (the reference's ``net(2x - 1, w=0.5, adain=True)``; spandrel's forward takes it as ``weight``:
:func:`fidelity_keyword`; outputs mapped back from [-1, 1]) and pasted back into
the background upscaled x2 (docs/PAPER.md §4). The network is loaded through spandrel +
spandrel_extra_arches (optional extra ``cloakbench[codeformer]``: CodeFormer is S-Lab non-commercial);
GFPGAN and RestoreFormer checkpoints work through the same code. Images without a face skip the
restoration (logged) and are only resampled.
"""

from __future__ import annotations

import logging

import torch

from .base import Purifier, register_purifier
from .face_align import restore_faces
from .spandrel_io import load_restorer, resolve_weights

log = logging.getLogger(__name__)


def fidelity_keyword(net: torch.nn.Module, fidelity: float) -> dict[str, float]:
    """The keyword that carries CodeFormer's fidelity weight ``w`` into ``net.forward``, read from its signature
    (spandrel_extra_arches names it ``weight``; the reference's ``inference_codeformer.py`` passes ``w``, and
    AdaIN is always on in both). Architectures without one (GFPGAN, RestoreFormer) get none; a CodeFormer
    whose forward names neither is an error, never a silently ignored option."""
    import inspect

    params = inspect.signature(net.forward).parameters
    for name in ("weight", "w"):
        if name in params:
            return {name: fidelity}
    if "codeformer" in type(net).__name__.lower():
        raise TypeError(f"{type(net).__name__}.forward{inspect.signature(net.forward)} takes no fidelity weight")
    return {}


@register_purifier
class CodeFormerStage(Purifier):
    name = "codeformer"
    paper = "Zhou et al., Towards Robust Blind Face Restoration with Codebook Lookup Transformer (CodeFormer), NeurIPS 2022"
    reference = "sczhou/CodeFormer inference_codeformer.py"
    requires = ("spandrel", "spandrel_extra_arches", "dlib", "face_recognition_models")  # spandrel_io + face_align
    # detector: dlib HOG, with dlib's CNN (MMOD) where HOG finds no face (purify/face_align.py `detect`)
    options = {"weights": "codeformer", "fidelity": 0.5, "upscale": 2, "upsample": 1, "detector": "hog+cnn"}

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
        y = net(x, **fidelity_keyword(net, float(self.fidelity)))
        y = y[0] if isinstance(y, (tuple, list)) else y
        return ((y.float() + 1) / 2).clamp(0, 1).to(crop.device)

    def purify(self, images):
        out, self.faces_found = [], []
        for img in images:
            restored, n = restore_faces(img, self.restore, upscale=int(self.upscale), upsample=int(self.upsample),
                                       detector=str(self.detector))
            if n == 0:
                log.info("no face found: restoration skipped, image only resampled x%d", self.upscale)
            self.faces_found.append(n)
            out.append(restored)
        return torch.stack(out)
