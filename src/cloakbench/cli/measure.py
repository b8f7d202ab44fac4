"""``evaluate``, ``calibrate`` and ``analyze`` (misalignment M1 / M2, m3, m4): metrics and the paper's analyses."""

from __future__ import annotations

from pathlib import Path

import typer
import typer.core

from .. import protocol
from . import app
from ._common import RESOLUTION_HELP, check_resolution, console, device_option, fmt, seed_option

PANEL = "Measure and analyze"


def _metric_options(names: list[str], device: str | None, clip: str | None, liqe: str | None) -> dict:
    """Keyword arguments per metric base name: the CLIP / LIQE models where given, and ``device`` for every metric
    whose class takes one (LPIPS, CLIP-IQAC, LIQE, Q, IMS)."""
    import inspect

    from ..metrics import METRICS

    given = {"clip_iqac": {"clip": clip}, "liqe": {"weights": liqe}, "q": {"clip": clip, "liqe": liqe}}
    out = {}
    for base in {n.split("[")[0] for n in names}:
        kw = {k: v for k, v in given.get(base, {}).items() if v is not None}
        if device is not None and base in METRICS:
            if "device" in inspect.signature(METRICS.get(base).factory).parameters:
                kw["device"] = device
        out[base] = kw
    return out


@app.command(rich_help_panel=PANEL)
def evaluate(
    gen_dir: Path = typer.Argument(..., help="Folder of images to score (generated, protected, purified)."),
    reference: Path = typer.Option(None, "--reference", "-r", help="Clean reference images of the same identity."),
    metrics: str = typer.Option("ism,fdfr,ims,brisque", help="Comma-separated metric names, e.g. ism[dlib],liqe."),
    resolution: int = typer.Option(512, help=f"{RESOLUTION_HELP}, both sets (0 keeps sizes)."),
    clip: str = typer.Option(None, help="CLIP model (hub id or folder) for clip_iqac / q."),
    liqe: str = typer.Option(None, help="LIQE weights name or checkpoint path for liqe / q."),
    device: str = device_option(),
    json_out: Path = typer.Option(None, "--json", help="Write results with per-image values here."),
) -> None:
    """Score GEN_DIR with identity, quality, fidelity and budget metrics; print a table, write JSON."""
    from rich.markup import escape
    from rich.table import Table

    from ..stages.evaluation import evaluate as run
    from ..stages.output import write_record

    check_resolution(resolution, keep_allowed=True)
    if json_out is not None:  # checked before any metric runs: never write over a photo or into the inputs
        inside = [d for d in (gen_dir, reference) if d is not None and json_out.resolve().is_relative_to(d.resolve())]
        if inside:
            raise typer.BadParameter(f"{json_out} is inside the input folder {inside[0]}: write the JSON elsewhere",
                                     param_hint="--json")
        if json_out.exists() and (json_out.is_dir() or json_out.suffix.lower() != ".json"):
            raise typer.BadParameter(f"{json_out} exists and is not a .json file: it would be replaced",
                                     param_hint="--json")
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    ev = run(gen_dir, reference, metrics=names, size=resolution or None, reference_size=resolution or None,
             options=_metric_options(names, device, clip, liqe))
    table = Table(title=f"cloakbench evaluate {gen_dir} ({len(ev.files)} images)")
    for col in ("metric", "value", "better", "n", "no face", "notes"):
        table.add_column(col)
    for r in ev.results:
        better = {True: "higher", False: "lower", None: "-"}[r.higher_better]
        notes = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in r.details.items()
                          if k in ("verification_rate", "verified_mean", "ims_ip", "ims_vgg", "units"))
        table.add_row(escape(r.name), fmt(r.value), better, str(r.n), "-" if r.n_no_face is None else str(r.n_no_face),
                      notes)
    console.print(table)
    if json_out is not None:
        write_record(json_out.parent, json_out.name, {"images": str(gen_dir), "size": resolution,
                                                       "metrics": ev.as_dict(),
                                                       "reference": None if reference is None else str(reference)})
        console.print(f"wrote {json_out}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def calibrate(
    pairs: Path = typer.Argument(..., help="CSV with file_x, file_y, Decision (Yes = same person)."),
    backend: str = typer.Option("dlib", help="Face backend: dlib, insightface, vggface, deepface."),
) -> None:
    """Check a face backend on labelled pairs: ROC AUC, equal-error rate, accuracy at its threshold."""
    from ..metrics.calibration import calibrate as run

    console.print(run(pairs, backend).summary(), markup=False, highlight=False)


