"""The ``cloakbench`` command line (typer). Each command is a thin layer over the Python API."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import protocol, stages
from .errors import CloakbenchError
from .progress import progress_bar, quiet_libraries

class CleanErrors(typer.core.TyperGroup):
    """Turn the project's own errors (:class:`~cloakbench.errors.CloakbenchError`) and missing files into a
    one-paragraph message and exit code 2, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CloakbenchError, FileNotFoundError) as exc:
            Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=CleanErrors,
    name="cloakbench",
    help="Red-team and benchmark protective perturbations against personalized diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help is plain text: "ism[dlib]" and "cloakbench[parquet]" print as written
)
weights_app = typer.Typer(help="List, fetch and verify external model weights.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(weights_app, name="weights")
console = Console()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # the libraries' own bars would tear our rich progress display
        quiet_libraries()


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    smoke: bool = typer.Option(True, help="Build the tiny model and check its loss and gradient."),
) -> None:
    """Report versions, device, optional backends, weights and test data: what is present and missing."""
    from .doctor import as_json as to_json, run_checks

    checks = run_checks(smoke=smoke)
    if as_json:
        typer.echo(json.dumps(to_json(checks), indent=2))
    else:
        table = Table(title="cloakbench doctor")
        for col in ("group", "check", "status", "detail"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.group, c.name, "[green]ok[/green]" if c.ok else "[yellow]missing[/yellow]",
                          escape(c.detail))  # install hints hold [extras] that rich would read as markup
        console.print(table)
    core_bad = [c.name for c in checks if c.group == "core" and not c.ok]
    if core_bad:
        console.print(f"[red]core problems: {', '.join(core_bad)}[/red]")
        raise typer.Exit(1)


@weights_app.command("list")
def weights_list() -> None:
    """Show every known weight file, its licence, and whether it is present under CLOAKBENCH_HOME."""
    from . import weights

    table = Table(title=f"weights under {weights.home() / 'weights'}")
    for col in ("name", "status", "size", "licence", "used by"):
        table.add_column(col, overflow="fold")
    for spec in weights.list_specs():
        present = weights.is_present(spec.name)
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        # the size is checked here (cheap); the digest by `weights verify` and `weights fetch`
        wrong = present and spec.size and weights.path_of(spec.name).stat().st_size != spec.size
        status = "[red]wrong size[/red]" if wrong else "[green]present[/green]" if present else "[yellow]missing[/yellow]"
        table.add_row(spec.name, status, size, spec.licence, spec.used_by)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Weight names (see `cloakbench weights list`)."),
    force: bool = typer.Option(False, help="Download again even if present."),
    allow_unverified: bool = typer.Option(False, help="Allow entries with no published sha256."),
) -> None:
    """Download weights, verify SHA-256, and move them into place atomically."""
    from . import weights

    failed = False
    for name in names:
        try:
            spec = weights.get_spec(name)
            with progress_bar(console, "download") as progress:
                task = progress.add_task(name, total=spec.size)
                path = weights.fetch(name, force=force, allow_unverified=allow_unverified,
                                     progress=lambda done, total: progress.update(task, completed=done, total=total))
            console.print(f"[green]{name}[/green] -> {path}")
        except (KeyError, weights.WeightError) as exc:
            console.print(f"[red]{name}: {exc}[/red]")
            failed = True
    if failed:
        raise typer.Exit(1)


@weights_app.command("verify")
def weights_verify(names: list[str] = typer.Argument(None, help="Names; default: all present files.")) -> None:
    """Recompute SHA-256 of present files and compare with the registry."""
    from . import weights

    names = names or [s.name for s in weights.list_specs() if weights.is_present(s.name)]
    bad = False
    for name in names:
        try:
            ok = weights.verify(name)
        except (KeyError, weights.WeightError) as exc:
            console.print(f"[red]{name}: {exc}[/red]")
            bad = True
            continue
        console.print(f"{name}: {'[green]ok[/green]' if ok else '[red]CHECKSUM MISMATCH[/red]'}")
        bad |= not ok
    if bad:
        raise typer.Exit(1)


