"""``cloakbench mini train``: train every mini model from scratch on the procedural world.

Seeded and reproducible on one CPU type (same seed, torch build, thread count and CPU model -> the same
weights and validation figures; across CPU models, float kernels round differently and the weights
differ after the first model, with validation figures within a few points: benchmarks/README.md, the
manifest records the CPU and a fingerprint of its float kernels, and the run says first whether they round as
the shipped weights' machine did and last, per model, whether the bytes came out the same: :mod:`.repro`).
Each model draws from its own random stream (:class:`.data.Stream`, seeded by the
seed and the model's name), so one model retrained alone is the same as in the full run. Budgets are in
optimizer steps (:data:`.data.FULL`), most of them the UNet's; the full run's time depends on the machine:
80.0 min measured (wall, with validation) on a 2-core AMD EPYC Zen 4, 96.2 min on a 2-core Intel Xeon
(benchmarks/README.md);
:data:`.data.QUICK` runs the same code in a minute (tests).

Order: world data -> CLIP (contrastive, with quality words and their negation) -> VAE -> UNet (latent
diffusion with the frozen CLIP text tower, 10 % empty captions, 20 % degraded photos captioned with
their quality word, 15 % clean ones with its negation; most of the budget) -> pixel DDPM (16 px tiles) -> codebook restorer
(VQ on clean photos, warm-started from the VAE, then an encoder that maps degraded photos to clean codes:
CodeFormer's idea) -> SR x2 -> identity encoder.
Each model is validated on the held-out subjects (:mod:`.validate`) and the figures are written to
``manifest.json`` beside the fp16 safetensors.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.mini import nets, world
from ..models.mini.world import CLASS_WORD
from ..models import clip as clip_norm
from .train_data import FULL, Data, MiniTrainConfig
from .repro import compare_folders, kernel_fingerprint, kernel_verdict

OPENAI_MEAN = torch.tensor(clip_norm.OPENAI_MEAN).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor(clip_norm.OPENAI_STD).view(1, 3, 1, 1)


QUALITY_SUFFIX = {"noisy": ", noisy pattern", "blurry": ", blurry"}
NEGATED_SUFFIX = {"noisy": ", without noisy pattern", "blurry": ", without blur"}


def negation(rng: np.random.Generator) -> str:
    """One of :data:`NEGATED_SUFFIX`, drawn with ``rng`` (a clean photo's caption ending)."""
    return NEGATED_SUFFIX[str(rng.choice(sorted(NEGATED_SUFFIX)))]


def caption(idx: int, rng: np.random.Generator, quality: str | None = None) -> str:
    """A caption of subject ``idx``: full (65 %), partial attributes (10 % each) or the class alone (5 %:
    "a photo of a toy", the form of the quality prompts and of DreamBooth's class prompt), with an
    optional quality word."""
    s = world.subject(idx)
    q = f"{quality} " if quality else ""
    r = rng.random()
    if r < 0.65:
        return s.caption(f"a {q}photo of a")
    if r < 0.75:
        return f"a {q}photo of a {s.colour} {CLASS_WORD}"
    if r < 0.85:
        return f"a {q}photo of a {s.shape} {CLASS_WORD}"
    if r < 0.95:
        return f"a {q}photo of a {CLASS_WORD} with {s.accent} {s.pattern}"
    return f"a {q}photo of a {CLASS_WORD}"


def caption_variants(idx: int, quality: str | None = None) -> list[str]:
    """Every caption :func:`caption` can give subject ``idx`` (with one quality word or none)."""
    s, q = world.subject(idx), f"{quality} " if quality else ""
    return [s.caption(f"a {q}photo of a"), f"a {q}photo of a {s.colour} {CLASS_WORD}",
            f"a {q}photo of a {s.shape} {CLASS_WORD}", f"a {q}photo of a {CLASS_WORD} with {s.accent} {s.pattern}",
            f"a {q}photo of a {CLASS_WORD}"]


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


# ------------------------------------------------------------------ CLIP
def clip_caption(idx: int, rng: np.random.Generator, quality: str | None) -> str:
    """A CLIP training caption of subject ``idx``. Clean photo: no quality word, "clean" or "good", and in
    a quarter of them a negated suffix (", without noisy pattern"); degraded photo (``quality`` its word):
    the word or "bad" as prefix, or in a quarter the word's suffix (", noisy pattern"). So the text tower
    reads "without X" as the opposite of "X", which CDL's class prompts and QES's suffix rely on."""
    if quality is None:
        cap = caption(idx, rng, str(rng.choice(["", "clean", "good"])) or None)
        if rng.random() < 0.25:
            cap += negation(rng)
        return cap
    if rng.random() < 0.25:
        return caption(idx, rng) + QUALITY_SUFFIX[quality]
    return caption(idx, rng, quality if rng.random() < 0.5 else "bad")


def train_clip(data: Data, cfg: MiniTrainConfig, log: Callable[[str], None]):
    rs = data.stream("clip")
    from ..models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    clip = nets.build_clip(cfg.seed)
    opt = torch.optim.AdamW(clip.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.clip_steps, 2), pct_start=0.05)
    clip.train()
    for step in range(cfg.clip_steps):
        x, y = rs.batch(112)
        n_deg = 28
        deg, words = world.degrade(x[:n_deg], rs.gen)
        x = torch.cat([deg, x[n_deg:]])
        caps = [clip_caption(int(s), rs.rng, words[i] if i < n_deg else None) for i, s in enumerate(y.tolist())]
        neg, ncaps = rs.negatives(16)
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


