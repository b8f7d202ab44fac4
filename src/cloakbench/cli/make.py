"""``protect`` and ``purify``: make protected or purified copies of a folder of images."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import protocol
from . import app
from ._common import RESOLUTION_HELP, check_resolution, console, device_option, inputs, parse_options, seed_option

PANEL = "Make images"


@app.command(rich_help_panel=PANEL)
def protect(
    in_dir: Path = typer.Argument(..., help="Folder of clean images."),
    out_dir: Path = typer.Argument(..., help="Output folder: protected PNGs, clean/ and protection.json."),
    method: str = typer.Option(..., "--method", "-m", help="Protection name (`cloakbench list protections`), or "
                               "module:Class / file.py:Class."),
    model: str = typer.Option(..., help="Surrogate: a model name (`cloakbench list models`: sd21-base, sd15, mini "
                              "at --resolution 32, tiny for tests), a hub id or a diffusers folder; comma-separate an "
                              "ensemble."),
    eps: str = typer.Option(None, help="Budget in [0, 1] units: 8/255 or 0.0314 (default: the method's)."),
    steps: int = typer.Option(None, help="Number of perturbation updates (default: the method's)."),
    resolution: int = typer.Option(512, help=f"{RESOLUTION_HELP}, divisible by 8."),
    prompt: str = typer.Option(protocol.INSTANCE_PROMPT, help="Instance prompt of the surrogate objective."),
    class_prompt: str = typer.Option(protocol.CLASS_PROMPT, help="Class prompt of the surrogate objective."),
    seed: int = seed_option(),
    option: list[str] = typer.Option(None, "--option", "-o", help="Method option KEY=VALUE (repeatable)."),
    class_dir: Path = typer.Option(None, help="Class images for prior preservation of surrogate training."),
    surrogate_dir: Path = typer.Option(None, "--surrogate-dir", help="The protector's own clean photos the "
                                       "surrogates train on (Anti-DreamBooth's set_A; default: the inputs)."),
    device: str = device_option(),
    dtype: str = typer.Option("fp32", help="Surrogate dtype (fp32, bf16, fp16); the perturbation stays fp32."),
    gradient_checkpointing: bool = typer.Option(False, help="Trade compute for GPU memory in the UNet."),
    overwrite: bool = typer.Option(False, help="Replace an existing protection in OUT_DIR."),
) -> None:
    """Protect every image of IN_DIR with one method; write PNGs, clean/ and protection.json (measured budget)."""
    from ..images import format_budget, parse_budget
    from ..progress import progress_bar
    from ..protect import create_protection
    from ..stages.output import check_destination, staged
    from ..stages.protection import load_surrogates, protect as run

    # every check before any work
    try:
        budget = parse_budget(eps) if eps is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--eps") from None
    overrides = {k: v for k, v in {"eps": budget, "steps": steps}.items() if v is not None}
    try:
        create_protection(method, **overrides, **parse_options(option))  # unknown names and options fail here
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--option") from None
    check_resolution(resolution)
    if steps is not None and steps < 1:
        raise typer.BadParameter("steps must be >= 1", param_hint="--steps")
    if surrogate_dir is not None and not surrogate_dir.is_dir():
        raise typer.BadParameter(f"{surrogate_dir} is not a folder", param_hint="--surrogate-dir")
    files = inputs(in_dir)
    check_destination(out_dir, files, overwrite=overwrite, record="protection.json")
    surrogates = load_surrogates(model, device=device, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
    with progress_bar(console, "steps", transient=True) as bar, staged(out_dir) as work:
        task = bar.add_task(f"{method} on {in_dir}", total=steps)
        record = run(files or in_dir, work, method=method, surrogates=surrogates, eps=budget, steps=steps,
                     prompt=prompt, class_prompt=class_prompt, options=parse_options(option),
                     resolution=resolution, seed=seed, class_dir=class_dir, surrogate_images=surrogate_dir,
                     progress=lambda done, total: bar.update(task, completed=done, total=total),
                     extra={"model": model, "dtype": dtype, "input": str(in_dir)})
    m = record["measured"]
    console.print(f"{record['method']}: {len(record['files'])} images, {record['seconds']:.1f} s; measured L-inf "
                  f"{m['linf_max_255']:.0f}/255 (nominal {format_budget(record['eps_nominal'])}), "
                  f"mean L2 {m['l2_mean_255']:.1f}/255 -> {out_dir}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def purify(
    in_dir: Path = typer.Argument(..., help="Folder of (protected) images."),
    out_dir: Path = typer.Argument(..., help="Output folder: purified PNGs and purification.json."),
    method: str = typer.Option(..., "--method", "-m", help="Purifier name, or a '+' composition (codeformer+realesrgan)."),
    model: str = typer.Option(None, help="Model option of the purifier (SD id, upscaler id, pixel DDPM folder)."),
    weights: str = typer.Option(None, help="Restoration / SR checkpoint (weights-manager name or path)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Purifier option KEY=VALUE (repeatable)."),
    resolution: int = typer.Option(512, help=f"{RESOLUTION_HELP} (0 keeps sizes)."),
    seed: int = seed_option(),
    device: str = device_option(),
    dtype: str = typer.Option(None, help="Diffusion model dtype: fp32, bf16, fp16 (default: the reference's half "
                              "precision on CUDA, fp32 on CPU)."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable or too-small files (listed) instead of stopping."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR whole."),
) -> None:
    """Purify every image of IN_DIR (outputs at the input size); write PNGs and purification.json
    (config, seconds per image, device; PSNR / SSIM / LPIPS against IN_DIR/clean when present)."""
    from ..stages.output import check_destination, staged
    from ..stages.purification import purify as run

    check_resolution(resolution, keep_allowed=True)
    files = inputs(in_dir)
    check_destination(out_dir, files, overwrite=overwrite, record="purification.json")
    options = parse_options(option)
    options.update({k: v for k, v in {"model": model, "weights": weights}.items() if v is not None})
    clean = sorted((in_dir / "clean").glob("*.png")) if (in_dir / "clean").is_dir() else None
    with console.status(f"{method} on {in_dir}"), staged(out_dir) as work:
        record = run(files or in_dir, work, method=method, options=options, resolution=resolution or None,
                     seed=seed, device=device, dtype=dtype, clean=clean, skip_bad=skip_bad,
                     extra={"input": str(in_dir)})
    if record["skipped"]:
        console.print(f"[yellow]skipped {len(record['skipped'])} bad file(s): "
                      f"{', '.join(Path(p).name for p in record['skipped'])}[/yellow]")
    console.print(f"{method}: {len(record['files'])} images, {record['seconds_per_image']:.2f} s / image -> {out_dir}",
                  markup=False, highlight=False)
