"""Full-size Stable Diffusion 2.1-base architecture with random weights (speed and memory benchmarks).

The component configs are those of SD 2.1-base (UNet 865 M parameters, 4-channel VAE with factor 8,
OpenCLIP ViT-H text tower of 23 layers, 1024-d). Speed and memory do not depend on weight values,
so a GPU benchmark needs no download. Building it takes a few seconds and ~5 GB of memory in fp32.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..models.bundle import DiffusionModel
from ..models.tiny import SD_BETAS
from ..models.tokenizer import clip_tokenizer


def build_sd21_base_random(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DiffusionModel:
    """SD 2.1-base layout, random weights, on ``device`` in ``dtype`` (VAE kept fp32 for fp16)."""
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768,
        )
        text = CLIPTextModel(CLIPTextConfig(
            hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, projection_dim=512,
            hidden_act="gelu", vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407,
        ))
    model = DiffusionModel(
        vae=vae, unet=unet, text_encoder=text, tokenizer=clip_tokenizer(),
        noise_scheduler=DDPMScheduler(**SD_BETAS, prediction_type="epsilon", clip_sample=False),
        scheduler_config=dict(PNDMScheduler(**SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1).config),
        source="random:sd21-base",
    )
    return model.to(device, dtype)
