"""``cloakbench mini train``: train every mini model from scratch on the procedural world.

Seeded and reproducible (same seed, same torch build and thread count -> the same weights and the
same validation figures). Budgets are in optimizer steps, sized so the full run takes under 60
minutes on 2 CPU cores (:data:`FULL`); :data:`QUICK` runs the same code in a minute (tests).

Order: world data -> CLIP (contrastive, with quality words) -> VAE -> UNet (latent diffusion with the
frozen CLIP text tower, 10 % empty captions) -> pixel DDPM (16 px tiles) -> codebook restorer (VQ
on clean photos, then an encoder that maps degraded photos to clean codes: CodeFormer's idea) -> SR
x2 -> identity encoder. Each model is validated on the held-out subjects and the figures are written
to ``manifest.json`` beside the fp16 safetensors.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import nets, world
from .world import CLASS_WORD

OPENAI_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
QUALITY_PROMPTS = (f"a good photo of a {CLASS_WORD}", f"a bad photo of a {CLASS_WORD}")
CONCEPT_PROMPTS = (f"a photo of a {CLASS_WORD}", "a photo of noise pattern")


@dataclass(frozen=True)
class MiniTrainConfig:
    seed: int = 0
    per_subject: int = 32
    clip_steps: int = 900
    vae_steps: int = 700
    unet_steps: int = 1800
    pixel_steps: int = 600
    vq_steps: int = 250
    vq_restore_steps: int = 250
    sr_steps: int = 600
    id_steps: int = 600
    val_per_subject: int = 8


FULL = MiniTrainConfig()
QUICK = MiniTrainConfig(per_subject=2, clip_steps=3, vae_steps=3, unet_steps=3, pixel_steps=2, vq_steps=2,
                        vq_restore_steps=2, sr_steps=2, id_steps=3, val_per_subject=2)


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


class Data:
    """Training photos (uint8, subject-major), their subjects, and held-out validation photos."""

    def __init__(self, cfg: MiniTrainConfig) -> None:
        x, y = world.dataset(world.train_subjects(), cfg.per_subject, cfg.seed)
        self.x, self.y = _u8(x), y
        vx, vy = world.dataset(world.held_out_subjects(), cfg.val_per_subject, cfg.seed + 1000)
        self.vx, self.vy = vx, vy
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.rng.integers(0, len(self.x), n))
        return self.x[idx].float() / 255, self.y[idx]

    def negatives(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """Photos with no toy: plain backgrounds, or backgrounds under a strong structured noise."""
        out, caps = [], []
        for _ in range(n):
            bg = world.background(self.rng)
            if self.rng.random() < 0.5:
                cell = int(self.rng.integers(1, 4))
                pat = torch.sign(torch.randn(3, 32 // cell, 32 // cell, generator=self.gen))
                bg = (bg + self.rng.uniform(16, 64) / 255 * F.interpolate(pat[None], size=32, mode="nearest")[0]).clamp(0, 1)
                caps.append("a photo of noise pattern")
            else:
                caps.append("a photo of background")
            out.append(bg)
        return torch.stack(out), caps


def caption(idx: int, rng: np.random.Generator, quality: str | None = None) -> str:
    """A caption of subject ``idx``: full (70 %) or partial attributes, with an optional quality word."""
    s = world.subject(idx)
    q = f"{quality} " if quality else ""
    r = rng.random()
    if r < 0.7:
        return s.caption(f"a {q}photo of a")
    if r < 0.8:
        return f"a {q}photo of a {s.colour} {CLASS_WORD}"
    if r < 0.9:
        return f"a {q}photo of a {s.shape} {CLASS_WORD}"
    return f"a {q}photo of a {CLASS_WORD} with {s.accent} {s.pattern}"


def caption_variants(idx: int, quality: str | None = None) -> list[str]:
    """Every caption :func:`caption` can give subject ``idx`` (with one quality word or none)."""
    s, q = world.subject(idx), f"{quality} " if quality else ""
    return [s.caption(f"a {q}photo of a"), f"a {q}photo of a {s.colour} {CLASS_WORD}",
            f"a {q}photo of a {s.shape} {CLASS_WORD}", f"a {q}photo of a {CLASS_WORD} with {s.accent} {s.pattern}"]


def tokenize(tok, captions: list[str], length: int = 77) -> torch.Tensor:
    """Token ids padded to ``length`` (77 as SD for the UNet's context; CLIP trains on 24: the pooled
    EOS feature does not depend on later padding under the causal mask)."""
    return tok(captions, padding="max_length", truncation=True, max_length=length, return_tensors="pt").input_ids


def update(opt, loss: torch.Tensor, sched=None, clip=None) -> None:
    """One optimizer step: zero, backward, optional grad-norm clip at 1.0, step, optional schedule step."""
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()
    if sched is not None:
        sched.step()


def report(log: Callable[[str], None], name: str, step: int, total: int, loss: torch.Tensor, digits: int = 4) -> None:
    """Log the loss every 100 steps and at the last one."""
    if step % 100 == 0 or step == total - 1:
        log(f"{name} step {step}: loss {loss.item():.{digits}f}")


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Mann-Whitney ROC AUC of scores (higher = positive)."""
    scores = torch.cat([pos, neg]).double()
    ranks = torch.empty_like(scores)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(F.mse_loss(a.clamp(0, 1), b.clamp(0, 1))))


