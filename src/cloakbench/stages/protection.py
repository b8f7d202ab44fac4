"""The protect stage: one protection over a set of images; budgets measured on the saved 8-bit PNGs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


from .. import protocol
from ..errors import InputError
from ..images import (
    DEFAULT_MIN_SIZE,
    format_budget,
    perturbation_norms,
    read_images,
    save_images,
)
from .output import unique_stems, write_record


def load_surrogates(models: str | Sequence[str], *, device: str | None = None, dtype: str = "fp32",
                    gradient_checkpointing: bool = False) -> list:
    """Surrogate :class:`~cloakbench.models.DiffusionModel` s from names (``"a,b"`` or a list: an ensemble)."""
    from ..models import load_model

    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    loaded = [load_model(m, device=device, dtype=dtype) for m in names]
    if gradient_checkpointing:
        for m in loaded:
            m.unet.enable_gradient_checkpointing()
    return loaded


def protect(
    inputs: str | Path | Sequence[Path],
    out: Path,
    *,
    method: str,
    surrogates: list,
    eps: float | None = None,
    steps: int | None = None,
    prompt: str = protocol.INSTANCE_PROMPT,
    class_prompt: str = protocol.CLASS_PROMPT,
    options: dict[str, Any] | None = None,
    resolution: int = 512,
    seed: int = 0,
    class_dir: str | Path | None = None,
    surrogate_images: str | Path | Sequence[Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Protect the images of ``inputs`` (a folder or files) with ``method`` against ``surrogates``.

    Writes ``out/<stem>.png`` (protected), ``out/clean/<stem>.png`` (the resized crops that were
    protected) and ``out/protection.json``; returns that record. ``eps`` is in [0, 1] units (k/255),
    ``None`` keeps the method's default; the measured L-inf / L2 (k/255) compare the saved PNGs.
    ``prompt`` / ``class_prompt`` are the mimic's prompts the objective uses (Anti-DreamBooth's).
    ``class_dir``: the prior-preservation images of surrogate training (every image in the folder);
    ``surrogate_images``: the protector's own clean photos (Anti-DreamBooth's set_A) that surrogates train on,
    for the methods that take them (``clean_images``: ASPL family, FSMG); the record says whether they were used.
    """
    from ..protect import create_protection

    overrides = {k: v for k, v in {"eps": eps, "steps": steps}.items() if v is not None}
    prot = create_protection(method, **{**overrides, "prompt": prompt, "class_prompt": class_prompt, **(options or {})})
    limit = min(DEFAULT_MIN_SIZE, resolution)
    class_images = read_images(class_dir, resolution, min_size=limit).images if class_dir is not None else None
    used_a = None
    if surrogate_images is not None:
        files = read_images(surrogate_images, resolution, min_size=limit)
        used_a = "clean_images" in type(prot).options
        if used_a:
            prot.clean_images = files.images
        surrogate_images = [str(p) for p in files.paths]
    if len(surrogates) < prot.min_models:
        raise InputError(f"{method} is an ensemble protection: it needs {prot.min_models} or more surrogate models, "
                         f"got {len(surrogates)} (CLI: --model a,b; bench: protections[].models)")
    loaded = read_images(inputs, resolution, min_size=limit)
    names = unique_stems(loaded.paths)
    if progress is not None:
        prot.progress = progress
    t0 = time.perf_counter()
    adv = prot(loaded.images, surrogates if len(surrogates) > 1 else surrogates[0], seed=seed,
               class_images=class_images)
    seconds = time.perf_counter() - t0

    save_images(loaded.images, out / "clean", names)
    save_images(adv, out, names)
    d = perturbation_norms(read_images([out / "clean" / f"{n}.png" for n in names], None, min_size=None).images,
                           read_images([out / f"{n}.png" for n in names], None, min_size=None).images)
    record = {
        "method": prot.name, "paper": prot.paper, "config": prot.config(), "seed": seed, "steps": prot.steps,
        "resolution": resolution, "seconds": seconds, "seconds_per_image": seconds / len(names),
        "eps_nominal": prot.eps, "eps_nominal_255": format_budget(prot.eps),
        "measured": {"linf_255": d.linf_255.tolist(), "l2_255": d.l2_255.tolist(), **d.summary()},
        "files": {n + ".png": {"linf_255": float(a), "l2_255": float(b)} for n, a, b in zip(names, d.linf_255, d.l2_255)},
        "sources": [str(p) for p in loaded.paths], "class_images": 0 if class_images is None else len(class_images),
        "surrogate_images": surrogate_images, "surrogate_images_used": used_a, **(extra or {}),
    }
    write_record(out, "protection.json", record)
    return record


