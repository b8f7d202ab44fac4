"""The sample stage: images of a (personalized) model, plain or with quality-enhanced sampling (QES)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import protocol
from ..images import save_images
from .output import write_record


def use_suffix(mode: str | bool | None, cdl_trained: bool, qes: bool) -> bool:
    """Whether sampling appends ", without <noise>" to every prompt. ``mode``: ``"always"`` (the reference's,
    DiffShortcut train_dreambooth.py:514; the default, ``None``), ``"cdl+qes"`` (only a CDL-trained model
    sampled with QES: cloakbench before #31), ``"never"``; ``True`` / ``False`` stand for always / never."""
    mode = protocol.SAMPLE_SUFFIX if mode is None else {True: "always", False: "never"}.get(mode, mode)
    if mode not in protocol.SUFFIX_MODES:
        raise ValueError(f"suffix must be one of {', '.join(protocol.SUFFIX_MODES)} (got {mode!r})")
    return mode == "always" or (mode == "cdl+qes" and cdl_trained and qes)


def sample_config(cdl=None, *, qes: bool = False, steps: int | None = None, guidance: float = protocol.GUIDANCE,
                  negative: str | None = None, suffix: str | bool | None = None, extra_scale: float = 0.0,
                  scheduler: str | None = None, batch_size: int | None = None):
    """The :class:`~cloakbench.sample.SampleConfig` of a model trained with ``cdl`` (a
    :class:`~cloakbench.personalize.CDLPolicy`). ``qes``: the paper's QES (negative prompt, 100 PNDM
    steps; docs/PAPER.md §6), else plain sampling (50 steps). ``suffix``: when ", without <noise>" is
    appended (:func:`use_suffix`; by default to every prompt, as the reference); ``negative`` replaces the
    negative prompt."""
    from ..personalize import CDLPolicy
    from ..sample import SampleConfig, qes_config

    cdl = cdl or CDLPolicy()
    on = use_suffix(suffix, cdl.enabled, qes)
    if qes:
        cfg = qes_config(cdl, suffix=on, steps=steps or protocol.QES_STEPS, guidance=guidance, extra_scale=extra_scale)
        if negative is not None:
            cfg.negative_prompt = negative
    else:
        cfg = SampleConfig(steps=steps or protocol.PLAIN_SAMPLE_STEPS, guidance=guidance, negative_prompt=negative or "",
                           suffix=cdl.sample_prompt("") if on else "",
                           extra_prompt=cdl.noise if extra_scale else None, extra_scale=extra_scale)
    if scheduler is not None:
        cfg.scheduler = scheduler
    if batch_size is not None:
        cfg.batch_size = batch_size
    return cfg


def sample(
    model: str | Path,
    out: Path,
    *,
    prompts: Sequence[str] = protocol.SAMPLE_PROMPTS,
    n: int = protocol.SAMPLES_PER_PROMPT,
    qes: bool = False,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """``n`` images per prompt from ``model`` (a training output folder, a diffusers folder, a hub id,
    ``tiny`` or ``mini``) into ``out/p<i>-<jjj>.png``, image ``k`` seeded ``seed + k``; the CDL policy
    of a training output is read from its ``personalized.json``. ``dtype``: None runs bf16 on CUDA and fp32
    on CPU (:func:`~cloakbench.models.device.default_dtype`). ``config``: :func:`sample_config`'s
    keywords. Writes and returns ``sample.json``."""
    from ..models import load_model
    from ..models.device import default_dtype, parse_dtype
    from ..personalize import load_personalized, trained_cdl
    from ..sample import generate

    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    prompts = list(prompts)
    cfg = sample_config(trained_cdl(model), qes=qes, **config)
    trained = Path(model).is_dir()
    dt = parse_dtype(dtype) if dtype else default_dtype(device)
    m = load_personalized(model, device=device, dtype=dt) if trained else load_model(str(model), device=device, dtype=dt)
    images = generate(m, prompts, n, cfg, seed=seed, progress=progress)
    names = [f"p{i}-{j:03d}" for i in range(len(prompts)) for j in range(n)]
    save_images(images, out, names)
    record = {"model": str(model), "prompts": prompts, "n": n, "seed": seed, "qes": qes, "config": cfg.as_dict(),
              "dtype": str(dt).replace("torch.", ""),
              "files": {f"{nm}.png": {"prompt": prompts[k // n] + cfg.suffix, "seed": seed + k}
                        for k, nm in enumerate(names)}}
    write_record(out, "sample.json", record)
    return record