# ------------------------------------------------------------------ VAE
def train_vae(data: Data, cfg: MiniTrainConfig, log):
    rs = data.stream("vae")
    vae = nets.build_vae(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.vae_steps, 2), pct_start=0.05)
    vae.train()
    for step in range(cfg.vae_steps):
        x, _ = rs.batch(32)
        # a quarter degraded: SD's VAE has seen noisy web photos, so a perturbation passes through it
        x = torch.cat([world.degrade(x[:8], rs.gen)[0], x[8:]]) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=rs.gen)).sample
        loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
        update(opt, loss, sched=sched)
        report(log, "vae", step, cfg.vae_steps, loss)
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD's 0.18215 idea: scale latents to unit variance
        z = torch.cat([vae.encode(data.x[i : i + 256].float() / 127.5 - 1).latent_dist.mean for i in range(0, min(len(data.x), 2048), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


# ------------------------------------------------------------------ UNet
DEGRADED_FRACTION = 0.2  # of the UNet's photos
NEGATED_FRACTION = 0.15  # of the UNet's clean photos


def unet_caption(idx: int, rng: np.random.Generator, quality: str | None) -> str:
    """A UNet training caption: :func:`caption`; a degraded photo gets its quality word, either as the
    CLIP prefix ("a noisy photo of ...") or as a suffix (", noisy pattern" / ", blurry"); a clean photo
    sometimes (:data:`NEGATED_FRACTION`) a negated one (", without noisy pattern" / ", without blur")."""
    if quality is None:
        if rng.random() < NEGATED_FRACTION:
            return caption(idx, rng) + negation(rng)
        return caption(idx, rng)
    if rng.random() < 0.5:
        return caption(idx, rng, quality)
    return caption(idx, rng) + QUALITY_SUFFIX[quality]


def train_unet(data: Data, cfg: MiniTrainConfig, clip, vae, log):
    """Latent eps-prediction on the world's photos; :data:`DEGRADED_FRACTION` of them degraded
    (:func:`world.degrade`) and captioned with their quality word, as web captions describe noisy
    photos: SD knows what "noisy pattern" looks like, and CDL's noise words and QES's negative
    prompt rely on that prior."""
    rs = data.stream("unet")
    from diffusers import DDPMScheduler

    from ..models.tiny import SD_BETAS
    from ..models.tokenizer import clip_tokenizer

    tok, te = clip_tokenizer(), nets.text_encoder_from(clip)
    sched_ = DDPMScheduler(**SD_BETAS, prediction_type="epsilon", clip_sample=False)
    sf = float(vae.config.scaling_factor)
    n_deg = max(1, int(len(data.x) * DEGRADED_FRACTION)) if cfg.unet_steps > 0 else 0
    deg_idx = torch.from_numpy(rs.rng.choice(len(data.x), n_deg, replace=False))
    deg_x, deg_words = world.degrade(data.x[deg_idx].float() / 255, rs.gen)
    photos = torch.cat([data.x.float() / 255, deg_x])
    subjects_of = torch.cat([data.y, data.y[deg_idx]])
    words = [None] * len(data.x) + deg_words
    with torch.no_grad():
        dists = [vae.encode(photos[i : i + 256] * 2 - 1).latent_dist for i in range(0, len(photos), 256)]
    mean, std = torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])
    # every caption the sampler can draw, encoded once by the frozen text tower (77 tokens, as SD)
    subjects = sorted(set(data.y.tolist()))
    texts = {""} | {c for s in subjects for c in caption_variants(s)}
    for w in QUALITY_SUFFIX:
        texts |= {c for s in subjects for c in caption_variants(s, w)}
        for suffix in (QUALITY_SUFFIX[w], NEGATED_SUFFIX[w]):
            texts |= {c + suffix for s in subjects for c in caption_variants(s)}
    texts = sorted(texts)
    index = {c: i for i, c in enumerate(texts)}
    with torch.no_grad():
        states = torch.cat([te(tokenize(tok, texts[i : i + 256]))[0] for i in range(0, len(texts), 256)])
    unet = nets.build_unet(cfg.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=8e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 8e-4, total_steps=max(cfg.unet_steps, 2), pct_start=0.05)
    alphas = sched_.alphas_cumprod
    unet.train()
    for step in range(cfg.unet_steps):
        n = 64
        n_d = int(rs.rng.binomial(n, DEGRADED_FRACTION))
        idx = torch.cat([torch.from_numpy(rs.rng.integers(0, len(data.x), n - n_d)),
                         torch.from_numpy(len(data.x) + rs.rng.integers(0, n_deg, n_d))])
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=rs.gen)) * sf
        caps = [unet_caption(int(subjects_of[i]), rs.rng, words[i]) if rs.rng.random() > 0.1 else "" for i in idx]
        cond = states[torch.tensor([index[c] for c in caps])]
        t = torch.randint(0, 1000, (len(idx),), generator=rs.gen)
        eps = torch.randn(z.shape, generator=rs.gen)
        a = alphas[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a.sqrt() * z + (1 - a).sqrt() * eps, t, cond).sample, eps)
        update(opt, loss, sched=sched, clip=unet.parameters())
        report(log, "unet", step, cfg.unet_steps, loss)
    unet.eval().requires_grad_(False)
    return unet