def external_pairs(clean: Sequence[Path], folder: Path) -> list[tuple[Path, Path]]:
    """Pair each clean training image with its protected version in ``folder`` by file stem (any image suffix:
    ``03.jpg`` -> ``03.png``); raise :class:`InputError` naming the folder and every clean file without one."""
    from ..images import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise InputError(f"{folder}: no folder of protected images for this identity")
    found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [c.name for c in clean if c.stem not in found]
    if missing:
        raise InputError(f"{folder}: no protected file for {', '.join(missing)} (paired by name, any image suffix)")
    return [(c, found[c.stem]) for c in clean]


def external(clean: Sequence[Path], protected: Sequence[Path], out: Path, *, resolution: int = 512) -> dict[str, Any]:
    """Bring images protected elsewhere (Glaze, an app, another paper's code) into a grid as a protection.

    ``protected[i]`` is the protected version of ``clean[i]`` (:func:`external_pairs`). The budget is measured
    on the files as given, in 8 bits at their own size (``measured``: what the protector shipped), and again on
    the ``resolution`` crops the victim trains on (``measured_at_resolution``). Writes ``out/<stem>.png`` (the
    protected crops), ``out/clean/<stem>.png`` and ``out/protection.json``, as :func:`protect` does."""
    clean, protected = list(clean), list(protected)
    if len(clean) != len(protected):
        raise InputError(f"{len(clean)} clean and {len(protected)} protected images: they pair one to one")
    per_file = {}
    for c, p in zip(clean, protected):
        a, b = read_images([c], None, min_size=None).images, read_images([p], None, min_size=None).images
        if a.shape != b.shape:
            raise InputError(f"{p}: {b.shape[-1]}x{b.shape[-2]}, its clean image {c} is {a.shape[-1]}x{a.shape[-2]}")
        d = perturbation_norms(a, b)
        per_file[p.name] = {"clean": str(c), "linf_255": float(d.linf_255[0]), "l2_255": float(d.l2_255[0])}
    linf = [v["linf_255"] for v in per_file.values()]
    l2 = [v["l2_255"] for v in per_file.values()]
    names = unique_stems(clean)
    save_images(read_images(clean, resolution, min_size=None).images, out / "clean", names)
    save_images(read_images(protected, resolution, min_size=None).images, out, names)
    d = perturbation_norms(read_images([out / "clean" / f"{n}.png" for n in names], None, min_size=None).images,
                           read_images([out / f"{n}.png" for n in names], None, min_size=None).images)
    record = {
        "method": "external", "paper": None, "config": {"files": [str(p) for p in protected]}, "seed": None,
        "steps": None, "resolution": resolution, "seconds": 0.0, "seconds_per_image": 0.0,
        "eps_nominal": None, "eps_nominal_255": None,
        "measured": {"linf_255": linf, "l2_255": l2, "linf_max": max(linf) / 255, "linf_max_255": max(linf),
                     "l2_mean": sum(l2) / len(l2) / 255, "l2_mean_255": sum(l2) / len(l2)},
        "measured_at_resolution": {"linf_255": d.linf_255.tolist(), "l2_255": d.l2_255.tolist(), **d.summary()},
        "files": per_file, "sources": [str(p) for p in clean], "class_images": 0,
        "surrogate_images": None, "surrogate_images_used": None,
    }
    write_record(out, "protection.json", record)
    return record