def _parse_options(items: list[str] | None) -> dict:
    """``["rounds=3", "target=/x.png", "using_target=true"]`` -> typed dict (JSON values when they parse)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"option {item!r} is not KEY=VALUE", param_hint="--option")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _inputs(folder: Path) -> list[Path]:
    """The image files of ``folder``, listed once for the destination check and the stage (none when it is not a
    folder of images: the stage, given the folder, says why)."""
    from .images import list_image_files

    try:
        return list_image_files(folder)
    except CloakbenchError:
        return []


@app.command()
def protect(
    in_dir: Path = typer.Argument(..., help="Folder of clean images."),
    out_dir: Path = typer.Argument(..., help="Output folder: protected PNGs, clean/ and protection.json."),
    method: str = typer.Option(..., "--method", "-m", help="Protection name (see --help of `cloakbench protect`)."),
    model: str = typer.Option("tiny", help="Surrogate: hub id, diffusers folder, 'tiny'; comma-separate an ensemble."),
    eps: str = typer.Option(None, help="Budget in [0, 1] units: 8/255 or 0.0314 (default: the method's)."),
    steps: int = typer.Option(None, help="Number of perturbation updates (default: the method's)."),
    resolution: int = typer.Option(512, help="Working resolution (resize + center crop), divisible by 8."),
    prompt: str = typer.Option(protocol.INSTANCE_PROMPT, help="Instance prompt of the surrogate objective."),
    class_prompt: str = typer.Option(protocol.CLASS_PROMPT, help="Class prompt of the surrogate objective."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Method option KEY=VALUE (repeatable)."),
    class_dir: Path = typer.Option(None, help="Class images for prior preservation of surrogate training."),
    dtype: str = typer.Option("fp32", help="Surrogate dtype (fp32, bf16, fp16); the perturbation stays fp32."),
    gradient_checkpointing: bool = typer.Option(False, help="Trade compute for GPU memory in the UNet."),
    overwrite: bool = typer.Option(False, help="Replace an existing protection in OUT_DIR."),
) -> None:
    """Protect every image of IN_DIR with one method; write PNGs, clean/ and protection.json (measured budget)."""
    from .images import format_budget, parse_budget
    from .protect import create_protection
    from .stages.protect import load_surrogates

    # every check before any work
    try:
        budget = parse_budget(eps) if eps is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--eps") from None
    overrides = {k: v for k, v in {"eps": budget, "steps": steps}.items() if v is not None}
    try:
        create_protection(method, **overrides, **_parse_options(option))  # unknown names and options fail here
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--option") from None
    if resolution <= 0 or resolution % 8:
        raise typer.BadParameter(f"resolution {resolution} is not a positive multiple of 8", param_hint="--resolution")
    if steps is not None and steps < 1:
        raise typer.BadParameter("steps must be >= 1", param_hint="--steps")
    inputs = _inputs(in_dir)
    stages.output.check_destination(out_dir, inputs, overwrite=overwrite, record="protection.json")
    surrogates = load_surrogates(model, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
    with progress_bar(console, "steps", transient=True) as bar, stages.output.staged(out_dir) as work:
        task = bar.add_task(f"{method} on {in_dir}", total=steps)
        record = stages.protect(inputs or in_dir, work, method=method, surrogates=surrogates, eps=budget, steps=steps,
                                prompt=prompt, class_prompt=class_prompt, options=_parse_options(option),
                                resolution=resolution, seed=seed, class_dir=class_dir,
                                progress=lambda done, total: bar.update(task, completed=done, total=total),
                                extra={"model": model, "dtype": dtype, "input": str(in_dir)})
    m = record["measured"]
    console.print(f"{record['method']}: {len(record['files'])} images, {record['seconds']:.1f} s; measured L-inf "
                  f"{m['linf_max_255']:.0f}/255 (nominal {format_budget(record['eps_nominal'])}), "
                  f"mean L2 {m['l2_mean_255']:.1f}/255 -> {out_dir}")


@app.command()
def purify(
    in_dir: Path = typer.Argument(..., help="Folder of (protected) images."),
    out_dir: Path = typer.Argument(..., help="Output folder: purified PNGs and purification.json."),
    method: str = typer.Option(..., "--method", "-m", help="Purifier name, or a '+' composition (codeformer+realesrgan)."),
    model: str = typer.Option(None, help="Model option of the purifier (SD id, upscaler id, pixel DDPM folder)."),
    weights: str = typer.Option(None, help="Restoration / SR checkpoint (weights-manager name or path)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Purifier option KEY=VALUE (repeatable)."),
    resolution: int = typer.Option(512, help="Resize + center-crop inputs to this size (0 keeps sizes)."),
    seed: int = typer.Option(0),
    device: str = typer.Option(None, help="cuda / mps / cpu (default: best available)."),
    dtype: str = typer.Option(None, help="Diffusion model dtype: fp32, bf16, fp16 (default: the reference's half "
                              "precision on CUDA, fp32 on CPU)."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable or too-small files (listed) instead of stopping."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR whole."),
) -> None:
    """Purify every image of IN_DIR (outputs at the input size); write PNGs and purification.json
    (config, seconds per image, device; PSNR / SSIM / LPIPS against IN_DIR/clean when present)."""
    if resolution < 0 or resolution % 8:
        raise typer.BadParameter(f"resolution {resolution} is not 0 (keep sizes) or a positive multiple of 8",
                                 param_hint="--resolution")
    inputs = _inputs(in_dir)
    stages.output.check_destination(out_dir, inputs, overwrite=overwrite, record="purification.json")
    options = _parse_options(option)
    options.update({k: v for k, v in {"model": model, "weights": weights}.items() if v is not None})
    clean = sorted((in_dir / "clean").glob("*.png")) if (in_dir / "clean").is_dir() else None
    with console.status(f"{method} on {in_dir}"), stages.output.staged(out_dir) as work:
        record = stages.purify(inputs or in_dir, work, method=method, options=options, resolution=resolution or None,
                               seed=seed, device=device, dtype=dtype, clean=clean, skip_bad=skip_bad,
                               extra={"input": str(in_dir)})
    if record["skipped"]:
        console.print(f"[yellow]skipped {len(record['skipped'])} bad file(s): "
                      f"{', '.join(Path(p).name for p in record['skipped'])}[/yellow]")
    console.print(f"{method}: {len(record['files'])} images, {record['seconds_per_image']:.2f} s / image -> {out_dir}")


@app.command()
def bench(
    config: Path = typer.Argument(..., help="Bench YAML (see configs/)."),
    out: Path = typer.Option(..., "--out", help="Run folder; rerunning with the same folder resumes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (stage counts, done / left) and stop."),
    executor: str = typer.Option(None, help="local or ray (default: the config's executor)."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local cluster)."),
    device: str = typer.Option(None, help="cuda / mps / cpu (default: best available)."),
    add: bool = typer.Option(False, "--add", help="Add this grid's cells to a run folder that holds another grid."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="local: stages run at once, in processes sharing the cores (CPU: 2 on 2 cores)."),
) -> None:
    """Run a grid of protect / purify / train / sample / evaluate stages; finished stages are never redone."""
    from .bench import Runner, load_config

    cfg = load_config(config)
    chosen = executor or cfg.executor
    if chosen not in ("local", "ray"):
        raise typer.BadParameter(f"executor must be local or ray, not {chosen!r}", param_hint="--executor")
    if chosen == "ray" and importlib.util.find_spec("ray") is None:
        raise typer.BadParameter("the ray executor needs Ray: pip install 'cloakbench[ray]' (or --executor local)",
                                 param_hint="--executor")
    if chosen == "ray" and workers > 1:
        raise typer.BadParameter("--workers is for the local executor (Ray sizes its own workers)", param_hint="--workers")
    runner = Runner(cfg, out, device=device, add=add)
    runner.check()  # refuse before the plan is printed, so --dry-run refuses what the run would
    table = Table(title=f"plan for {cfg.name} -> {out}")
    for col in ("stage", "total", "done", "left"):
        table.add_column(col)
    counts = runner.counts()
    for kind in ("protect", "purify", "class_images", "train", "sample", "evaluate"):
        if kind in counts:
            c = counts[kind]
            table.add_row(kind, str(c["total"]), str(c["done"]), str(c["total"] - c["done"]))
    console.print(table)
    if cfg.tables == "paper":
        from .bench.paper import map_tables, planned_cells, render

        console.print("\n[bold]The paper's tables, entry -> cell (protection | red-team | recipe | QES)[/bold]")
        for line in render(map_tables(cfg, planned_cells(runner.specs))):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        return
    with _stage_progress(runner) as tick:
        if chosen == "ray":
            from .bench.executors import run_ray

            result = run_ray(runner, tick, address=address)
        else:
            from .bench.executors import run_local

            result = run_local(runner, tick, workers=workers)
    from .bench.store import export_csv, export_parquet

    paths = [export_csv(runner.db, out / "results.csv")]
    try:
        paths.append(export_parquet(runner.db, out / "results.parquet"))
    except ImportError:
        pass  # pyarrow not installed: `cloakbench export --format parquet` says how
    console.print(f"ran {result['ran']} stages, skipped {result['skipped']} already done; results: {runner.db}, "
                  + ", ".join(map(str, paths)), markup=False, highlight=False)
    _print_verdict(out)


@contextmanager
def _stage_progress(runner, *, transient: bool = False):
    """The one progress display of bench, demo and audit: stages done / total, elapsed, time left, and the stage
    running in words (:meth:`~cloakbench.bench.Runner.describe`); yields the executors' ``progress`` callback.
    Stages already done count as done from the start."""
    done = sum(runner.done(s) for s in runner.specs)
    with progress_bar(console, "steps", transient=transient) as bar:
        task = bar.add_task("stages", total=len(runner.specs) - done)

        def tick(spec, state):
            if state == "running":
                bar.update(task, description=runner.describe(spec))
            elif state != "skipped":
                bar.advance(task)

        yield tick


def _print_verdict(run_dir: Path) -> None:
    """Compute, store (verdict.json, the verdict table of results.sqlite) and print the run's verdict."""
    from .bench.verdict import compute, write
    from .bench.verdict_view import tables

    verdict = compute(run_dir)
    path = write(run_dir, verdict)
    for table in tables(verdict, width=console.width):
        console.print(table)
    console.print(f"verdict: {path}", markup=False, highlight=False)


