"""The ``cloakbench`` command line (typer). Each command is a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="cloakbench",
    help="Red-team and benchmark protective perturbations against personalized diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)
weights_app = typer.Typer(help="List, fetch and verify external model weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
console = Console()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


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
            table.add_row(c.group, c.name, "[green]ok[/green]" if c.ok else "[yellow]missing[/yellow]", c.detail)
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
        table.add_row(spec.name, "[green]present[/green]" if present else "[yellow]missing[/yellow]", size,
                      spec.licence, spec.used_by)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Weight names (see `cloakbench weights list`)."),
    force: bool = typer.Option(False, help="Download again even if present."),
    allow_unverified: bool = typer.Option(False, help="Allow entries with no published sha256."),
) -> None:
    """Download weights, verify SHA-256, and move them into place atomically."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from . import weights

    failed = False
    for name in names:
        try:
            spec = weights.get_spec(name)
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=console) as progress:
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
    from .images import read_images
    from .metrics import create_metric

    gen = read_images(gen_dir, size or None)
    refs = read_images(reference, size or None).images if reference is not None else None
    results = []
    for name in [m.strip() for m in metrics.split(",") if m.strip()]:
        kw = {}
        base = name.split("[")[0]
        if clip and base in ("clip_iqac", "q"):
            kw["clip"] = clip
        if liqe and base in ("liqe", "q"):
            kw["weights" if base == "liqe" else "liqe"] = liqe
        metric = create_metric(name, **kw)
        if metric.needs_reference and refs is None:
            raise typer.BadParameter(f"metric {name} needs --reference", param_hint="--reference")
        results.append(metric(gen.images, refs))
    table = Table(title=f"cloakbench evaluate {gen_dir} ({len(gen.paths)} images)")
    for col in ("metric", "value", "better", "n", "no face", "notes"):
        table.add_column(col)
    for r in results:
        better = {True: "higher", False: "lower", None: "-"}[r.higher_better]
        notes = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in r.details.items()
                          if k in ("verification_rate", "verified_mean", "ims_ip", "ims_vgg", "units"))
        table.add_row(escape(r.name), _fmt(r.value), better, str(r.n), "-" if r.n_no_face is None else str(r.n_no_face), notes)
    console.print(table)
    if json_out is not None:
        from .images import atomic_write_bytes

        files = [p.name for p in gen.paths]
        payload = {"images": str(gen_dir), "reference": None if reference is None else str(reference),
                   "size": size, "metrics": {r.name: {**r.as_dict(), "per_image": dict(zip(files, r.per_image))}
                                             for r in results}}
        atomic_write_bytes(Path(json_out), json.dumps(payload, indent=2, default=str).encode())
        console.print(f"wrote {json_out}")


@app.command()
def calibrate(
    pairs: Path = typer.Argument(..., help="CSV with file_x, file_y, Decision (Yes = same person)."),
    backend: str = typer.Option("dlib", help="Face backend: dlib, insightface, deepface."),
) -> None:
    """Check a face backend on labelled pairs: ROC AUC, equal-error rate, accuracy at its threshold."""
    from .metrics.calibration import calibrate as run

    console.print(run(pairs, backend).summary())


@app.command()
def analyze(
    dirs: list[Path] = typer.Argument(..., help="Image folders; the first is the clean reference set."),
    clip: str = typer.Option("openai/clip-vit-base-patch32", help="CLIP model: hub id or local folder."),
    out: Path = typer.Option(Path("analysis"), help="Output folder for misalignment.json and plots."),
    concepts: str = typer.Option("a photo of a person|a photo of noise pattern",
                                 help="'|'-separated concept prompts; the first is the subject."),
    prompt: str = typer.Option("a photo of sks person", help="Training prompt for image-prompt alignment."),
    size: int = typer.Option(512, help="Resize / center-crop size when loading."),
) -> None:
    """The paper's latent-misalignment analysis (CLIP concept rates, embedding shift, 2-D projections)."""
    from .analysis import analyze as run
    from .images import read_images
    from .models.clip import load_clip

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


if __name__ == "__main__":  # pragma: no cover
    app()