class _AnalyzeGroup(typer.core.TyperGroup):
    """``analyze DIRS...`` without a subcommand stays the misalignment analysis (M1 / M2)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["misalignment", *args]
        return super().parse_args(ctx, args)


analyze_app = typer.Typer(cls=_AnalyzeGroup, no_args_is_help=True, rich_markup_mode=None,
                          help="The paper's shortcut analyses (docs/PAPER.md §3): misalignment (M1, M2; the default), "
                               "m3 (random-noise control of a bench run), m4 (concept extraction from a trained model).")
app.add_typer(analyze_app, name="analyze", rich_help_panel=PANEL)


@analyze_app.command("misalignment")
def analyze_misalignment(
    dirs: list[Path] = typer.Argument(..., help="Image folders; the first is the clean reference set."),
    clip: str = typer.Option("openai/clip-vit-base-patch32", help="CLIP model: hub id or local folder."),
    out: Path = typer.Option(Path("analysis"), help="Output folder for misalignment.json and plots."),
    concepts: str = typer.Option("a photo of a person|a photo of noise pattern",
                                 help="'|'-separated concept prompts; the first is the subject."),
    prompt: str = typer.Option(protocol.INSTANCE_PROMPT, help="Training prompt for image-prompt alignment."),
    resolution: int = typer.Option(512, help=f"{RESOLUTION_HELP} when loading."),
    device: str = device_option(),
) -> None:
    """M1 / M2 latent misalignment: CLIP concept rates, embedding shift, 2-D projections."""
    from rich.table import Table

    from ..analysis import analyze as run
    from ..images import read_images
    from ..models import load_clip

    check_resolution(resolution)
    model = load_clip(clip, device=device)
    sets = {d.name if d.name not in ("", ".") else str(d): read_images(d, resolution).images for d in dirs}
    summary = run(model, sets, out, concepts=concepts.split("|"), prompt=prompt)
    table = Table(title=f"latent misalignment ({clip})")
    for col in ("set", "n", "subject rate", "p(subject)", "cos gap", "prompt cos", "cos to clean"):
        table.add_column(col)
    for name, g in summary["groups"].items():
        table.add_row(name, str(g["n"]), fmt(g["subject_rate"]), fmt(g["p_subject"]), fmt(g["cos_gap"]),
                      fmt(g["prompt_alignment"]), fmt(g.get("cos_to_paired_clean", g.get("cos_to_clean_centroid"))))
    console.print(table)
    console.print(f"wrote {out / 'misalignment.json'} and plots {', '.join(summary.get('plots', {}).values())}",
                  markup=False, highlight=False)


@analyze_app.command("m3")
def analyze_m3(
    run_dir: Path = typer.Argument(..., help="A finished `cloakbench bench` run folder whose grid lists `none`, the "
                                   "protection(s) and `random-noise` at the same eps."),
    recipe: list[str] = typer.Option(None, "--recipe", help="Only this recipe (repeatable; default: all)."),
    out: Path = typer.Option(None, "--out", help="Folder for m3.json (default: RUN_DIR/analysis)."),
) -> None:
    """M3 random-noise control: clean vs protected vs random noise of the same L-inf, after the same fine-tune."""
    from rich.markup import escape
    from rich.table import Table

    from ..analysis import random_noise_control

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
            cells = [fmt(row.get(m)) + (f" (gap {gaps[m]['mean']:+.4f})" if gaps.get(m) else "") for m in metrics]
            linf = s["linf_255"].get(label)
            table.add_row(escape("clean" if label == "none" else label), "0" if label == "none" else
                          ("?" if linf is None else f"{linf:g}"), *cells)
        console.print(table)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    console.print(f"wrote {target / 'm3.json'}", markup=False, highlight=False)


@analyze_app.command("m4")
def analyze_m4(
    model: str = typer.Argument(..., help="Trained model: a `cloakbench train` / bench train-stage folder, a diffusers "
                                "folder or a model name."),
    out: Path = typer.Option(..., "--out", help="Output folder: one folder per prompt, grid.png, concepts.json."),
    subject: str = typer.Option(protocol.CLASS_WORD, help="Class noun of the prompts (the mini world's: toy)."),
    n: int = typer.Option(None, "-n", help="Images per prompt (default: infer.py's 2 x 8 = 16)."),
    steps: int = typer.Option(None, help="Sampling steps (default: infer.py's 100)."),
    guidance: float = typer.Option(None, help="Classifier-free guidance (default: infer.py's 7.5)."),
    seed: int = seed_option("Image j of every prompt uses seed + j."),
    references: Path = typer.Option(None, "--references", "-r", help="Clean photos of the identity for ISM / verified."),
    metrics: str = typer.Option(None, help="Comma-separated metrics (default with --references: ism,fdfr; else none)."),
    clip: str = typer.Option(None, help="CLIP for the concept rates (class vs noise) of each prompt's samples."),
    device: str = device_option(),
    dtype: str = typer.Option(None, help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)."),
) -> None:
    """M4 concept extraction: samples of "a photo of sks", "a photo of sks <class>", "a photo of <class>"."""
    from rich.markup import escape
    from rich.table import Table

    from ..analysis import extract_concepts

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
        table.add_row(escape(prompt), e["folder"], *(fmt(e["metrics"].get(k)) for k in keys),
                      *([fmt(rates["subject_rate"]), fmt(rates["p_subject"])] if rates else []))
    console.print(table)
    console.print(f"wrote {out / 'grid.png'} and {out / 'concepts.json'}", markup=False, highlight=False)