@app.command("list")
def list_entries(
    kind: str = typer.Argument("protections", help="protections, purifiers or metrics."),
    filter_: str = typer.Option(None, "--filter", help="Only names matching this glob, e.g. 'aspl*'."),
) -> None:
    """What exists: every protection, purifier or metric (installed plugins included) with its paper and defaults.
    Code outside the package is named module:Class or path/file.py:Class (docs/ARCHITECTURE.md)."""
    import fnmatch

    from rich.text import Text

    from .images import format_budget
    from .metrics import METRICS
    from .protect import PROTECTIONS
    from .purify import PURIFIERS

    registries = {"protections": PROTECTIONS, "purifiers": PURIFIERS, "metrics": METRICS}
    if kind not in registries:
        raise typer.BadParameter(f"{kind!r}: give one of {', '.join(registries)}", param_hint="KIND")
    table = Table(title=f"cloakbench {kind}")
    heads = {"protections": ("name", "paper", "budget", "steps"), "purifiers": ("name", "paper", "options"),
             "metrics": ("name", "better", "needs", "licence")}[kind]
    for h in heads:
        table.add_column(h, overflow="fold")
    shown = 0
    for e in registries[kind].entries():
        if filter_ and not fnmatch.fnmatch(e.name, filter_.lower()):
            continue
        f = e.factory
        paper = str(getattr(f, "paper", "") or e.meta.get("paper", "")) + (f" (plugin: {e.meta['plugin']})"
                                                                           if e.meta.get("plugin") else "")
        if kind == "protections":
            cells = (e.name, paper, format_budget(f.eps), str(f.steps))
        elif kind == "purifiers":
            cells = (e.name, paper, ", ".join(f"{k}={v}" for k, v in getattr(f, "options", {}).items()) or "-")
        else:
            needs = ", ".join(n for n, on in (("face", f.needs_face), ("references", f.needs_reference)) if on) or "-"
            cells = (e.name, {True: "higher", False: "lower", None: "-"}[f.higher_better], needs, f.licence)
        table.add_row(*(Text(c) for c in cells))
        shown += 1
    console.print(table)
    console.print(f"{shown} {kind}", markup=False, highlight=False)


