"""``train`` and ``sample``: DreamBooth / LoRA fine-tuning (with CDL) and sampling (with QES)."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import protocol
from . import app
from ._common import RESOLUTION_HELP, check_resolution, console, device_option, seed_option

PANEL = "Fine-tune and sample"


@app.command(rich_help_panel=PANEL)
def train(
    out_dir: Path = typer.Argument(..., help="Output folder (model or LoRA, config, log, checkpoints)."),
    model: str = typer.Option(..., help="Base model: a model name (`cloakbench list models`: sd21-base, sd15, mini "
                              "at --resolution 32, tiny for tests), a hub id, a diffusers folder or a single file."),
    instance_dir: Path = typer.Option(..., help="The subject's (protected / purified) images."),
    class_dir: Path = typer.Option(None, help="Class images; filled up to --num-class-images by generation."),
    num_class_images: int = typer.Option(protocol.NUM_CLASS_IMAGES, help="Class images for prior preservation (paper: 200)."),
    prior: bool = typer.Option(True, help="Prior preservation (paper: on, weight 1.0)."),
    lora: bool = typer.Option(False, help="Train LoRA adapters instead of the full UNet + text encoder."),
    lora_rank: int = typer.Option(4, help="LoRA rank."),
    lora_text_encoder: bool = typer.Option(False, help="Also LoRA on the text encoder."),
    cdl: bool = typer.Option(False, help="Contrastive Decoupling Learning prompts."),
    noise: str = typer.Option(protocol.CDL_NOISE, help="CDL noise phrase."),
    new_token: str = typer.Option(None, help="CDL extension: a new lowercase token with a learned embedding."),
    steps: int = typer.Option(protocol.DREAMBOOTH_STEPS, help="Training steps (paper: 1000)."),
    lr: float = typer.Option(None, help=f"Learning rate (default {protocol.LR_FULL:g} full, {protocol.LR_LORA:g} LoRA)."),
    resolution: int = typer.Option(512, help=f"{RESOLUTION_HELP} for training."),
    instance_prompt: str = typer.Option(protocol.INSTANCE_PROMPT),
    class_prompt: str = typer.Option(protocol.CLASS_PROMPT),
    mixed_precision: str = typer.Option("auto", help="auto (bf16 on CUDA as the paper's scripts, fp32 elsewhere), "
                                        "no, bf16 or fp16."),
    latents: str = typer.Option("sample", help="sample: a fresh VAE posterior draw per step (the reference); "
                                "cached: one draw per image."),
    use_8bit_adam: bool = typer.Option(False, "--8bit-adam", help="bitsandbytes AdamW8bit (CUDA only; the paper's)."),
    gradient_checkpointing: bool = typer.Option(False),
    compile_unet: bool = typer.Option(False, "--compile", help="torch.compile the UNet (GPU; first steps compile)."),
    checkpoint_every: int = typer.Option(100, help="Checkpoint every N steps (0: only on interruption)."),
    class_steps: int = typer.Option(protocol.CLASS_IMAGE_STEPS, help="Sampling steps for generated class images."),
    seed: int = seed_option(),
    device: str = device_option(),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in OUT_DIR."),
) -> None:
    """DreamBooth / LoRA fine-tuning with optional CDL; resumable (Ctrl-C saves a checkpoint)."""
    from ..models import load_model
    from ..personalize import CDLPolicy, TrainConfig
    from ..progress import progress_bar
    from ..sample.class_images import cache_dir
    from ..stages.training import class_images, train as run

    cfg = TrainConfig(instance_prompt=instance_prompt, class_prompt=class_prompt, steps=steps, lr=lr, lora=lora,
                      lora_rank=lora_rank, lora_text_encoder=lora_text_encoder, prior_weight=1.0 if prior else 0.0,
                      num_class_images=num_class_images, class_steps=class_steps, resolution=resolution,
                      mixed_precision=mixed_precision, optimizer="adamw8bit" if use_8bit_adam else "adamw", latents=latents,
                      gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every, seed=seed,
                      compile_unet=compile_unet, cdl=CDLPolicy(enabled=cdl, noise=noise, new_token=new_token))
    try:
        cfg.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_resolution(resolution)
    if (out_dir / "personalized.json").exists() and not resume:
        raise typer.BadParameter(f"{out_dir} already holds a trained model", param_hint="OUT_DIR")
    if not instance_dir.is_dir():  # before any class image is generated (minutes of work)
        raise typer.BadParameter(f"{instance_dir} is not a folder", param_hint="--instance-dir")
    if class_dir is not None:
        a, b = instance_dir.resolve(), class_dir.resolve()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise typer.BadParameter(f"{class_dir} and the instance folder {instance_dir} overlap: generated class "
                                     "images would be written among the subject's photos and trained on as the "
                                     "subject; give a separate folder", param_hint="--class-dir")
    base = load_model(model, device=device)
    if prior:
        class_dir = class_dir or cache_dir(base, class_prompt, seed, class_steps, cfg.class_guidance, resolution)
        with progress_bar(console, "steps", transient=True) as bar:
            task = bar.add_task("class images (generated once, then cached)", total=None)
            class_images(base, class_dir, n=num_class_images, prompt=class_prompt, steps=class_steps,
                         resolution=resolution, seed=seed, progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"instance prompt: {cfg.cdl.instance_prompt(instance_prompt)!r}"
                  + (f"; class prompt: {cfg.cdl.class_prompt(class_prompt)!r}" if prior else ""),
                  markup=False, highlight=False)
    with progress_bar(console, "steps", transient=True) as bar:
        task = bar.add_task("training", total=steps)
        result = run(instance_dir, out_dir, model=base, cfg=cfg, class_dir=class_dir if prior else None, resume=resume,
                     progress=lambda s, n, loss: bar.update(task, completed=s, description=f"loss {loss:.4f}"))
    console.print(f"trained {steps} steps (resumed from {result['resumed_from']}) in {result['seconds']:.1f} s "
                  f"-> {out_dir}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def sample(
    out_dir: Path = typer.Argument(..., help="Output folder for PNGs and sample.json."),
    model: str = typer.Option(..., help="A training output folder, a diffusers folder or a hub id ('tiny' for tests)."),
    prompt: list[str] = typer.Option(None, help="Prompt (repeatable); default: the paper's two."),
    n: int = typer.Option(protocol.SAMPLES_PER_PROMPT, "-n", help="Images per prompt (paper: 16)."),
    qes: bool = typer.Option(False, help="Quality-enhanced sampling (negative prompt, 100 steps)."),
    suffix: str = typer.Option(protocol.SAMPLE_SUFFIX, help="When ', without <noise>' is appended to every prompt: "
                               "always (the reference's: every model, CDL-trained or not), cdl+qes (only a CDL-trained "
                               "model sampled with --qes), never."),
    steps: int = typer.Option(None, help="Sampling steps (default 100 with --qes, else 50)."),
    guidance: float = typer.Option(protocol.GUIDANCE),
    negative: str = typer.Option(None, help=f"Negative prompt (QES default {protocol.QES_NEGATIVE!r})."),
    scheduler: str = typer.Option("pndm", help="pndm, ddim or dpm."),
    extra_scale: float = typer.Option(0.0, help="Extra negative guidance on the noise phrase (0: off)."),
    seed: int = seed_option(),
    batch_size: int = typer.Option(4),
    device: str = device_option(),
    dtype: str = typer.Option(None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR whole."),
) -> None:
    """Generate images with our CFG loop; --qes applies the paper's quality-enhanced sampling."""
    from ..progress import progress_bar
    from ..stages.output import check_destination, staged
    from ..stages.sampling import sample as run

    if n < 1:
        raise typer.BadParameter("n must be >= 1", param_hint="-n")
    if suffix not in protocol.SUFFIX_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(protocol.SUFFIX_MODES)}, not {suffix!r}", param_hint="--suffix")
    model_files = sorted(p for p in Path(model).rglob("*") if p.is_file()) if Path(model).is_dir() else []
    check_destination(out_dir, model_files, overwrite=overwrite, record="sample.json")
    prompts = prompt or list(protocol.SAMPLE_PROMPTS)
    with progress_bar(console, "count", transient=True) as bar, staged(out_dir) as work:
        task = bar.add_task("sampling", total=len(prompts) * n)
        record = run(model, work, prompts=prompts, n=n, qes=qes, seed=seed, device=device, dtype=dtype,
                     progress=lambda d, t: bar.update(task, completed=d), steps=steps, guidance=guidance,
                     negative=negative, suffix=suffix, extra_scale=extra_scale, scheduler=scheduler,
                     batch_size=batch_size)
    console.print(f"{len(record['files'])} images -> {out_dir}", markup=False, highlight=False)