# ------------------------------------------------------------------ CLIP
def train_clip(data: Data, cfg: MiniTrainConfig, log: Callable[[str], None]):
    from ..models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    clip = nets.build_clip(cfg.seed)
    opt = torch.optim.AdamW(clip.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.clip_steps, 2), pct_start=0.05)
    clip.train()
    for step in range(cfg.clip_steps):
        x, y = data.batch(112)
        n_deg = 28
        deg, words = world.degrade(x[:n_deg], data.gen)
        words = [w if data.rng.random() < 0.5 else "bad" for w in words]
        x = torch.cat([deg, x[n_deg:]])
        caps = [caption(int(s), data.rng, words[i] if i < n_deg else data.rng.choice(["", "clean", "good"]) or None)
                for i, s in enumerate(y.tolist())]
        neg, ncaps = data.negatives(16)
        x, caps = torch.cat([x, neg]), caps + ncaps
        img = clip.get_image_features(pixel_values=(x - OPENAI_MEAN) / OPENAI_STD)
        txt = clip.get_text_features(input_ids=tokenize(tok, caps, 24))
        img, txt = (F.normalize(getattr(f, "pooler_output", f), dim=-1) for f in (img, txt))
        logits = clip.logit_scale.exp().clamp(max=100) * img @ txt.T
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())
        update(opt, loss, sched=sched)
        report(log, "clip", step, cfg.clip_steps, loss, digits=3)
    clip.eval().requires_grad_(False)
    return clip


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


def quality_scores(clip, images: torch.Tensor) -> torch.Tensor:
    """CLIP-IQA-style score ``p_good - p_bad`` in [-1, 1] with :data:`QUALITY_PROMPTS`."""
    p = (100 * clip.image_features(images) @ clip.text_features(list(QUALITY_PROMPTS)).T).softmax(-1)
    return p[:, 0] - p[:, 1]


# ------------------------------------------------------------------ VAE
def train_vae(data: Data, cfg: MiniTrainConfig, log):
    vae = nets.build_vae(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=max(cfg.vae_steps, 2), pct_start=0.05)
    vae.train()
    for step in range(cfg.vae_steps):
        x, _ = data.batch(32)
        x = x * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
        update(opt, loss, sched=sched)
        report(log, "vae", step, cfg.vae_steps, loss)
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD's 0.18215 idea: scale latents to unit variance
        z = torch.cat([vae.encode(data.x[i : i + 256].float() / 127.5 - 1).latent_dist.mean for i in range(0, min(len(data.x), 2048), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


@torch.no_grad()
def validate_vae(vae, data: Data) -> dict[str, float]:
    rec = vae.decode(vae.encode(data.vx * 2 - 1).latent_dist.mean).sample
    return {"vae_psnr": psnr((rec + 1) / 2, data.vx), "vae_scaling_factor": float(vae.config.scaling_factor)}


# ------------------------------------------------------------------ UNet
def text_encoder_from(clip):
    """A copy of the CLIP text tower (a transformers ``CLIPTextModel``), as SD's text encoder."""
    import copy

    return copy.deepcopy(clip.text_model).eval().requires_grad_(False)


def train_unet(data: Data, cfg: MiniTrainConfig, clip, vae, log):
    from diffusers import DDPMScheduler

    from ..models.tiny import SD_BETAS
    from ..models.tokenizer import clip_tokenizer

    tok, te = clip_tokenizer(), text_encoder_from(clip)
    sched_ = DDPMScheduler(**SD_BETAS, prediction_type="epsilon", clip_sample=False)
    sf = float(vae.config.scaling_factor)
    with torch.no_grad():
        dists = [vae.encode(data.x[i : i + 256].float() / 127.5 - 1).latent_dist for i in range(0, len(data.x), 256)]
    mean, std = torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])
    # every caption the sampler can draw, encoded once by the frozen text tower (77 tokens, as SD)
    subjects = sorted(set(data.y.tolist()))
    texts = [""] + sorted({c for s in subjects for c in caption_variants(s)})
    index = {c: i for i, c in enumerate(texts)}
    with torch.no_grad():
        states = torch.cat([te(tokenize(tok, texts[i : i + 256]))[0] for i in range(0, len(texts), 256)])
    unet = nets.build_unet(cfg.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 5e-4, total_steps=max(cfg.unet_steps, 2), pct_start=0.05)
    alphas = sched_.alphas_cumprod
    unet.train()
    for step in range(cfg.unet_steps):
        idx = torch.from_numpy(data.rng.integers(0, len(mean), 64))
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=data.gen)) * sf
        caps = [caption(int(data.y[i]), data.rng) if data.rng.random() > 0.1 else "" for i in idx]
        cond = states[torch.tensor([index[c] for c in caps])]
        t = torch.randint(0, 1000, (len(idx),), generator=data.gen)
        eps = torch.randn(z.shape, generator=data.gen)
        a = alphas[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a.sqrt() * z + (1 - a).sqrt() * eps, t, cond).sample, eps)
        update(opt, loss, sched=sched, clip=unet.parameters())
        report(log, "unet", step, cfg.unet_steps, loss)
    unet.eval().requires_grad_(False)
    return unet


