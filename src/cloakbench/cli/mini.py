"""``mini`` (train, export, validate) and ``demo``: the mini stack, the paper's protocol offline on a CPU."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .. import protocol
from . import app
from ._common import console, device_option, seed_option, stage_progress

PANEL = "Mini stack"
MINI_DEVICE = "cpu (the default: the mini stack's figures are CPU bytes), cuda or mps."

mini_app = typer.Typer(help="The mini stack: train its models on the procedural world, check them.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(mini_app, name="mini", rich_help_panel=PANEL)


@mini_app.command("train")
def mini_train(
    out: Path = typer.Option(..., "--out", help="Output folder (the shipped weights are never replaced by a run "
                             "without --out; CLOAKBENCH_MINI_WEIGHTS=OUT uses the new ones)."),
    quick: bool = typer.Option(False, "--quick", help="A one-minute run of the same code (plumbing check)."),
    seed: int = seed_option("Seed of the world and of every model."),
    only: list[str] = typer.Option(None, "--only", help="Train just this model (repeatable: clip vae unet pixel vq sr "
                                   "identity); the others are read from --base. Equals the full run."),
    base: Path = typer.Option(None, "--base", help="Weights folder the --only run takes the other models from "
                              "(default: the shipped one)."),
    threads: int = typer.Option(2, min=1, help="CPU threads; the bytes depend on it (the shipped weights: 2)."),
) -> None:
    """Train every mini model from scratch on the CPU (seeded; 80-100 min on 2 cores) and validate it; with --out,
    say per model whether the bytes equal the reference folder's (--base or the shipped one)."""
    from dataclasses import replace

    import torch
    from rich.markup import escape

    torch.set_num_threads(threads)

    from ..minilab.train_data import FULL, QUICK
    from ..minilab.train import train_all
    from ..models.mini.stack import SHIPPED

    if quick and out.resolve() == Path(SHIPPED).resolve():
        raise typer.BadParameter(f"{out} is the shipped weights folder: a --quick run never replaces them",
                                 param_hint="--out")
    cfg = replace(QUICK if quick else FULL, seed=seed)
    manifest = train_all(out, cfg, log=lambda m: console.print(escape(m)), only=only or None, base=base)
    console.print(f"trained in {manifest['train_seconds']:.0f} s -> {out}", markup=False, highlight=False)


@mini_app.command("export")
def mini_export(
    out: Path = typer.Argument(..., help="New folder: OUT/clean/<subject>/NN.png and OUT/protected/<subject>/NN.png."),
    subjects: str = typer.Option("7,183", help="Mini-world subjects (comma-separated; default: the demo's two)."),
    photos: int = typer.Option(8, min=2, help="Clean photos per subject."),
    train: int = typer.Option(4, min=1, help="How many of them (the first, by name) are protected."),
    protect: str = typer.Option("advdm", help="Protection that makes the protected copy (any protection name)."),
    eps: str = typer.Option("16/255", help="Its L-inf budget (k/255)."),
    steps: int = typer.Option(100, min=1, help="Its PGD updates."),
    seed: int = seed_option(),
    device: str = device_option("cpu", MINI_DEVICE),
) -> None:
    """Mini-world photos and a protected copy, laid out for `cloakbench audit OUT/clean OUT/protected --model mini`
    (the protected copy stands for images made by any tool outside cloakbench)."""
    import shutil
    import tempfile

    import yaml

    from ..images import parse_budget, save_images
    from ..minilab.demo import CONFIG
    from ..models.mini import world
    from ..stages.protection import load_surrogates, protect as run

    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} exists and is not empty: give a new folder", param_hint="OUT")
    ids = [int(x) for x in subjects.split(",") if x.strip()]
    if photos <= train:
        raise typer.BadParameter(f"--photos {photos} must exceed --train {train}: the rest are the references")
    budget = parse_budget(eps)
    subject = yaml.safe_load(CONFIG.read_text())["subject"]
    surrogate = load_surrogates(["mini"], device=device)
    for s in ids:
        name = f"subject{s:03d}"
        clean = out / "clean" / name
        save_images(world.photos(s, photos, seed), clean, [f"{i:02d}" for i in range(photos)])
        with tempfile.TemporaryDirectory() as tmp:
            rec = run(sorted(clean.glob("*.png"))[:train], Path(tmp), method=protect, surrogates=surrogate,
                      eps=budget, steps=steps, prompt=protocol.instance_prompt(subject),
                      class_prompt=protocol.class_prompt(subject), resolution=world.SIZE, seed=seed)
            (out / "protected" / name).mkdir(parents=True, exist_ok=True)
            for png in sorted(Path(tmp).glob("*.png")):
                shutil.copy2(png, out / "protected" / name / png.name)
        console.print(f"{name}: {photos} clean, {train} protected ({protect}, measured L-inf "
                      f"{rec['measured']['linf_max_255']:.0f}/255)", markup=False, highlight=False)
    console.print(f"next: cloakbench audit {out / 'clean'} {out / 'protected'} --model mini --out RUN",
                  markup=False, highlight=False)


@mini_app.command("validate")
def mini_validate(folder: Path = typer.Argument(None, help="Weights folder (default: the shipped one).")) -> None:
    """Recompute the validation figures of saved mini weights (held-out subjects) into manifest.json."""
    from rich.markup import escape

    from ..minilab.validate import validate_saved
    from ..models.mini.stack import weights_dir

    validate_saved(folder or weights_dir(), log=lambda m: console.print(escape(m)))


@app.command(rich_help_panel=PANEL)
def demo(
    out: Path = typer.Option(Path("cloakbench-demo"), "--out", help="Run folder (rerun to resume)."),
    config: Path = typer.Option(None, help="Mini bench YAML (default: the shipped mini-paper.yaml)."),
    full: bool = typer.Option(False, "--full", help="Run mini-eval.yaml: the 8 evaluation subjects x 2 seeds, AdvDM "
                              "and ASPL at the mini default 16/255, CodeSR, CodeSR + CDL and the full red team (about "
                              "1.5 hours on 2 cores)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Stages run at once (default: 2 on a CPU with 2 or "
                                "more cores, else 1); see `cloakbench bench --workers`."),
    device: str = device_option("cpu", MINI_DEVICE),
) -> None:
    """The paper's protocol on the mini stack in minutes on a CPU: gap, recovery, analysis and report.html."""
    from ..minilab.demo import CONFIG, FULL_CONFIG, demo_runner, run_demo, tables

    if full and config is not None:
        raise typer.BadParameter("--full runs the shipped mini-eval.yaml: give --config or --full, not both")
    t0 = time.perf_counter()
    runner = demo_runner(out, config=config or (FULL_CONFIG if full else CONFIG), device=device)
    with stage_progress(runner, transient=True) as tick:
        summary = run_demo(out, progress=tick, workers=workers, runner=runner)
    for table in tables(summary, width=console.width):
        console.print(table)
    console.print(f"stages: ran {summary['stages']['ran']}, skipped {summary['stages']['skipped']}; "
                  f"{time.perf_counter() - t0:.0f} s; report: {summary['report']}", markup=False, highlight=False)
