"""OpenAI's ADM (guided-diffusion) unconditional UNet and its Gaussian diffusion, for pixel purification.

Written for cloakbench after ``openai/guided-diffusion`` (MIT; ``guided_diffusion/unet.py``, ``nn.py``,
``gaussian_diffusion.py``, ``respace.py``, ``script_util.py``), not copied. The module tree reproduces
the reference's parameter names, so the released ``256x256_diffusion_uncond.pt`` loads with
``load_state_dict(strict=True)`` (weights manager entry ``adm-256-uncond``). Only what that checkpoint
uses is built: residual blocks do the up/down-sampling (``resblock_updown``), FiLM conditioning
(``use_scale_shift_norm``), the legacy head order of ``QKVAttentionLegacy``, no class conditioning.

Images are ``B x 3 x H x W`` in [-1, 1] (H, W multiples of ``2 ** (len(channel_mult) - 1)``); timesteps
are original steps of the 1000-step schedule (the reference's ``_WrappedModel`` maps respaced indices
back to these, ``respace.py:116-128``). The output is ``B x 6 x H x W`` when ``learn_sigma``: channels
0-2 are the predicted noise eps, 3-5 the variance interpolation ``v`` in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AdmConfig:
    """UNet hyper-parameters. The defaults are the 256 px unconditional checkpoint's flags, as DiffShortcut
    (``diffshortcut/defenses/gridpure.py:8-45``) and GrIDPure (``imagenet.yml:5-19``) pass them to
    ``create_model`` (``script_util.py:130-184``): 256 channels, mult (1, 1, 2, 2, 4, 4) for 256 px
    (``script_util.py:151-152``), 2 res blocks, attention at 32, 16, 8 px, 64 channels per head,
    ``learn_sigma`` (6 output channels), dropout 0. ``attention_resolutions`` are feature-map sizes in px."""

    image_size: int = 256
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    learn_sigma: bool = True
    in_channels: int = 3

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_ds(self) -> set[int]:
        """Downsampling factors with attention (``script_util.py:162-164``: image_size // resolution)."""
        return {self.image_size // r for r in self.attention_resolutions}


ADM_256_UNCOND = AdmConfig()
TINY_ADM = AdmConfig(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(16,), num_head_channels=16)  # tests: same classes, 0.83 M parameters


class GroupNorm32(nn.GroupNorm):
    """32-group norm computed in fp32 whatever the input dtype (``nn.py:17-19, 93-100``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos | sin]`` of ``t`` (shape ``B``) -> ``B x dim`` fp32 (``nn.py:103-121``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _zeroed(module: nn.Module) -> nn.Module:
    """Zero-initialised layer, as the reference's ``zero_module`` (``nn.py:68-74``)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class ResBlock(nn.Module):
    """Residual block with FiLM time conditioning; ``up`` / ``down`` resample by 2 without parameters
    (nearest / average pooling) between the first norm+SiLU and the first conv (``unet.py:143-256``)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 up: bool = False, down: bool = False) -> None:
        super().__init__()
        out = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.resample = "up" if up else "down" if down else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out))
        self.out_layers = nn.Sequential(GroupNorm32(out), nn.SiLU(), nn.Dropout(0.0),
                                        _zeroed(nn.Conv2d(out, out, 3, padding=1)))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.resample == "down" else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
        x = self._resample(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    """Self-attention over all positions, ``channels // head_channels`` heads, the legacy layout where
    the 1x1 ``qkv`` output is split into heads first, then into q, k, v (``unet.py:259-354``)."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = channels // head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x)).reshape(b * self.heads, 3 * c // self.heads, -1)
        q, k, v = (u.transpose(1, 2) for u in qkv.chunk(3, dim=1))  # (B * heads) x T x ch each
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, -1)  # softmax(qk^T / sqrt(ch)) v
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that also hands the time embedding to its residual blocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class AdmUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (``unet.py:396-663``) for :class:`AdmConfig`; ``forward(x, t)``
    maps ``B x 3 x H x W`` and timesteps (``B`` or a scalar, original steps) to ``B x out_channels x H x W``."""

    def __init__(self, cfg: AdmConfig = ADM_256_UNCOND) -> None:
        super().__init__()
        self.cfg = cfg
        mc, emb = cfg.model_channels, 4 * cfg.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))

        def stage(*layers: nn.Module) -> EmbedSequential:
            return EmbedSequential(*layers)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.num_head_channels)

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([stage(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(stage(*layers))
                skips.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.input_blocks.append(stage(ResBlock(ch, emb, down=True)))
                skips.append(ch)
                ds *= 2
        self.middle_block = stage(ResBlock(ch, emb), attn(ch), ResBlock(ch, emb))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_ds:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb, up=True))
                    ds //= 2
                self.output_blocks.append(stage(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), _zeroed(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    def convert_torso(self, dtype: torch.dtype) -> AdmUNet:
        """Convolutions of the input, middle and output blocks to ``dtype``; embeddings, norms and the last
        conv stay fp32, as ``convert_to_fp16`` does (``unet.py:618-624``, ``fp16_util.py:15-22``)."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.to(dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.time_embed[0].weight.dtype))
        h, skips = x.to(self.input_blocks[0][0].weight.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype))