@app.command()
def audit(
    clean: Path = typer.Argument(..., help="CLEAN/<identity>/*.png: each identity's clean photos; the first, by name, "
                                 "are the protected ones, the rest the references."),
    protected: Path = typer.Argument(..., help="PROTECTED/<identity>/<stem>.*: the protected version of each, paired "
                                     "by name, made by any tool."),
    out: Path = typer.Option(..., "--out", help="Run folder (rerun the same command to resume)."),
    model: str = typer.Option("mini", help="The victim's base model: mini (the CPU stack), or a hub id / folder."),
    red_teams: str = typer.Option(None, "--red-teams", help="Comma-separated, each purifier(+cdl)(+qes), e.g. "
                                  "jpeg,codesr+cdl+qes (default mini: jpeg, gridpure, codesr-mini, cdl+qes, "
                                  "codesr-mini+cdl+qes; else jpeg, codesr, cdl+qes, codesr+cdl+qes)."),
    name: str = typer.Option(None, help="The protection's label (default: PROTECTED's folder name)."),
    seeds: str = typer.Option("0", help="Comma-separated seeds (each reruns every fine-tune)."),
    samples: int = typer.Option(None, min=1, help="Samples per cell (default: the model's preset)."),
    steps: int = typer.Option(None, min=1, help="Fine-tuning steps (default: the model's preset)."),
    class_images: int = typer.Option(None, "--class-images", min=1, help="Prior-preservation class images "
                                     "(default: the preset's, 200 as the paper)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Stages run at once (default: 2 on a CPU with 2 or "
                                "more cores, else 1)."),
    device: str = typer.Option(None, help="cuda / mps / cpu (default: best available)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write OUT/audit.yaml, print the plan and stop."),
) -> None:
    """Does a protection made anywhere hold? Runs the red teams on PROTECTED (budget measured against CLEAN),
    prints the verdict and writes OUT/report.html."""
    from .audit import grid, write_grid
    from .bench import Runner, load_config
    from .bench.executors import default_workers, run_local
    from .bench.report import build
    from .bench.store import export_csv

    cfg_map = grid(clean, protected, model=model, name=name, samples=samples, steps=steps, class_images=class_images,
                   red_teams=[t for t in (red_teams or "").split(",") if t.strip()] or None,
                   seeds=[int(x) for x in seeds.split(",") if x.strip()])
    cfg = load_config(write_grid(out, cfg_map))  # every pair and size checked here, before any work
    runner = Runner(cfg, out, device=device or ("cpu" if model == "mini" else None))
    runner.check()
    counts = runner.counts()
    console.print(f"audit of {cfg.protections[1].name}: {len(cfg.data.identities)} identities, "
                  f"{counts['train']['total']} fine-tunes ({counts['train']['done']} done) -> {out}",
                  markup=False, highlight=False)
    if dry_run:
        return
    workers = workers or default_workers(runner.device)
    with _stage_progress(runner, transient=True) as tick:
        result = run_local(runner, tick, workers=workers)
    export_csv(runner.db, out / "results.csv")
    console.print(f"ran {result['ran']} stages, skipped {result['skipped']}", markup=False, highlight=False)
    _print_verdict(out)
    console.print(f"report: {build(out)}", markup=False, highlight=False)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A `cloakbench bench` run folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet (needs pyarrow: cloakbench[parquet])."),
    out: Path = typer.Option(None, "--out", help="Output file (default: RUN_DIR/results.<format>)."),
) -> None:
    """Export the results database (one row per cell x metric x seed, with provenance)."""
    from .bench.store import export_csv, export_parquet

    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise typer.BadParameter(f"{db} does not exist: run `cloakbench bench` first", param_hint="RUN_DIR")
    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter(f"format must be csv or parquet, not {fmt!r}", param_hint="--format")
    target = out or run_dir / f"results.{fmt}"
    try:
        path = (export_csv if fmt == "csv" else export_parquet)(db, target)
    except ImportError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"wrote {path}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A `cloakbench bench` run folder.")) -> None:
    """The run's verdict (printed, and stored in verdict.json and results.sqlite) and RUN_DIR/report.html (the
    verdict, tables with significance marks, timings, image grids, plots, provenance)."""
    from .bench.report import build

    if not (run_dir / "results.sqlite").is_file():
        raise typer.BadParameter(f"{run_dir / 'results.sqlite'} does not exist: run `cloakbench bench` first",
                                 param_hint="RUN_DIR")
    _print_verdict(run_dir)
    console.print(f"wrote {build(run_dir)}", markup=False, highlight=False)


