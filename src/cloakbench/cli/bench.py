"""``bench``, ``audit``, ``report`` and ``export``: grids of stages in a resumable run folder, and their verdict."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from . import app
from ._common import console, device_option, print_verdict, stage_progress

PANEL = "Benchmark"


@app.command(rich_help_panel=PANEL)
def bench(
    config: Path = typer.Argument(..., help="Bench YAML (see configs/ and docs/CONFIG.md)."),
    out: Path = typer.Option(..., "--out", help="Run folder; rerunning with the same folder resumes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (stage counts, done / left) and stop."),
    executor: str = typer.Option(None, help="local or ray (default: the config's executor)."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local cluster)."),
    device: str = device_option(),
    add: bool = typer.Option(False, "--add", help="Add this grid's cells to a run folder that holds another grid."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="local: stages run at once, in processes sharing the cores (CPU: 2 on 2 cores)."),
) -> None:
    """Run a grid of protect / purify / train / sample / evaluate stages; finished stages are never redone."""
    from rich.table import Table

    from ..bench import Runner, load_config
    from ..bench.store import export_csv, export_parquet

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
        from ..bench.paper import map_tables, planned_cells, render

        console.print("\n[bold]The paper's tables, entry -> cell (protection | red-team | recipe | QES)[/bold]")
        for line in render(map_tables(cfg, planned_cells(runner.specs))):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        return
    with stage_progress(runner) as tick:
        if chosen == "ray":
            from ..bench.executors import run_ray

            result = run_ray(runner, tick, address=address)
        else:
            from ..bench.executors import run_local

            result = run_local(runner, tick, workers=workers)
    paths = [export_csv(runner.db, out / "results.csv")]
    try:
        paths.append(export_parquet(runner.db, out / "results.parquet"))
    except ImportError:
        pass  # pyarrow not installed: `cloakbench export --format parquet` says how
    console.print(f"ran {result['ran']} stages, skipped {result['skipped']} already done; results: {runner.db}, "
                  + ", ".join(map(str, paths)), markup=False, highlight=False)
    print_verdict(out)


@app.command(rich_help_panel=PANEL)
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
    device: str = device_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write OUT/audit.yaml, print the plan and stop."),
) -> None:
    """Does a protection made anywhere hold? Runs the red teams on PROTECTED (budget measured against CLEAN),
    prints the verdict and writes OUT/report.html."""
    from ..audit import grid, write_grid
    from ..bench import Runner, load_config
    from ..bench.executors import default_workers, run_local
    from ..bench.report import build
    from ..bench.store import export_csv

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{seeds!r} is not a comma-separated list of integers", param_hint="--seeds") from None
    cfg_map = grid(clean, protected, model=model, name=name, samples=samples, steps=steps, class_images=class_images,
                   red_teams=[t for t in (red_teams or "").split(",") if t.strip()] or None, seeds=seed_list)
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
    with stage_progress(runner, transient=True) as tick:
        result = run_local(runner, tick, workers=workers)
    export_csv(runner.db, out / "results.csv")
    console.print(f"ran {result['ran']} stages, skipped {result['skipped']}", markup=False, highlight=False)
    print_verdict(out)
    console.print(f"report: {build(out)}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def report(run_dir: Path = typer.Argument(..., help="A `cloakbench bench` run folder.")) -> None:
    """The run's verdict (printed, and stored in verdict.json and results.sqlite) and RUN_DIR/report.html (the
    verdict, tables with significance marks, timings, image grids, plots, provenance)."""
    from ..bench.report import build

    if not (run_dir / "results.sqlite").is_file():
        raise typer.BadParameter(f"{run_dir / 'results.sqlite'} does not exist: run `cloakbench bench` first",
                                 param_hint="RUN_DIR")
    print_verdict(run_dir)
    console.print(f"wrote {build(run_dir)}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def export(
    run_dir: Path = typer.Argument(..., help="A `cloakbench bench` run folder."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet (needs pyarrow: cloakbench[parquet])."),
    out: Path = typer.Option(None, "--out", help="Output file (default: RUN_DIR/results.<format>)."),
) -> None:
    """Export the results database (one row per cell x metric x seed, with provenance)."""
    from rich.console import Console
    from rich.markup import escape

    from ..bench.store import export_csv, export_parquet

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
    console.print(f"wrote {path}", markup=False, highlight=False)
