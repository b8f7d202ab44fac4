"""Validation of the mini models on the held-out subjects (``cloakbench mini validate``).

Every figure is measured on the *calibration* subjects (:func:`world.calibration_subjects`: index % 8 == 7, which
no mini model saw in training, less the evaluation and development pools, #31), and written into ``manifest.json`` beside the weights (:func:`validate_saved`). The helpers here (ROC AUC,
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
from ..purify.codesr_mini import codesr, vq_restore
from .train_data import FULL, Data, MiniTrainConfig

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


ATTRIBUTES = {"colour": list(world.COLOURS), "shape": list(world.SHAPES), "pattern": list(world.PATTERNS),
              "accent": list(world.ACCENTS)}


class Readout(torch.nn.Module):
    """Attribute read-out: a small CNN with one head per attribute (colour, shape, pattern, accent), trained on
    real world photos only (never on samples), to read what a generated image shows."""

    def __init__(self) -> None:
        super().__init__()
        c = torch.nn
        self.features = c.Sequential(c.Conv2d(3, 32, 3, padding=1), c.SiLU(), c.MaxPool2d(2), c.Conv2d(32, 64, 3, padding=1),
                                     c.SiLU(), c.MaxPool2d(2), c.Conv2d(64, 96, 3, padding=1), c.SiLU(), c.MaxPool2d(2),
                                     c.Flatten())
        self.heads = c.ModuleDict({a: c.Linear(96 * 16, len(v)) for a, v in ATTRIBUTES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``B x 3 x 32 x 32`` in [0, 1] -> logits per attribute."""
        h = self.features((x - 0.5) / 0.25)
        return {a: head(h) for a, head in self.heads.items()}


def attribute_labels(subjects: list[int]) -> dict[str, torch.Tensor]:
    subs = [world.subject(int(s)) for s in subjects]
    return {a: torch.tensor([v.index(getattr(s, a)) for s in subs]) for a, v in ATTRIBUTES.items()}


@torch.enable_grad()
def train_readout(seed: int = 0, steps: int = 400, per_subject: int = 4) -> Readout:
    """:class:`Readout` on photos of every subject (a measuring instrument, not a mini model: the held-out
    subjects' photos here are other draws than any photo used elsewhere, and trained only on the training
    subjects it confused pink with purple on 12 of 144 held-out photos), with blur and sensor noise as
    augmentation (samples are softer than photos); seeded, about half a minute on 2 CPU cores."""
    torch.manual_seed(seed)
    net = Readout()
    x, y = world.dataset(list(range(world.N_SUBJECTS)), per_subject, seed + 2000)
    labels = attribute_labels(y.tolist())
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        out = net(world.mild(x[idx], gen))
        loss = sum(F.cross_entropy(out[a], labels[a][idx]) for a in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def read_attributes(readout: Readout, images: torch.Tensor, subjects: list[int]) -> dict[str, float]:
    """Share of ``images`` whose read-out attribute equals the subject's, per attribute."""
    out, truth = readout(images), attribute_labels(subjects)
    return {a: float((out[a].argmax(1) == truth[a]).float().mean()) for a in ATTRIBUTES}


SAMPLING = dict(steps=25, guidance=5.0, scheduler="ddim")  # the base model's validation samples


@torch.no_grad()
def validate_unet(stack, data: Data, cfg: MiniTrainConfig = FULL) -> dict[str, float]:
    """Held-out denoising loss at fixed noise, and whether the base model draws the world:
    ``cfg.val_samples_per_subject`` samples (FULL: 8, so 480) of each calibration subject's full caption ("a photo
    of a teal square toy with white stripes", a combination no model saw), read by the toy detector and by
    :class:`Readout` (trained on real photos), and verified as the subject by the identity encoder against 4
    real photos of it (mean cosine distance <= threshold)."""
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
    out = {"unet_val_loss": float(F.mse_loss(pred, eps))}
    subjects = world.calibration_subjects()[: cfg.val_sample_subjects]
    k = cfg.val_samples_per_subject
    captions = [world.subject(s).caption() for s in subjects]
    imgs = generate(model, captions, k, SampleConfig(**SAMPLING, batch_size=48), seed=0)
    per = [s for s in subjects for _ in range(k)]
    readout = train_readout(data.seed, cfg.readout_steps)
    real = torch.cat([world.photos(s, 2, data.seed + 3000) for s in subjects])
    for attr, acc in read_attributes(readout, real, [s for s in subjects for _ in range(2)]).items():
        out[f"readout_{attr}_acc_photos"] = acc
    for attr, acc in read_attributes(readout, imgs, per).items():
        out[f"unet_sample_{attr}_acc"] = acc
    emb, toy = stack.identity(imgs)
    out["unet_samples"] = len(per)
    out["unet_sample_toy_rate"] = float((toy > 0).float().mean())
    refs, _ = stack.identity(torch.cat([world.photos(s, 4, data.seed + 4000) for s in subjects]))
    dist = 1 - (emb[:, None] * refs.view(len(subjects), 4, -1)[torch.arange(len(per)) // k]).sum(-1).mean(1)
    out["unet_sample_verified"] = float(((dist <= identity_threshold(stack.identity, data)) & (toy > 0)).float().mean())
    return out


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


def probe_pairs(net, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of (probe, reference) pairs of held-out photos: every photo once as a clean
    reference and once as a probe with everyday degradations (:func:`world.mild`, seeded), a photo never
    paired with itself. Returns (same-subject, different-subject) similarities."""
    gen = torch.Generator().manual_seed(5)
    ref, _ = net(data.vx)
    probe, _ = net(world.mild(data.vx, gen))
    sim = probe @ ref.T
    same = data.vy[:, None] == data.vy[None, :]
    other = ~torch.eye(len(sim), dtype=torch.bool)
    return sim[same & other], sim[~same]


@torch.no_grad()
def identity_threshold(net, data: Data) -> float:
    """The verification threshold (cosine distance at the equal-error rate of :func:`probe_pairs`)."""
    pos, neg = probe_pairs(net, data)
    return eer_threshold(1 - pos, 1 - neg)


@torch.no_grad()
def validate_identity(net, data: Data) -> dict[str, float]:
    """ROC AUC and equal-error threshold of cosine similarity over held-out (degraded probe, clean reference)
    pairs, as a face encoder is calibrated on real probes; and the detector's accuracy."""
    pos, neg_sim = probe_pairs(net, data)
    auc = roc_auc(pos, neg_sim)
    emb, toy = net(data.vx)
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
    figures.update(validate_unet(stack, data, cfg))
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
