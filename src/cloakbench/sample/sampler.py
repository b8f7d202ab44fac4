"""Our own classifier-free-guidance sampling loop over the model bundle, and quality-enhanced sampling.

diffusers' pipelines cannot add a guidance term, so the loop is ours (docs/ENVIRONMENT.md §6.11): with
the extra term at 0 it reproduces ``StableDiffusionPipeline`` for the same scheduler and latents.

CFG (the reference code's form, the negative prompt replacing the unconditional branch):
``e = e(neg) + w * (e(pos) - e(neg))``. The optional extra term subtracts a separate noise-phrase
direction: ``e -= w_x * (e(noise phrase) - e(neg))``.

QES (arXiv 2406.18944 §QES, docs/PAPER.md §6): negative prompt "noisy, lowres, artifact, pattern",
guidance 7.5, 100 steps, PNDM, and the suffix ", without <noise>" on every prompt. The reference code
appends the suffix to every sampling prompt, CDL-trained or not, QES or not (DiffShortcut
train_dreambooth.py:514); so does cloakbench by default (``protocol.SAMPLE_SUFFIX``, docs/DEVIATIONS.md S1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .. import protocol
from ..models.bundle import DiffusionModel
from ..personalize.cdl import CDLPolicy

QES_NEGATIVE = protocol.QES_NEGATIVE
SCHEDULERS = ("pndm", "ddim", "dpm")


def make_scheduler(model: DiffusionModel, name: str):
    """A fresh sampling scheduler: ``pndm`` (SD 2.1-base default), ``ddim`` or ``dpm`` (DPM-Solver++)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    cfg = dict(model.scheduler_config or model.noise_scheduler.config)
    cls = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}.get(name)
    if cls is None:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, not {name!r}")
    # A PNDM config has no clip_sample key and DDIM's default is True: it would clip the predicted clean
    # *latents* to [-1, 1] at every step (SD latents reach +-4), which ruins every sample. Latent
    # diffusion never clips (SD's own scheduler configs say clip_sample: false).
    cfg.setdefault("clip_sample", False)
    return cls.from_config(cfg)


@dataclass
class SampleConfig:
    """Sampling settings (defaults: plain SD sampling; :func:`qes_config` gives the paper's QES)."""

    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str = ""
    scheduler: str = "pndm"
    batch_size: int = 4
    extra_prompt: str | None = None  # the noise phrase for the extra negative term
    extra_scale: float = 0.0
    suffix: str = ""  # appended to every prompt (QES: ", without <noise>")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def qes_config(cdl: CDLPolicy | None = None, *, suffix: bool = True, negative_prompt: str = QES_NEGATIVE,
               steps: int = 100, guidance: float = 7.5, extra_scale: float = 0.0) -> SampleConfig:
    """The paper's QES: ", without <noise>" (``cdl``'s noise phrase, the reference's by default) on every
    prompt unless ``suffix`` is False, and the negative prompt."""
    cdl = cdl or CDLPolicy()
    return SampleConfig(steps=steps, guidance=guidance, negative_prompt=negative_prompt, scheduler="pndm",
                        suffix=cdl.sample_prompt("") if suffix else "",
                        extra_prompt=cdl.noise if extra_scale else None, extra_scale=extra_scale)


def initial_latents(model: DiffusionModel, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """One N(0, I) latent per seed (CPU generator, so results do not depend on batch size or device)."""
    f = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, height // f, width // f)
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def denoise(model: DiffusionModel, latents: torch.Tensor, prompts: Sequence[str], cfg: SampleConfig) -> torch.Tensor:
    """Run the CFG loop from ``latents`` (unscaled N(0, I)) for one batch; returns images in [0, 1]."""
    sched = make_scheduler(model, cfg.scheduler)
    sched.set_timesteps(cfg.steps, device=model.device)
    b = latents.shape[0]
    pos = model.encode_prompt([p + cfg.suffix for p in prompts])
    neg = model.encode_prompt([cfg.negative_prompt] * b)
    conds = [neg, pos]
    if cfg.extra_scale:
        conds.append(model.encode_prompt([cfg.extra_prompt or ""] * b))
    cond = torch.cat(conds)
    z = latents.to(device=model.device, dtype=model.dtype) * sched.init_noise_sigma
    k = len(conds)
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([z] * k), t)
        eps = model.unet(inp, t, encoder_hidden_states=cond).sample.chunk(k)
        e = eps[0] + cfg.guidance * (eps[1] - eps[0])
        if cfg.extra_scale:
            e = e - cfg.extra_scale * (eps[2] - eps[0])
        z = sched.step(e, t, z).prev_sample
    return model.decode(z).cpu()


def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    n: int = 1,
    cfg: SampleConfig | None = None,
    *,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``n`` images per prompt -> ``(len(prompts) * n) x 3 x H x W`` in [0, 1], prompt-major.

    Image ``j`` of prompt ``i`` uses seed ``seed + i * n + j``: the same seed gives the same images
    whatever the batch size (up to float summation order in batched kernels).
    """
    cfg = cfg or SampleConfig()
    if n < 1 or cfg.steps < 1:
        raise ValueError(f"need n >= 1 and steps >= 1, got n={n}, steps={cfg.steps}")
    h = height or model.resolution
    w = width or model.resolution
    jobs = [(p, seed + i * n + j) for i, p in enumerate(prompts) for j in range(n)]
    out = []
    for k in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[k : k + cfg.batch_size]
        lat = initial_latents(model, [s for _, s in chunk], h, w)
        out.append(denoise(model, lat, [p for p, _ in chunk], cfg))
        if progress is not None:
            progress(min(k + cfg.batch_size, len(jobs)), len(jobs))
    return torch.cat(out)


def batches(total: int, size: int) -> int:
    return math.ceil(total / size)