# ------------------------------------------------------------------ diffusion (gaussian_diffusion.py, respace.py)


def linear_betas(steps: int = 1000) -> torch.Tensor:
    """The "linear" schedule in float64: 1e-4 .. 0.02 scaled by 1000 / steps (``gaussian_diffusion.py:27-35``)."""
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """The ``count`` original steps a ``timestep_respacing=str(count)`` run keeps, ascending: one section,
    stride ``(num_timesteps - 1) / (count - 1)`` accumulated and rounded (``respace.py:7-60``).
    ``space_timesteps(1000, 250)[:11] == [0, 4, ..., 40]``."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot respace {num_timesteps} steps to {count}")
    stride, cur, kept = (num_timesteps - 1) / (count - 1) if count > 1 else 1, 0.0, []
    for _ in range(count):
        kept.append(round(cur))
        cur += stride
    return sorted(set(kept))


class AdmDiffusion:
    """The Gaussian diffusion of the ADM checkpoints: 1000 linear steps, eps prediction, learned-range
    variance when ``learn_sigma`` (else the fixed large variance, ``script_util.py:386-424``), x0 clipped to
    [-1, 1] (``clip_denoised=True`` in both references). ``alphas_cumprod``: float64, 1000 values."""

    def __init__(self, steps: int = 1000, learn_sigma: bool = True) -> None:
        self.num_train_timesteps, self.learn_sigma = steps, learn_sigma
        self.alphas_cumprod = torch.cumprod(1 - linear_betas(steps), 0)

    def chain(self, t_star: int, steps: int, respacing: int = 0) -> tuple[list[int], bool]:
        """``(kept, clean)``: the ascending original steps of the reverse chain and whether it ends with the
        noiseless step to x0. The image is diffused to ``kept[-1]`` and walked down ``kept``.

        * ``respacing`` = 0: ``steps`` evenly spaced steps from ``t_star`` (original steps) down to 1, then
          the noiseless step, as cloakbench's DDPM path.
        * ``respacing`` = N: DiffShortcut's ``denoise`` (``gridpure.py:96-110``) on a ``SpacedDiffusion``
          of N steps (``gridpure.py:16``): ``t_star`` is a *respaced* index (q_sample and p_sample index
          the respaced arrays, ``respace.py:72-86``), every respaced step from ``t_star`` down to 1 is
          taken and the loop stops before index 0, so the output keeps that last step's noise
          (``steps`` must equal ``t_star``). N = 250, t = 10: original steps 40, 36, ..., 4, 0.
        """
        if respacing:
            kept = space_timesteps(self.num_train_timesteps, int(respacing))
            if not 0 < t_star < len(kept) or steps != t_star:
                raise ValueError(f"with respacing={respacing}, need 0 < t_star < {len(kept)} and steps == t_star "
                                 f"(every respaced step is taken), got t_star={t_star}, steps={steps}")
            return kept[: t_star + 1], False
        ts = torch.linspace(t_star, 0, steps + 1)[:-1].round().long().unique_consecutive().tolist()
        return sorted(ts), True

    def step(self, model: nn.Module, x: torch.Tensor, kept: list[int], i: int,
             noise: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One ``p_sample`` (``gaussian_diffusion.py:232-326, 395-439``) from ``kept[i]`` to ``kept[i - 1]``
        (to x0 when ``i`` = 0, without noise) on the chain restricted to ``kept``, as ``SpacedDiffusion``
        recomputes betas over the kept steps (``respace.py:78-85``). ``x``: fp32 in [-1, 1] units."""
        a_t = float(self.alphas_cumprod[kept[i]])
        a_prev = float(self.alphas_cumprod[kept[i - 1]]) if i > 0 else 1.0
        beta = 1 - a_t / a_prev  # float64 scalars, as the reference's numpy arrays
        out = model(x, torch.full((x.shape[0],), kept[i], dtype=torch.long, device=x.device)).float()
        eps = out[:, : x.shape[1]]
        x0 = (x / math.sqrt(a_t) - math.sqrt(1 / a_t - 1) * eps).clamp(-1, 1)
        mean = beta * math.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a_t) * x
        if i == 0:  # no noise at index 0 (nonzero_mask)
            return mean
        if self.learn_sigma:  # LEARNED_RANGE: v in [-1, 1] interpolates log posterior variance .. log beta
            frac = (out[:, x.shape[1]:] + 1) / 2
            log_var = frac * math.log(beta) + (1 - frac) * math.log(beta * (1 - a_prev) / (1 - a_t))
        else:  # FIXED_LARGE: beta (gaussian_diffusion.py:281-284)
            log_var = torch.full_like(x, math.log(beta))
        return mean + torch.exp(0.5 * log_var) * noise()

    def purify(self, model: nn.Module, x: torch.Tensor, t_star: int, steps: int, noise: Callable[[], torch.Tensor],
               respacing: int = 0) -> torch.Tensor:
        """Diffuse ``x`` (fp32, [-1, 1]) to the top of :meth:`chain` and run it back down. ``noise()`` returns
        one standard normal draw of ``x``'s shape: once for ``q_sample``, then once per noisy step."""
        kept, clean = self.chain(int(t_star), int(steps), int(respacing))
        a = float(self.alphas_cumprod[kept[-1]])
        x = math.sqrt(a) * x + math.sqrt(1 - a) * noise()
        for i in range(len(kept) - 1, -1 if clean else 0, -1):
            x = self.step(model, x, kept, i, noise)
        return x


def build_tiny_adm(seed: int = 0, cfg: AdmConfig = TINY_ADM) -> AdmUNet:
    """Random :class:`AdmUNet` for tests; the zero-initialised layers get small random values so the
    output depends on the input."""
    torch.manual_seed(seed)
    net = AdmUNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return net.eval().requires_grad_(False)


def load_adm(path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
             cfg: AdmConfig = ADM_256_UNCOND) -> tuple[AdmUNet, AdmDiffusion]:
    """``(AdmUNet, AdmDiffusion)`` from a guided-diffusion state dict (``.pt``), loaded strictly. The net
    is built on the meta device and takes the file's tensors (memory-mapped when the format allows);
    a non-fp32 ``dtype`` converts the torso only, as the references' ``use_fp16`` does."""
    from ..errors import ModelLoadError

    with torch.device("meta"):
        net = AdmUNet(cfg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} is not a guided-diffusion ADM checkpoint of the expected layout "
                             f"({cfg}): {str(exc).splitlines()[0]}") from exc
    net = net.float().eval().requires_grad_(False)
    if dtype != torch.float32:
        net.convert_torso(dtype)
    return net.to(device), AdmDiffusion(learn_sigma=cfg.learn_sigma)
