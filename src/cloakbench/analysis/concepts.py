"""M4, concept extraction after fine-tuning (arXiv 2406.18944; docs/PAPER.md §2 prediction 3 and §3 M4).

The paper's claim: after DreamBooth on protected photos, "a photo of sks" (no class noun) renders the
noise pattern, the shortcut the identifier learned; after CDL it renders the identity. The prompts and
settings are those of the reference sampler ``diffshortcut/infer.py``: "a photo of sks", "a photo of sks
person", "a photo of person", 2 x 8 = 16 images each, 100 steps, CFG 7.5, plain prompts (no negative
prompt, no CDL suffix), SD's default scheduler (PNDM), one folder per prompt named
``prompt.lower().replace(",", "").replace(" ", "_")``. The reference code draws unseeded noise; here image
``j`` of *every* prompt uses seed ``seed + j``, so the three rows differ only by their prompt.

Measured per prompt: any metrics of :func:`cloakbench.stages.evaluate` (ISM / verified against clean
references of the identity, quality) and, with a CLIP, M1's concept rates on the samples
(:func:`cloakbench.analysis.misalignment.concept_rates` over "a photo of a <class>" vs "a photo of noise
pattern"): the share of samples CLIP calls the class rather than noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import protocol

STEPS = 100  # diffshortcut/infer.py: num_inference_steps=100
GUIDANCE = 7.5  # diffshortcut/infer.py: guidance_scale=7.5
N = 16  # diffshortcut/infer.py: 2 batches of 8 per prompt
NOISE_CONCEPT = "a photo of noise pattern"  # M1's default noise text (docs/PAPER.md §3)


def concept_prompts(subject: str = protocol.CLASS_WORD, identifier: str = protocol.IDENTIFIER) -> list[str]:
    """``["a photo of sks", "a photo of sks <subject>", "a photo of <subject>"]`` (infer.py's, for ``person``)."""
    return [f"a photo of {identifier}", f"a photo of {identifier} {subject}", f"a photo of {subject}"]


def folder_name(prompt: str) -> str:
    """infer.py's folder of a prompt: ``"a photo of sks person"`` -> ``a_photo_of_sks_person``."""
    return prompt.lower().replace(",", "").replace(" ", "_")


def image_grid(rows: Sequence[torch.Tensor], columns: int = 8, pad: int = 2) -> torch.Tensor:
    """One ``3 x H' x W'`` image from ``rows`` (each ``n x 3 x H x W`` in [0, 1], one per prompt), each
    row wrapped at ``columns`` images, white ``pad`` px between images."""
    h, w = rows[0].shape[-2:]
    cols = min(columns, max(r.shape[0] for r in rows))
    lines = []
    for r in rows:
        for k in range(0, r.shape[0], cols):
            chunk = list(r[k : k + cols]) + [torch.ones(3, h, w)] * (cols - min(cols, r.shape[0] - k))
            lines.append(torch.cat([torch.nn.functional.pad(x.cpu(), [pad] * 4, value=1.0) for x in chunk], -1))
    return torch.cat(lines, -2)


def extract_concepts(
    model: str | Path,
    out: str | Path,
    *,
    subject: str = protocol.CLASS_WORD,
    identifier: str = protocol.IDENTIFIER,
    n: int = N,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    seed: int = 0,
    references: str | Path | None = None,
    metrics: Sequence[str] = (),
    clip: str | Any | None = None,
    device: str | None = None,
    dtype: str | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Sample ``n`` images of each :func:`concept_prompts` prompt from ``model`` (a training output folder of
    ``cloakbench train`` / the bench's train stage, a diffusers folder, or a model name) into
    ``out/<folder_name>/<jjj>.png``, write ``out/grid.png`` (one row per prompt, wrapped at 8) and
    ``out/concepts.json``; returns that record.

    ``metrics``: names for :func:`cloakbench.stages.evaluate` (those that need references need
    ``references``, a folder of clean photos, read at the samples' size). ``clip``: a CLIP (name, folder,
    ``"mini"`` or a :class:`~cloakbench.models.clip.Clip`) for the concept rates; None skips them.
    ``dtype``: None runs bf16 on CUDA, fp32 on CPU.
    """
    from ..images import save_images, to_pil
    from ..models import load_clip, load_model
    from ..models.device import default_dtype, parse_dtype
    from ..personalize import load_personalized, trained_cdl
    from ..sample import generate
    from ..stages import evaluate, sample_config
    from ..stages.output import write_record
    from .misalignment import concept_rates

    if n < 1 or steps < 1:
        raise ValueError(f"need n >= 1 and steps >= 1, got n={n}, steps={steps}")
    out = Path(out)
    prompts = concept_prompts(subject, identifier)
    cfg = sample_config(trained_cdl(model), qes=False, steps=steps, guidance=guidance, scheduler=scheduler,
                        suffix="never")  # infer.py's prompts as written (DiffShortcut infer.py:50)
    dt = parse_dtype(dtype) if dtype else default_dtype(device)
    if Path(model).is_dir():
        m = load_personalized(model, device=device, dtype=dt)
    else:
        m = load_model(str(model), device=device, dtype=dt)
    clip_model = load_clip(clip) if clip is not None else None
    concepts = (f"a photo of a {subject}", NOISE_CONCEPT)
    record: dict[str, Any] = {"model": str(model), "prompts": prompts, "n": n, "seed": seed, "config": cfg.as_dict(),
                              "dtype": str(dt).replace("torch.", ""),
                              "references": None if references is None else str(references),
                              "concepts": list(concepts) if clip_model is not None else None, "grid": "grid.png",
                              "per_prompt": {}}
    rows = []
    for prompt in prompts:
        images = generate(m, [prompt], n, cfg, seed=seed)  # seed + j for image j: paired across prompts
        folder = out / folder_name(prompt)
        save_images(images, folder, [f"{j:03d}" for j in range(n)])
        rows.append(images)
        entry: dict[str, Any] = {"folder": folder.name, "files": n}
        if metrics:
            ev = evaluate(folder, references, metrics=list(metrics), reference_size=images.shape[-1])
            entry["metrics"] = {r.name: r.value for r in ev.results}
            entry["metric_details"] = ev.as_dict()
        if clip_model is not None:
            entry["concept_rates"] = concept_rates(clip_model, clip_model.image_features(images), concepts)
        record["per_prompt"][prompt] = entry
    to_pil(image_grid(rows)[None])[0].save(out / "grid.png")
    record["grid_lines_per_prompt"] = math.ceil(n / min(8, n))  # prompts top to bottom, in the order of "prompts"
    write_record(out, "concepts.json", record)
    return record