# ------------------------------------------------------------------ pixel DDPM (GrIDPure tiles)
def train_pixel(data: Data, cfg: MiniTrainConfig, log):
    from diffusers import DDPMScheduler

    unet = nets.build_pixel_unet(cfg.seed)
    sched_ = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.pixel_steps, 2), pct_start=0.05)
    unet.train()
    for step in range(cfg.pixel_steps):
        x, _ = data.batch(64)
        oy, ox = (int(v) for v in data.rng.integers(0, 17, 2))
        x = x[..., oy : oy + 16, ox : ox + 16] * 2 - 1
        t = torch.randint(0, 1000, (len(x),), generator=data.gen)
        eps = torch.randn(x.shape, generator=data.gen)
        loss = F.mse_loss(unet(sched_.add_noise(x, eps, t), t).sample, eps)
        update(opt, loss, sched=sched)
        report(log, "pixel ddpm", step, cfg.pixel_steps, loss)
    return unet.eval().requires_grad_(False), sched_


# ------------------------------------------------------------------ codebook restorer
def train_vq(data: Data, cfg: MiniTrainConfig, log):
    vq = nets.build_vq(cfg.seed)
    opt = torch.optim.AdamW(vq.parameters(), lr=2e-3)
    vq.train()
    for step in range(cfg.vq_steps):  # stage 1: the codebook prior of clean photos
        x, _ = data.batch(32)
        x = x * 2 - 1
        out = vq(x)
        loss = (out.sample - x).abs().mean() + out.commit_loss.mean()
        update(opt, loss)
        report(log, "vq", step, cfg.vq_steps, loss)
    # stage 2 (CodeFormer's code prediction): the encoder learns to map degraded photos onto the clean
    # photo's codes; codebook and decoder stay frozen, so outputs stay on the clean-photo manifold.
    frozen = [vq.quantize, vq.post_quant_conv, vq.decoder]
    for m in frozen:
        m.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vq.parameters() if p.requires_grad], lr=1e-3)
    for step in range(cfg.vq_restore_steps):
        x, _ = data.batch(32)
        deg, _ = world.degrade(x, data.gen)
        with torch.no_grad():
            target = vq.encode(x * 2 - 1).latents
        h = vq.encode(deg * 2 - 1).latents
        rec = vq.decode(h).sample
        loss = (rec - (x * 2 - 1)).abs().mean() + F.mse_loss(h, target)
        update(opt, loss)
        report(log, "vq restore", step, cfg.vq_restore_steps, loss)
    return vq.eval().requires_grad_(False)


@torch.no_grad()
def vq_restore(vq, x: torch.Tensor) -> torch.Tensor:
    """Codebook restoration of ``B x 3 x 32 x 32`` photos in [0, 1]."""
    return ((vq.decode(vq.encode(x * 2 - 1).latents).sample + 1) / 2).clamp(0, 1)


@torch.no_grad()
def validate_vq(vq, data: Data) -> dict[str, float]:
    gen = torch.Generator().manual_seed(2)
    deg, _ = world.degrade(data.vx, gen)
    return {"vq_psnr_degraded_input": psnr(deg, data.vx), "vq_psnr_restored": psnr(vq_restore(vq, deg), data.vx),
            "vq_psnr_clean_input": psnr(vq_restore(vq, data.vx), data.vx)}


# ------------------------------------------------------------------ SR x2
def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def train_sr(data: Data, cfg: MiniTrainConfig, log):
    sr = nets.build_sr(cfg.seed)
    opt = torch.optim.AdamW(sr.parameters(), lr=2e-3)
    sr.train()
    for step in range(cfg.sr_steps):
        x, _ = data.batch(64)
        loss = (sr(downsample(x, 16)) - x).abs().mean()
        update(opt, loss)
        report(log, "sr", step, cfg.sr_steps, loss)
    return sr.eval().requires_grad_(False)


