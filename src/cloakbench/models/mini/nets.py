"""Architectures of the mini stack: the real classes of the full stack, scaled to the 32 px world.

| role | class | size |
|---|---|---|
| CLIP (text tower = the UNet's text encoder) | transformers ``CLIPModel`` | text 64-d x 2 layers, ViT 96-d x 3 layers, patch 4 |
| VAE | diffusers ``AutoencoderKL`` | factor 2: 32 px -> 16 x 16 x 4 latents |
| UNet | diffusers ``UNet2DConditionModel`` | (32, 64, 128) on 16 x 16 latents, cross-attention 64 at 8 and 4 |
| pixel DDPM (GrIDPure / DiffPure) | diffusers ``UNet2DModel`` | 16 px tiles |
| codebook restorer (CodeFormer idea) | diffusers ``VQModel`` | 512 codes of 8-d on a 16 x 16 grid (the VAE's blocks) |
| SR x2 | spandrel ``Compact`` (Real-ESRGAN compact) | 32 feats, 8 convs |
| identity encoder + toy detector | :class:`IdentityNet` (ours) | 64-d embedding, ArcFace-style |

All builders are deterministic given ``seed``.

The VAE downsamples by 2, not SD's 8, because the world's stripes and spots are 2-3 px wide: a
factor-4 VAE loses the identity. The UNet's first level has no attention (self-attention over 256
tokens costs too much on 2 cores). The measurements behind both choices: benchmarks/README.md
("Mini stack: architecture choices").
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel, VQModel
from transformers import CLIPConfig, CLIPModel

TEXT_DIM = 64


def build_clip(seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407, projection_dim=64),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=96, intermediate_size=384, num_hidden_layers=3,
                           num_attention_heads=4, projection_dim=64),
        projection_dim=64,
    )
    return CLIPModel(cfg)


def build_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=16, sample_size=32,
    )
    # the posterior's log-variance starts at -6 (std 0.05), not 0: with SD's tiny KL weight an encoder
    # that starts at std 1 spends its first few hundred steps learning to shrink the noise
    with torch.no_grad():
        vae.quant_conv.weight[4:] *= 0.1
        vae.quant_conv.bias[4:] = -6.0
    return vae


def build_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16,
    )


def build_pixel_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=16,
    )


def build_vq(seed: int = 0) -> VQModel:
    torch.manual_seed(seed)
    return VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        latent_channels=8, num_vq_embeddings=512, vq_embed_dim=8, norm_num_groups=16, sample_size=32,
    )


def build_sr(seed: int = 0) -> nn.Module:
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=32, num_conv=8, upscale=2)


class IdentityNet(nn.Module):
    """Identity encoder for the world (the ArcFace idea): a small CNN -> L2-normalised 64-d embedding,
    trained with an additive-margin cosine softmax over the training subjects, plus a ``toy`` logit
    (the detector: FDFR's "no face" becomes "no toy")."""

    def __init__(self, n_classes: int = 504, dim: int = 64) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.embed = nn.Linear(128 * 4 * 4, dim)
        self.toy = nn.Linear(128 * 4 * 4, 1)
        self.classes = nn.Parameter(torch.randn(n_classes, dim) * 0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B x 3 x 32 x 32`` in [0, 1] -> (unit embeddings ``B x dim``, toy logits ``B``)."""
        h = self.features((x - 0.5) / 0.25).flatten(1)
        return F.normalize(self.embed(h), dim=-1), self.toy(h)[:, 0]


def build_identity(seed: int = 0, n_classes: int = 504) -> IdentityNet:
    torch.manual_seed(seed)
    return IdentityNet(n_classes)


def text_encoder_from(clip):
    """A copy of the CLIP text tower (a transformers ``CLIPTextModel``), as SD's text encoder."""
    import copy

    return copy.deepcopy(clip.text_model).eval().requires_grad_(False)