@app.command()
def train(
    out_dir: Path = typer.Argument(..., help="Output folder (model or LoRA, config, log, checkpoints)."),
    model: str = typer.Option("tiny", help="Base model: hub id, diffusers folder, single file or 'tiny'."),
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
    resolution: int = typer.Option(512, help="Training resolution (resize + center crop)."),
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
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in OUT_DIR."),
) -> None:
    """DreamBooth / LoRA fine-tuning with optional CDL; resumable (Ctrl-C saves a checkpoint)."""
    from .models import load_model
    from .personalize import CDLPolicy, TrainConfig
    from .sample.class_images import cache_dir

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
    base = load_model(model)
    if prior:
        class_dir = class_dir or cache_dir(base, class_prompt, seed, class_steps, cfg.class_guidance, resolution)
        with progress_bar(console, "steps", transient=True) as bar:
            task = bar.add_task("class images (generated once, then cached)", total=None)
            stages.class_images(base, class_dir, n=num_class_images, prompt=class_prompt, steps=class_steps,
                                resolution=resolution, seed=seed,
                                progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"instance prompt: {cfg.cdl.instance_prompt(instance_prompt)!r}"
                  + (f"; class prompt: {cfg.cdl.class_prompt(class_prompt)!r}" if prior else ""))
    with progress_bar(console, "steps", transient=True) as bar:
        task = bar.add_task("training", total=steps)
        result = stages.train(instance_dir, out_dir, model=base, cfg=cfg, class_dir=class_dir if prior else None,
                              resume=resume,
                              progress=lambda s, n, loss: bar.update(task, completed=s, description=f"loss {loss:.4f}"))
    console.print(f"trained {steps} steps (resumed from {result['resumed_from']}) in {result['seconds']:.1f} s -> {out_dir}")


@app.command()
def sample(
    out_dir: Path = typer.Argument(..., help="Output folder for PNGs and sample.json."),
    model: str = typer.Option(..., help="A training output folder, a diffusers folder, a hub id or 'tiny'."),
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
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(4),
    dtype: str = typer.Option(None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR whole."),
) -> None:
    """Generate images with our CFG loop; --qes applies the paper's quality-enhanced sampling."""
    if n < 1:
        raise typer.BadParameter("n must be >= 1", param_hint="-n")
    if suffix not in protocol.SUFFIX_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(protocol.SUFFIX_MODES)}, not {suffix!r}", param_hint="--suffix")
    model_files = sorted(p for p in Path(model).rglob("*") if p.is_file()) if Path(model).is_dir() else []
    stages.output.check_destination(out_dir, model_files, overwrite=overwrite, record="sample.json")
    prompts = prompt or list(protocol.SAMPLE_PROMPTS)
    with progress_bar(console, "count", transient=True) as bar, stages.output.staged(out_dir) as work:
        task = bar.add_task("sampling", total=len(prompts) * n)
        record = stages.sample(model, work, prompts=prompts, n=n, qes=qes, seed=seed, dtype=dtype,
                               progress=lambda d, t: bar.update(task, completed=d), steps=steps, guidance=guidance,
                               negative=negative, suffix=suffix, extra_scale=extra_scale, scheduler=scheduler,
                               batch_size=batch_size)
    console.print(f"{len(record['files'])} images -> {out_dir}")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