@torch.no_grad()
def validate_sr(sr, data: Data) -> dict[str, float]:
    lo = downsample(data.vx, 16)
    bicubic = F.interpolate(lo, size=(32, 32), mode="bicubic", align_corners=False)
    return {"sr_psnr": psnr(sr(lo), data.vx), "sr_psnr_bicubic": psnr(bicubic, data.vx)}


# ------------------------------------------------------------------ identity encoder
def train_identity(data: Data, cfg: MiniTrainConfig, log):
    classes = {s: i for i, s in enumerate(world.train_subjects())}
    net = nets.build_identity(cfg.seed, len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=max(cfg.id_steps, 2), pct_start=0.05)
    net.train()
    for step in range(cfg.id_steps):
        x, y = data.batch(96)
        half = len(x) // 2
        x = torch.cat([world.degrade(x[:half], data.gen)[0], x[half:]])
        neg, _ = data.negatives(24)
        emb, toy = net(torch.cat([x, neg]))
        target = torch.tensor([classes[int(s)] for s in y])
        cos = emb[: len(x)] @ F.normalize(net.classes, dim=-1).T
        logits = 24.0 * (cos - 0.25 * F.one_hot(target, cos.shape[1]))  # CosFace margin
        is_toy = torch.cat([torch.ones(len(x)), torch.zeros(len(neg))])
        loss = F.cross_entropy(logits, target) + F.binary_cross_entropy_with_logits(toy, is_toy)
        update(opt, loss, sched=sched)
        report(log, "identity", step, cfg.id_steps, loss)
    return net.eval().requires_grad_(False)


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


def pair_similarities(emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of unit embeddings over all unordered pairs: (same-subject, different-subject)."""
    sim = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(sim, dtype=torch.bool), 1)
    return sim[same & upper], sim[~same & upper]


def eer_threshold(d_same: torch.Tensor, d_diff: torch.Tensor) -> float:
    """Distance threshold where the false-reject and false-accept rates meet (pairs at or below match)."""
    grid = torch.linspace(0, 2, 2001)
    frr = (d_same[None, :] > grid[:, None]).float().mean(1)
    far = (d_diff[None, :] <= grid[:, None]).float().mean(1)
    return float(grid[(frr - far).abs().argmin()])


# ------------------------------------------------------------------ all
def train_all(out: str | Path, cfg: MiniTrainConfig = FULL, log: Callable[[str], None] = print) -> dict:
    """Train every mini model into ``out`` (fp16 safetensors + ``manifest.json``); returns the manifest."""
    from .stack import save_all

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def say(msg: str) -> None:  # timestamps in the training log
        log(f"[{time.perf_counter() - t0:7.1f} s] {msg}")

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"{name}: {timings[name]:.0f} s")
        return result

    data = timed("data", Data, cfg)
    clip = timed("clip", train_clip, data, cfg, say)
    vae = timed("vae", train_vae, data, cfg, say)
    unet = timed("unet", train_unet, data, cfg, clip, vae, say)
    pixel, _ = timed("pixel", train_pixel, data, cfg, say)
    vq = timed("vq", train_vq, data, cfg, say)
    sr = timed("sr", train_sr, data, cfg, say)
    ident = timed("identity", train_identity, data, cfg, say)
    models = {"clip": clip, "vae": vae, "unet": unet, "pixel": pixel, "vq": vq, "sr": sr, "identity": ident}
    manifest = {"config": asdict(cfg), "timings_s": timings, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "train_seconds": round(time.perf_counter() - t0, 1)}
    save_all(models, out, manifest)
    manifest = validate_saved(out, data, log)
    return manifest


def validate_saved(out: str | Path, data: Data | None = None, log=print, cfg: MiniTrainConfig = FULL) -> dict:
    """Reload the saved (fp16-rounded) weights and write their validation figures into the manifest."""
    from .stack import MiniStack

    data = data or Data(replace(cfg, per_subject=1))
    stack = MiniStack.load(out)
    figures: dict[str, float] = {}
    figures.update(validate_clip(stack.clip.model, data))
    figures.update(validate_vae(stack.vae, data))
    figures.update(validate_unet(stack, data))
    figures.update(validate_vq(stack.vq, data))
    figures.update(validate_sr(stack.sr, data))
    figures.update(validate_identity(stack.identity, data))
    figures = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in figures.items()}
    for k, v in figures.items():
        log(f"  {k}: {v}")
    path = Path(out) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["validation"] = figures
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


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