# ------------------------------------------------------------------ pixel DDPM (GrIDPure tiles)
def train_pixel(data: Data, cfg: MiniTrainConfig, log):
    rs = data.stream("pixel")
    from diffusers import DDPMScheduler

    unet = nets.build_pixel_unet(cfg.seed)
    sched_ = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.pixel_steps, 2), pct_start=0.05)
    unet.train()
    for step in range(cfg.pixel_steps):
        x, _ = rs.batch(64)
        oy, ox = (int(v) for v in rs.rng.integers(0, 17, 2))
        x = x[..., oy : oy + 16, ox : ox + 16] * 2 - 1
        t = torch.randint(0, 1000, (len(x),), generator=rs.gen)
        eps = torch.randn(x.shape, generator=rs.gen)
        loss = F.mse_loss(unet(sched_.add_noise(x, eps, t), t).sample, eps)
        update(opt, loss, sched=sched)
        report(log, "pixel ddpm", step, cfg.pixel_steps, loss)
    return unet.eval().requires_grad_(False), sched_


# ------------------------------------------------------------------ codebook restorer
def init_vq_from_vae(vq, vae, x: torch.Tensor, gen: torch.Generator) -> None:
    """Warm-start the codebook model from the trained VAE (the same diffusers encoder and decoder
    blocks): encoder, ``quant_conv`` and decoder body are copied; the VAE's 4 latent-mean channels become
    the first 4 of the 8 code channels and the decoder reads only those at first; the codebook starts
    at the encoder features of the photos ``x`` (B x 3 x 32 x 32 in [0, 1]), drawn with ``gen``.

    Why (the figures with and without it: benchmarks/README.md, "Mini stack: architecture choices"):
    from scratch the restorer's outputs lose the subject's identity."""
    src, dst = vae.state_dict(), vq.state_dict()
    with torch.no_grad():
        for k, v in src.items():
            if dst[k].shape == v.shape:
                dst[k].copy_(v)
        dst["post_quant_conv.weight"].zero_()
        dst["post_quant_conv.bias"].zero_()
        dst["post_quant_conv.weight"][:4, :4] = src["post_quant_conv.weight"]
        dst["post_quant_conv.bias"][:4] = src["post_quant_conv.bias"]
        dst["decoder.conv_in.weight"].zero_()
        dst["decoder.conv_in.weight"][:, :4] = src["decoder.conv_in.weight"]
        h = vq.encode(x * 2 - 1).latents
        h = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        codes = vq.quantize.embedding.weight
        codes.copy_(h[torch.randint(0, len(h), (len(codes),), generator=gen)])