@app.command()
def evaluate(
    gen_dir: Path = typer.Argument(..., help="Folder of images to score (generated, protected, purified)."),
    reference: Path = typer.Option(None, "--reference", "-r", help="Clean reference images of the same identity."),
    metrics: str = typer.Option("ism,fdfr,ims,brisque", help="Comma-separated metric names, e.g. ism[dlib],liqe."),
    size: int = typer.Option(512, help="Resize / center-crop both sets to this size (0 keeps sizes)."),
    clip: str = typer.Option(None, help="CLIP model (hub id or folder) for clip_iqac / q."),
    liqe: str = typer.Option(None, help="LIQE weights name or checkpoint path for liqe / q."),
    json_out: Path = typer.Option(None, "--json", help="Write results with per-image values here."),
) -> None:
    """Score GEN_DIR with identity, quality, fidelity and budget metrics; print a table, write JSON."""
    from .stages.output import write_record

    if json_out is not None:  # checked before any metric runs: never write over a photo or into the inputs
        inside = [d for d in (gen_dir, reference) if d is not None and json_out.resolve().is_relative_to(d.resolve())]
        if inside:
            raise typer.BadParameter(f"{json_out} is inside the input folder {inside[0]}: write the JSON elsewhere",
                                     param_hint="--json")
        if json_out.exists() and (json_out.is_dir() or json_out.suffix.lower() != ".json"):
            raise typer.BadParameter(f"{json_out} exists and is not a .json file: it would be replaced",
                                     param_hint="--json")

    options = {"clip_iqac": {"clip": clip} if clip else {}, "liqe": {"weights": liqe} if liqe else {},
               "q": {**({"clip": clip} if clip else {}), **({"liqe": liqe} if liqe else {})}}
    ev = stages.evaluate(gen_dir, reference, metrics=[m.strip() for m in metrics.split(",") if m.strip()],
                         size=size or None, reference_size=size or None, options=options)
    table = Table(title=f"cloakbench evaluate {gen_dir} ({len(ev.files)} images)")
    for col in ("metric", "value", "better", "n", "no face", "notes"):
        table.add_column(col)
    for r in ev.results:
        better = {True: "higher", False: "lower", None: "-"}[r.higher_better]
        notes = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in r.details.items()
                          if k in ("verification_rate", "verified_mean", "ims_ip", "ims_vgg", "units"))
        table.add_row(escape(r.name), _fmt(r.value), better, str(r.n), "-" if r.n_no_face is None else str(r.n_no_face), notes)
    console.print(table)
    if json_out is not None:
        write_record(json_out.parent, json_out.name, {"images": str(gen_dir), "size": size, "metrics": ev.as_dict(),
                                                       "reference": None if reference is None else str(reference)})
        console.print(f"wrote {json_out}")


@app.command()
def calibrate(
    pairs: Path = typer.Argument(..., help="CSV with file_x, file_y, Decision (Yes = same person)."),
    backend: str = typer.Option("dlib", help="Face backend: dlib, insightface, vggface, deepface."),
) -> None:
    """Check a face backend on labelled pairs: ROC AUC, equal-error rate, accuracy at its threshold."""
    from .metrics.calibration import calibrate as run

    console.print(run(pairs, backend).summary())


