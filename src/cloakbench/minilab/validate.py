"""Validation of the mini models on the held-out subjects (``cloakbench mini validate``).

Every figure is measured on subjects with index % 8 == 7, which no mini model saw in training, and
written into ``manifest.json`` beside the weights (:func:`validate_saved`). The helpers here (ROC AUC,
pair similarities, EER threshold, the CLIP-IQA-style quality score, codebook restoration) are also
used by ``cloakbench doctor`` and the ``codesr-mini`` purifier.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.mini import world
from ..models.mini.world import CLASS_WORD
from ..purify.mini import codesr, vq_restore
from .data import FULL, Data, MiniTrainConfig

QUALITY_PROMPTS = (f"a good photo of a {CLASS_WORD}", f"a bad photo of a {CLASS_WORD}")


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of scores (higher = positive): :func:`cloakbench.metrics.calibration.roc_auc` on two sets."""
    from ..metrics.calibration import roc_auc as auc

    scores = torch.cat([pos, neg]).double().numpy()
    return auc(scores, np.arange(len(scores)) < len(pos))


def pair_similarities(emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of unit embeddings over all unordered pairs: (same-subject, different-subject)."""
    sim = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(sim, dtype=torch.bool), 1)
    return sim[same & upper], sim[~same & upper]


def eer_threshold(d_same: torch.Tensor, d_diff: torch.Tensor) -> float:
    """Distance threshold where the false-reject and false-accept rates meet (pairs at or below it
    match): :func:`cloakbench.metrics.calibration.equal_error_rate` on the negated distances."""
    from ..metrics.calibration import equal_error_rate

    scores = -torch.cat([d_same, d_diff]).double().numpy()
    return -equal_error_rate(scores, np.arange(len(scores)) < len(d_same))[1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(F.mse_loss(a.clamp(0, 1), b.clamp(0, 1))))


def quality_scores(clip, images: torch.Tensor) -> torch.Tensor:
    """CLIP-IQA-style score ``p_good - p_bad`` in [-1, 1] with :data:`QUALITY_PROMPTS`, at the mini CLIP's
    own logit scale: :func:`cloakbench.metrics.iqa.good_bad_score`, as ``clip_iqac[mini]``."""
    from ..metrics.iqa import good_bad_score

    return good_bad_score(clip, images, list(QUALITY_PROMPTS), clip.logit_scale())


@torch.no_grad()
def validate_clip(clip, data: Data) -> dict[str, float]:
    """Zero-shot attribute accuracy on held-out subjects, and the quality score's AUC clean vs degraded."""
    from ..models.clip import Clip

    c = Clip(clip, source="mini")
    f = c.image_features(data.vx)
    subs = [world.subject(int(s)) for s in data.vy]
    out = {}
    for attr, values in (("colour", list(world.COLOURS)), ("shape", world.SHAPES), ("pattern", world.PATTERNS)):
        prompts = [f"a photo of a {v} {CLASS_WORD}" if attr != "pattern" else f"a photo of a {CLASS_WORD} with {v}" for v in values]
        pred = (f @ c.text_features(prompts).T).argmax(1)
        truth = torch.tensor([list(values).index(getattr(s, attr)) for s in subs])
        out[f"clip_zero_shot_{attr}_acc"] = float((pred == truth).float().mean())
    gen = torch.Generator().manual_seed(1)
    deg, _ = world.degrade(data.vx, gen)
    q = quality_scores(c, torch.cat([data.vx, deg]))
    out["clip_quality_auc"] = roc_auc(q[: len(data.vx)], q[len(data.vx):])
    return out


@torch.no_grad()
def validate_vae(vae, data: Data) -> dict[str, float]:
    rec = vae.decode(vae.encode(data.vx * 2 - 1).latent_dist.mean).sample
    return {"vae_psnr": psnr((rec + 1) / 2, data.vx), "vae_scaling_factor": float(vae.config.scaling_factor)}


@torch.no_grad()
def validate_unet(stack, data: Data) -> dict[str, float]:
    """Held-out denoising loss at fixed noise, and the mini CLIP's colour accuracy on generated samples."""
    from ..sample import SampleConfig, generate

    model = stack.diffusion_model()
    gen = torch.Generator().manual_seed(4)
    x = data.vx[:64]
    z = model.encode(x)
    caps = [world.subject(int(s)).caption() for s in data.vy[:64]]
    t = torch.randint(0, 1000, (len(x),), generator=gen)
    eps = torch.randn(z.shape, generator=gen)
    a = model.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    pred = model.unet(a.sqrt() * z + (1 - a).sqrt() * eps, t, model.encode_prompt(caps)).sample
    colours = list(world.COLOURS)
    prompts = [f"a photo of a {c} {CLASS_WORD}" for c in colours]
    imgs = generate(model, prompts, 2, SampleConfig(steps=25, guidance=5.0, scheduler="ddim"), seed=0)
    f = stack.clip.image_features(imgs)
    pred_c = (f @ stack.clip.text_features(prompts).T).argmax(1)
    truth = torch.arange(len(colours)).repeat_interleave(2)
    return {"unet_val_loss": float(F.mse_loss(pred, eps)), "unet_sample_colour_acc": float((pred_c == truth).float().mean())}


@torch.no_grad()
def validate_vq(vq, data: Data) -> dict[str, float]:
    gen = torch.Generator().manual_seed(2)
    deg, _ = world.degrade(data.vx, gen)
    return {"vq_psnr_degraded_input": psnr(deg, data.vx), "vq_psnr_restored": psnr(vq_restore(vq, deg), data.vx),
            "vq_psnr_clean_input": psnr(vq_restore(vq, data.vx), data.vx)}


@torch.no_grad()
def validate_codesr(stack, data: Data) -> dict[str, float]:
    """CodeSR-mini (codebook restoration, downsize to 16 px, SR x2) on degraded held-out photos: PSNR and
    the identity encoder's mean cosine to the clean photo (a match needs ``1 - identity_threshold``)."""
    gen = torch.Generator().manual_seed(2)
    deg, _ = world.degrade(data.vx, gen)
    pur = codesr(stack, deg)
    e_clean, _ = stack.identity(data.vx)
    e_pur, _ = stack.identity(pur)
    return {"codesr_psnr": psnr(pur, data.vx), "codesr_identity_cos": float((e_clean * e_pur).sum(1).mean())}


@torch.no_grad()
def validate_sr(sr, data: Data) -> dict[str, float]:
    lo = world.downsample(data.vx, 16)
    bicubic = F.interpolate(lo, size=(32, 32), mode="bicubic", align_corners=False)
    return {"sr_psnr": psnr(sr(lo), data.vx), "sr_psnr_bicubic": psnr(bicubic, data.vx)}


@torch.no_grad()
def validate_identity(net, data: Data) -> dict[str, float]:
    """ROC AUC of cosine similarity over held-out same / different-subject pairs, and the detector's accuracy."""
    emb, toy = net(data.vx)
    pos, neg_sim = pair_similarities(emb, data.vy)
    auc = roc_auc(pos, neg_sim)
    rng = np.random.default_rng(3)
    neg = torch.stack([world.background(rng) for _ in range(64)])
    _, toy_neg = net(neg)
    acc = float(torch.cat([(toy > 0).float(), (toy_neg <= 0).float()]).mean())
    return {"identity_auc_heldout": auc, "identity_pairs": len(pos) + len(neg_sim),
            "identity_threshold": eer_threshold(1 - pos, 1 - neg_sim), "toy_detector_acc": acc}


def validate_saved(out: str | Path, data: Data | None = None, log=print, cfg: MiniTrainConfig = FULL) -> dict:
    """Reload the saved (fp16-rounded) weights and write their validation figures into the manifest."""
    from ..models.mini.stack import MiniStack

    data = data or Data(replace(cfg, per_subject=1))
    stack = MiniStack.load(out)
    figures: dict[str, float] = {}
    figures.update(validate_clip(stack.clip.model, data))
    figures.update(validate_vae(stack.vae, data))
    figures.update(validate_unet(stack, data))
    figures.update(validate_vq(stack.vq, data))
    figures.update(validate_sr(stack.sr, data))
    figures.update(validate_identity(stack.identity, data))
    figures.update(validate_codesr(stack, data))
    figures = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in figures.items()}
    for k, v in figures.items():
        log(f"  {k}: {v}")
    path = Path(out) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["validation"] = figures
    path.write_text(json.dumps(manifest, indent=2))
    return manifest