def train_vq(data: Data, cfg: MiniTrainConfig, vae, log):
    import copy

    rs = data.stream("vq")
    vq = nets.build_vq(cfg.seed)
    init_vq_from_vae(vq, vae, rs.batch(64)[0], rs.gen)
    codes = vq.quantize.embedding.weight
    opt = torch.optim.AdamW(vq.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=max(cfg.vq_steps, 2), pct_start=0.05)
    usage = torch.zeros(len(codes))
    vq.train()
    for step in range(cfg.vq_steps):  # stage 1: the codebook prior of clean photos
        x, _ = rs.batch(32)
        x = x * 2 - 1
        h = vq.encode(x).latents
        quant, commit, (_, _, idx) = vq.quantize(h)
        loss = (vq.decode(quant, force_not_quantize=True).sample - x).abs().mean() + commit
        update(opt, loss, sched=sched)
        usage += torch.bincount(idx.flatten(), minlength=len(codes))
        if step % 20 == 19 and step < cfg.vq_steps - 40:  # restart dead codes on this batch's features
            dead = (usage == 0).nonzero()[:, 0]
            feats = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
            pick = torch.randint(0, len(feats), (len(dead),), generator=rs.gen)
            with torch.no_grad():
                codes[dead] = feats[pick]
            usage.zero_()
        report(log, "vq", step, cfg.vq_steps, loss)
    # stage 2 (CodeFormer's code prediction): the encoder learns to map degraded photos onto the codes a
    # frozen copy of itself gives the clean photo; codebook and decoder stay frozen, so outputs stay on
    # the clean-photo manifold.
    teacher = copy.deepcopy(vq).eval().requires_grad_(False)
    for m in (vq.quantize, vq.post_quant_conv, vq.decoder):
        m.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vq.parameters() if p.requires_grad], lr=5e-4)
    for step in range(cfg.vq_restore_steps):
        x, _ = rs.batch(32)
        deg, _ = world.degrade(x, rs.gen)
        with torch.no_grad():
            target = teacher.encode(x * 2 - 1).latents
        h = vq.encode(deg * 2 - 1).latents
        rec = vq.decode(h).sample
        loss = (rec - (x * 2 - 1)).abs().mean() + F.mse_loss(h, target)
        update(opt, loss)
        report(log, "vq restore", step, cfg.vq_restore_steps, loss)
    return vq.eval().requires_grad_(False)


# ------------------------------------------------------------------ SR x2
def train_sr(data: Data, cfg: MiniTrainConfig, log):
    rs = data.stream("sr")
    sr = nets.build_sr(cfg.seed)
    opt = torch.optim.AdamW(sr.parameters(), lr=2e-3)
    sr.train()
    for step in range(cfg.sr_steps):
        x, _ = rs.batch(64)
        loss = (sr(world.downsample(x, 16)) - x).abs().mean()
        update(opt, loss)
        report(log, "sr", step, cfg.sr_steps, loss)
    return sr.eval().requires_grad_(False)


# ------------------------------------------------------------------ identity encoder
def train_identity(data: Data, cfg: MiniTrainConfig, log):
    rs = data.stream("identity")
    classes = {s: i for i, s in enumerate(world.train_subjects())}
    net = nets.build_identity(cfg.seed, len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=max(cfg.id_steps, 2), pct_start=0.05)
    net.train()
    for step in range(cfg.id_steps):
        x, y = rs.batch(96)
        x = world.mild(x, rs.gen)  # blur and sensor noise, as a face encoder's augmentation; no protection-like noise
        neg, _ = rs.negatives(24)
        emb, toy = net(torch.cat([x, neg]))
        target = torch.tensor([classes[int(s)] for s in y])
        cos = emb[: len(x)] @ F.normalize(net.classes, dim=-1).T
        logits = 24.0 * (cos - 0.25 * F.one_hot(target, cos.shape[1]))  # CosFace margin
        is_toy = torch.cat([torch.ones(len(x)), torch.zeros(len(neg))])
        loss = F.cross_entropy(logits, target) + F.binary_cross_entropy_with_logits(toy, is_toy)
        update(opt, loss, sched=sched)
        report(log, "identity", step, cfg.id_steps, loss)
    return net.eval().requires_grad_(False)