class _AnalyzeGroup(typer.core.TyperGroup):
    """``analyze DIRS...`` without a subcommand stays the misalignment analysis (M1 / M2)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["misalignment", *args]
        return super().parse_args(ctx, args)


analyze_app = typer.Typer(cls=_AnalyzeGroup, no_args_is_help=True, rich_markup_mode=None,
                          help="The paper's shortcut analyses (docs/PAPER.md §3): misalignment (M1, M2; the default), "
                               "m3 (random-noise control of a bench run), m4 (concept extraction from a trained model).")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("misalignment")
def analyze_misalignment(
    dirs: list[Path] = typer.Argument(..., help="Image folders; the first is the clean reference set."),
    clip: str = typer.Option("openai/clip-vit-base-patch32", help="CLIP model: hub id or local folder."),
    out: Path = typer.Option(Path("analysis"), help="Output folder for misalignment.json and plots."),
    concepts: str = typer.Option("a photo of a person|a photo of noise pattern",
                                 help="'|'-separated concept prompts; the first is the subject."),
    prompt: str = typer.Option(protocol.INSTANCE_PROMPT, help="Training prompt for image-prompt alignment."),
    size: int = typer.Option(512, help="Resize / center-crop size when loading."),
) -> None:
    """M1 / M2 latent misalignment: CLIP concept rates, embedding shift, 2-D projections."""
    from .analysis import analyze as run
    from .images import read_images
    from .models import load_clip

    model = load_clip(clip)
    sets = {d.name if d.name not in ("", ".") else str(d): read_images(d, size).images for d in dirs}
    summary = run(model, sets, out, concepts=concepts.split("|"), prompt=prompt)
    table = Table(title=f"latent misalignment ({clip})")
    for col in ("set", "n", "subject rate", "p(subject)", "cos gap", "prompt cos", "cos to clean"):
        table.add_column(col)
    for name, g in summary["groups"].items():
        table.add_row(name, str(g["n"]), _fmt(g["subject_rate"]), _fmt(g["p_subject"]), _fmt(g["cos_gap"]),
                      _fmt(g["prompt_alignment"]), _fmt(g.get("cos_to_paired_clean", g.get("cos_to_clean_centroid"))))
    console.print(table)
    console.print(f"wrote {out / 'misalignment.json'} and plots {', '.join(summary.get('plots', {}).values())}")


@analyze_app.command("m3")
def analyze_m3(
    run_dir: Path = typer.Argument(..., help="A finished `cloakbench bench` run folder whose grid lists `none`, the "
                                   "protection(s) and `random-noise` at the same eps."),
    recipe: list[str] = typer.Option(None, "--recipe", help="Only this recipe (repeatable; default: all)."),
    out: Path = typer.Option(None, "--out", help="Folder for m3.json (default: RUN_DIR/analysis)."),
) -> None:
    """M3 random-noise control: clean vs protected vs random noise of the same L-inf, after the same fine-tune."""
    from .analysis import random_noise_control

    target = out or run_dir / "analysis"
    s = random_noise_control(run_dir, recipes=recipe or None, out=target)
    for t in s["tables"]:
        metrics = sorted({m for r in t["rows"].values() for m in r})
        table = Table(title=f"M3 random-noise control: recipe {t['recipe']}, QES {'on' if t['qes'] else 'off'} "
                            "(mean over identities; gap = clean - cell)")
        for col in ("cell", "L-inf (k/255)", *metrics):
            table.add_column(escape(col))
        for label, row in t["rows"].items():
            gaps = t["gaps"].get(label, {})
            cells = [_fmt(row.get(m)) + (f" (gap {gaps[m]['mean']:+.4f})" if gaps.get(m) else "") for m in metrics]
            linf = s["linf_255"].get(label)
            table.add_row(escape("clean" if label == "none" else label), "0" if label == "none" else
                          ("?" if linf is None else f"{linf:g}"), *cells)
        console.print(table)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    console.print(f"wrote {target / 'm3.json'}")


@analyze_app.command("m4")
def analyze_m4(
    model: str = typer.Argument(..., help="Trained model: a `cloakbench train` / bench train-stage folder, a diffusers "
                                "folder or a model name."),
    out: Path = typer.Option(..., "--out", help="Output folder: one folder per prompt, grid.png, concepts.json."),
    subject: str = typer.Option(protocol.CLASS_WORD, help="Class noun of the prompts (the mini world's: toy)."),
    n: int = typer.Option(None, "-n", help="Images per prompt (default: infer.py's 2 x 8 = 16)."),
    steps: int = typer.Option(None, help="Sampling steps (default: infer.py's 100)."),
    guidance: float = typer.Option(None, help="Classifier-free guidance (default: infer.py's 7.5)."),
    seed: int = typer.Option(0, help="Image j of every prompt uses seed + j."),
    references: Path = typer.Option(None, "--references", "-r", help="Clean photos of the identity for ISM / verified."),
    metrics: str = typer.Option(None, help="Comma-separated metrics (default with --references: ism,fdfr; else none)."),
    clip: str = typer.Option(None, help="CLIP for the concept rates (class vs noise) of each prompt's samples."),
    device: str = typer.Option(None, help="cuda / mps / cpu (default: best available)."),
    dtype: str = typer.Option(None, help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)."),
) -> None:
    """M4 concept extraction: samples of "a photo of sks", "a photo of sks <class>", "a photo of <class>"."""
    from .analysis import extract_concepts

    names = [m.strip() for m in (metrics or ("ism,fdfr" if references else "")).split(",") if m.strip()]
    given = {k: v for k, v in {"n": n, "steps": steps, "guidance": guidance}.items() if v is not None}
    rec = extract_concepts(model, out, subject=subject, seed=seed, references=references, metrics=names, clip=clip,
                           device=device, dtype=dtype, **given)
    table = Table(title=f"M4 concept extraction ({rec['n']} images per prompt, seed {seed})")
    keys = sorted({k for e in rec["per_prompt"].values() for k in e.get("metrics", {})})
    for col in ("prompt", "folder", *keys, *(["class rate", "p(class)"] if clip else [])):
        table.add_column(escape(col))
    for prompt, e in rec["per_prompt"].items():
        rates = e.get("concept_rates")
        table.add_row(escape(prompt), e["folder"], *(_fmt(e["metrics"].get(k)) for k in keys),
                      *([_fmt(rates["subject_rate"]), _fmt(rates["p_subject"])] if rates else []))
    console.print(table)
    console.print(f"wrote {out / 'grid.png'} and {out / 'concepts.json'}")


mini_app = typer.Typer(help="The mini stack: train its models on the procedural world, check them.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(mini_app, name="mini")


@mini_app.command("train")
def mini_train(
    out: Path = typer.Option(..., "--out", help="Output folder (the shipped weights are never replaced by a run "
                             "without --out; CLOAKBENCH_MINI_WEIGHTS=OUT uses the new ones)."),
    quick: bool = typer.Option(False, "--quick", help="A one-minute run of the same code (plumbing check)."),
    seed: int = typer.Option(0, help="Seed of the world and of every model."),
    only: list[str] = typer.Option(None, "--only", help="Train just this model (repeatable: clip vae unet pixel vq sr "
                                   "identity); the others are read from --base. Equals the full run."),
    base: Path = typer.Option(None, "--base", help="Weights folder the --only run takes the other models from "
                              "(default: the shipped one)."),
    threads: int = typer.Option(2, min=1, help="CPU threads; the bytes depend on it (the shipped weights: 2)."),
) -> None:
    """Train every mini model from scratch (seeded; 80-100 min on 2 CPU cores) and validate it; with --out, say
    per model whether the bytes equal the reference folder's (--base or the shipped one)."""
    from dataclasses import replace

    import torch

    torch.set_num_threads(threads)

    from .models.mini.stack import SHIPPED
    from .minilab.data import FULL, QUICK
    from .minilab.train import train_all

    if quick and out.resolve() == Path(SHIPPED).resolve():
        raise typer.BadParameter(f"{out} is the shipped weights folder: a --quick run never replaces them",
                                 param_hint="--out")
    cfg = replace(QUICK if quick else FULL, seed=seed)
    manifest = train_all(out, cfg, log=lambda m: console.print(escape(m)), only=only or None, base=base)
    console.print(f"trained in {manifest['train_seconds']:.0f} s -> {out}")


