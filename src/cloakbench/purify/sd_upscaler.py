"""Stage 2 of CodeSR: the Stable Diffusion x4 upscaler (DiffShortcut ``defenses/sr.py``), and noisy upscaling.

* ``sd-upscaler`` (the paper's): downsample to 128 px (PIL bicubic), Stable Diffusion x4 upscaler,
  prompt "A photo of a person", 75 steps, guidance 9, noise level 20 -> 512 px (diffusers defaults,
  docs/PAPER.md §4). The model id is configuration.
* ``noisy-upscale``: Gaussian noise (sigma 0.1) then the x4 upscaler at noise level 320 (Hoenig et
  al., robust-style-mimicry), resized back to the input size.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from .base import Purifier, register_purifier
from .resize import pil_resize

DEFAULT_UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"


@functools.lru_cache(maxsize=2)
def load_upscaler(source: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``StableDiffusionUpscalePipeline`` from a hub id or folder; a clear error when unavailable."""
    from diffusers import StableDiffusionUpscalePipeline

    from ..errors import ModelLoadError
    from ..models.hub import offline as _offline

    local = os.path.isdir(source)
    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(source, local_files_only=local or _offline(), torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"x4 upscaler {source!r} is not available{' offline' if _offline() else ''}: pass a "
                             f"local diffusers folder ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@register_purifier
class SDUpscaler(Purifier):
    name = "sd-upscaler"
    paper = "Stable Diffusion x4 upscaler as in DiffShortcut defenses/sr.py (CodeSR stage 2)"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/sr.py"
    half = "fp16"  # the reference runs the upscaler in fp16 (PAPER.md §4)
    options = {"model": DEFAULT_UPSCALER, "prompt": "A photo of a person", "steps": 75, "guidance": 9.0,
               "noise_level": 20, "pre_size": 128, "out_size": None, "noise_sigma": 0.0}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.pipe = load_upscaler(str(self.model), str(self.device or "cpu"), self.model_dtype())

    @torch.no_grad()
    def purify(self, images):
        in_hw = images.shape[-2:]
        x = images
        if self.noise_sigma:
            x = (x + self.noise_sigma * torch.randn(x.shape, generator=self.generator())).clamp(0, 1)
        if self.pre_size:
            x = pil_resize(x, int(self.pre_size))
        out = []
        for i, img in enumerate(x):
            gen = torch.Generator().manual_seed(self.seed + i)
            res = self.pipe(prompt=self.prompt, image=img[None], num_inference_steps=int(self.steps),
                            guidance_scale=float(self.guidance), noise_level=int(self.noise_level), generator=gen,
                            output_type="pt").images
            out.append(res[0].float().cpu())
        y = torch.stack(out)
        size = self.out_size if self.out_size else (None if self.pre_size else in_hw)
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=True)
        return y.clamp(0, 1)


@register_purifier
class NoisyUpscale(SDUpscaler):
    name = "noisy-upscale"
    paper = "Hoenig et al., Adversarial Perturbations Cannot Reliably Protect Artists (noisy upscaling), ICLR 2025"
    reference = "ethz-spylab/robust-style-mimicry upscale.py"  # after noise.py
    options = {**SDUpscaler.options, "noise_level": 320, "pre_size": 0, "noise_sigma": 0.1,
               "prompt": "A photo of a person"}


def build_upscaler(tiny: bool = True, seed: int = 0):
    """A random-weight ``StableDiffusionUpscalePipeline`` of the real classes: tiny (tests, 16 -> 64 px)
    or the full-size x4 upscaler architecture (speed benchmarks)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..models.tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    if tiny:
        unet = UNet2DConditionModel(block_out_channels=(8, 8, 16), layers_per_block=1, sample_size=16, in_channels=7,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                    cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4, num_class_embeds=1000)
        vae = AutoencoderKL(block_out_channels=(4, 4, 8), in_channels=3, out_channels=3, latent_channels=4,
                            norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
                                            vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    else:
        unet = UNet2DConditionModel(block_out_channels=(256, 512, 512, 1024), layers_per_block=2, sample_size=128,
                                    in_channels=7, out_channels=4,
                                    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                                    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
                                    only_cross_attention=(True, True, True, False), use_linear_projection=True,
                                    cross_attention_dim=1024, attention_head_dim=8, num_class_embeds=1000)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512), in_channels=3, out_channels=3, latent_channels=4,
                            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                            num_hidden_layers=23, vocab_size=49408, bos_token_id=49406,
                                            eos_token_id=49407, pad_token_id=49407, hidden_act="gelu"))
    return StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"), max_noise_level=350)
