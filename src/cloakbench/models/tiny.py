"""A tiny random-weight Stable Diffusion of the real classes, built in code (no network, ~1 s on CPU).

Same classes and wiring as SD 2.1-base (``AutoencoderKL``, ``UNet2DConditionModel``, ``CLIPTextModel``
with the real CLIP tokenizer, DDPM training / PNDM sampling schedulers with SD's scaled-linear betas),
scaled down: 64 px images, a VAE factor of 2, 32 x 32 x 4 latents, 8-d text states. Numbers it
produces are meaningless; shapes, gradients, determinism and plumbing are real (docs/ENVIRONMENT.md §5.2).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .bundle import DiffusionModel
from .tokenizer import clip_tokenizer

# SD 1.x / 2.x noise schedule (scaled_linear, 1000 steps).
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def build_tiny(seed: int = 0, prediction_type: str = "epsilon") -> DiffusionModel:
    """Tiny random SD bundle; the same ``seed`` gives bit-identical weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=8,
    ))
    with torch.no_grad():  # like SD's 0.18215: scale latents to unit variance (here on a fixed random batch)
        probe = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        std = float(vae.encode(probe).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    noise_scheduler = DDPMScheduler(**SD_BETAS, prediction_type=prediction_type, clip_sample=False)
    sampler = PNDMScheduler(**SD_BETAS, prediction_type=prediction_type, skip_prk_steps=True,
                            set_alpha_to_one=False, steps_offset=1)
    return DiffusionModel(
        vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
        noise_scheduler=noise_scheduler, scheduler_config=dict(sampler.config), source=f"tiny:seed={seed}",
    )