@mini_app.command("export")
def mini_export(
    out: Path = typer.Argument(..., help="New folder: OUT/clean/<subject>/NN.png and OUT/protected/<subject>/NN.png."),
    subjects: str = typer.Option("7,183", help="Mini-world subjects (comma-separated; default: the demo's two)."),
    photos: int = typer.Option(8, min=2, help="Clean photos per subject."),
    train: int = typer.Option(4, min=1, help="How many of them (the first, by name) are protected."),
    protect: str = typer.Option("advdm", help="Protection that makes the protected copy (any protection name)."),
    eps: str = typer.Option("16/255", help="Its L-inf budget (k/255)."),
    steps: int = typer.Option(100, min=1, help="Its PGD updates."),
    seed: int = typer.Option(0),
) -> None:
    """Mini-world photos and a protected copy, laid out for `cloakbench audit OUT/clean OUT/protected --model mini`
    (the protected copy stands for images made by any tool outside cloakbench)."""
    import shutil
    import tempfile

    import yaml

    from .images import parse_budget
    from .minilab.demo import CONFIG
    from .models.mini import world
    from .images import save_images
    from .stages.protect import load_surrogates

    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} exists and is not empty: give a new folder", param_hint="OUT")
    ids = [int(x) for x in subjects.split(",") if x.strip()]
    if photos <= train:
        raise typer.BadParameter(f"--photos {photos} must exceed --train {train}: the rest are the references")
    subject = yaml.safe_load(CONFIG.read_text())["subject"]
    surrogate = load_surrogates(["mini"], device="cpu")
    for s in ids:
        name = f"subject{s:03d}"
        clean = out / "clean" / name
        save_images(world.photos(s, photos, seed), clean, [f"{i:02d}" for i in range(photos)])
        with tempfile.TemporaryDirectory() as tmp:
            rec = stages.protect(sorted(clean.glob("*.png"))[:train], Path(tmp), method=protect, surrogates=surrogate,
                                 eps=parse_budget(eps), steps=steps, prompt=protocol.instance_prompt(subject),
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
    from .models.mini.stack import weights_dir
    from .minilab.validate import validate_saved

    validate_saved(folder or weights_dir(), log=lambda m: console.print(escape(m)))


@app.command()
def demo(
    out: Path = typer.Option(Path("cloakbench-demo"), "--out", help="Run folder (rerun to resume)."),
    config: Path = typer.Option(None, help="Mini bench YAML (default: the shipped mini-paper.yaml)."),
    full: bool = typer.Option(False, "--full", help="Run mini-eval.yaml: the 8 evaluation subjects x 2 seeds, AdvDM "
                              "and ASPL at the mini default 16/255, CodeSR, CodeSR + CDL and the full red team (about "
                              "1.5 hours on 2 cores)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Stages run at once (default: 2 on a CPU with 2 or "
                                "more cores, else 1); see `cloakbench bench --workers`."),
) -> None:
    """The paper's protocol on the mini stack in minutes on a CPU: gap, recovery, analysis and report.html."""
    from .minilab.demo import CONFIG, FULL_CONFIG, demo_runner, run_demo, tables

    if full and config is not None:
        raise typer.BadParameter("--full runs the shipped mini-eval.yaml: give --config or --full, not both")
    t0 = time.perf_counter()
    runner = demo_runner(out, config=config or (FULL_CONFIG if full else CONFIG))
    with _stage_progress(runner, transient=True) as tick:
        summary = run_demo(out, progress=tick, workers=workers, runner=runner)
    for table in tables(summary, width=console.width):
        console.print(table)
    console.print(f"stages: ran {summary['stages']['ran']}, skipped {summary['stages']['skipped']}; "
                  f"{time.perf_counter() - t0:.0f} s; report: {summary['report']}")


if __name__ == "__main__":  # pragma: no cover
    app()