# ------------------------------------------------------------------ all
def _as_shipped(model):
    """Round a trained model's floating tensors to fp16 and back, in place: the later models of the run
    then train on exactly the weights that are saved, so retraining one model alone on the saved others
    (``only=``) gives the same result as the full run."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def cpu_name() -> str:
    """The CPU model and the kernels torch dispatches to (float results, hence weights, depend on both)."""
    info = Path("/proc/cpuinfo")
    first = info.read_text().split("\n\n")[0] if info.exists() else ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model "
            f"{fields.get('model', '?')}); torch {torch.backends.cpu.get_cpu_capability()}")


def train_all(out: str | Path, cfg: MiniTrainConfig = FULL, log: Callable[[str], None] = print,
              only: list[str] | None = None, base: str | Path | None = None) -> dict:
    """Train every mini model into ``out`` (fp16 safetensors + ``manifest.json``); returns the manifest.

    ``only``: train just these models and take the others from ``base`` (a saved weights folder, default
    the shipped one); thanks to the per-model streams and :func:`_as_shipped` the result equals the full run.
    ``base`` (default the shipped folder) is also the reference: the log says first whether this machine's
    float kernels round as its maker's did (:mod:`.repro`) and, when ``out`` is another folder and the budget
    is the same, last whether each model's bytes equal the reference's (``same_bytes_as_reference``).
    """
    from ..models.mini.stack import PARTS, MiniStack, save_all, weights_dir
    from .validate import validate_saved

    bad = sorted(set(only or []) - set(PARTS))
    if bad:
        raise ValueError(f"unknown mini model(s) {bad}: choose from {list(PARTS)}")
    ref = Path(base or weights_dir())
    ref_manifest = json.loads((ref / "manifest.json").read_text()) if (ref / "manifest.json").is_file() else {}
    kernels = kernel_fingerprint()
    log(kernel_verdict(kernels, ref_manifest) + f" ({ref})")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    prev = None
    if only:
        prev = MiniStack.load(base or weights_dir())
        timings = dict(prev.manifest.get("timings_s", {}))

    def say(msg: str) -> None:  # timestamps in the training log
        log(f"[{time.perf_counter() - t0:7.1f} s] {msg}")

    def timed(name: str, fn, *args):
        if prev is not None and name not in only:
            return getattr(prev, name) if name != "clip" else prev.clip.model
        t = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"{name}: {timings[name]:.0f} s")
        return _as_shipped(result)

    data = Data(cfg)
    timings["data"] = round(time.perf_counter() - t0, 1)
    clip = timed("clip", train_clip, data, cfg, say)
    vae = timed("vae", train_vae, data, cfg, say)  # a loaded VAE has its scaling factor from the manifest
    unet = timed("unet", train_unet, data, cfg, clip, vae, say)
    pixel = timed("pixel", lambda *a: train_pixel(*a)[0], data, cfg, say)
    vq = timed("vq", train_vq, data, cfg, vae, say)
    sr = timed("sr", train_sr, data, cfg, say)
    ident = timed("identity", train_identity, data, cfg, say)
    models = {"clip": clip, "vae": vae, "unet": unet, "pixel": pixel, "vq": vq, "sr": sr, "identity": ident}
    manifest = {"config": asdict(cfg), "timings_s": timings, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "cpu": cpu_name(), "kernels": kernels,
                "prediction_type": "epsilon", "train_seconds": round(sum(timings.values()), 1)}
    if only:
        manifest["retrained_alone"] = sorted(only)
    save_all(models, out, manifest)
    manifest = validate_saved(out, data, log, cfg)
    if ref_manifest and Path(out).resolve() != ref.resolve() and ref_manifest.get("config") == asdict(cfg):
        diff = compare_folders(out, ref)
        for name, (n, total) in diff.items():
            log(f"{name}: " + ("same bytes as " if n == 0 else f"{n} of {total} values differ from ") + str(ref))
        manifest["same_bytes_as_reference"] = {name: n == 0 for name, (n, _) in diff.items()}
        (Path(out) / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
