"""``cloakbench report RUN_DIR``: a static HTML report rendered from the results database (Jinja2).

Sections: the verdict (:mod:`cloakbench.bench.verdict`: each protection's measured budget, gap and the share
each red team recovers, as tables and a plot), the main table (clean first; protection x red-team x recipe x QES, each metric as mean ± std over
identities and seeds, with a mark ``*`` where the paired difference to the unpurified cell has
p <= 0.01, as the paper marks: an exact sign-flip permutation test, :func:`paired_images`), protections x red-teams pivots per metric, the adaptive attack's
E[Avg] at P = 0.5 (when IMS and Q were measured), seconds per image and PSNR / SSIM / LPIPS of each
purifier, image grids per cell (clean /
protected / purified / generated), a bar plot per metric (matplotlib), and provenance. Images are
linked relative to the run folder, so the report opens from disk.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from jinja2 import Environment, select_autoescape

from ..metrics.base import mean_std, sign_flip_test
from .store import read_rows
from .verdict import compute
from .verdict_plot import plot
from .verdict_view import budget, interval, share

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cloakbench report: {{ name }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} td{white-space:nowrap} td.l{white-space:normal} .grid img{width:96px;height:96px;object-fit:cover;margin:1px} #images td{vertical-align:top}
.grid{display:grid;grid-template-columns:repeat(2,98px)} .cell{margin:6px 0}
.grid.px img{image-rendering:pixelated}
.small{color:#666;font-size:12px} td.breaks{color:#b00;font-weight:bold} td.holds{color:#070}
</style></head>
<body data-images="{{ n_images }}">
<h1>cloakbench report: {{ name }}</h1>
<p class="small">{{ rows_count }} result rows from <code>results.sqlite</code>; {{ n_cells }} cells. Values are mean ± std
over identities and seeds; <b>*</b> marks p &le; 0.01 against the same cell without purification: a two-sided sign-flip
permutation test paired per generated image (same identity, seed, prompt and sampling seed; exact up to 16 pairs). Metric labels carry their backend: <code>ism[dlib]</code> is not the papers' ArcFace ISM.</p>
{% if verdict.victims %}<h2>Verdict: does each protection hold?</h2>
<p class="small">On <code>{{ verdict.headline }}</code>, {{ verdict.identities|length }} identities x {{ verdict.seeds }}
seed(s) x {{ verdict.samples }} samples per cell; 95 % bootstrap intervals over identities. Gap = clean - protected, signed
so that &gt; 0 means the protection works; a red team <b>breaks</b> a protection when the whole interval of the share of
the gap it recovers is at or above {{ (100 * verdict.breaks_at)|round|int }} %, <b>holds</b> when the whole interval is
below, and is <b>unresolved</b> otherwise. L-inf / L2: measured on the saved 8-bit PNGs the cells trained on.</p>
{% for v in verdict.victims %}{% if verdict.victims|length > 1 %}<h3>{{ v.victim }}</h3>{% endif %}
<table id="verdict"><tr><th class="l">protection</th><th>L-inf</th><th>L2</th><th class="l">verdict</th>
{% for m in scored %}<th>gap {{ m }}</th>{% endfor %}</tr>
{% for p in v.protections %}<tr><td class="l">{{ p.protection }}</td><td>{{ p.budget_text }}</td><td>{{ p.l2_text }}</td>
<td class="l">{{ p.line }}</td>{% for m in scored %}<td>{{ p.gap_text[m] }}</td>{% endfor %}</tr>{% endfor %}
</table>
<table class="teams"><tr><th class="l">protection</th><th class="l">red team</th><th class="l">state</th>
{% for m in scored %}<th>recovered {{ m }}</th>{% endfor %}</tr>
{% for p in v.protections %}{% for t in p.teams %}<tr><td class="l">{{ p.protection }}</td>
<td class="l">{{ t.red_team }}{{ " (strongest)" if t.red_team == p.strongest }}</td><td class="l {{ t.state }}">{{ t.state }}</td>
{% for m in scored %}<td>{{ t.share_text[m] }}</td>{% endfor %}</tr>{% endfor %}{% endfor %}
</table>{% endfor %}
{% if verdict_plot %}<img class="plot" src="{{ verdict_plot }}" alt="verdict" style="max-width:960px">{% endif %}
{% endif %}
<h2>Results</h2>
<table id="results"><tr><th class="l">protection</th><th>L-inf</th><th class="l">red-team</th><th class="l">recipe</th><th>QES</th>
{% for m in metrics %}<th>{{ m }}</th>{% endfor %}</tr>
{% for r in table %}<tr><td class="l">{{ r.protection }}</td><td>{{ r.linf }}</td><td class="l">{{ r.purification }}</td><td class="l">{{ r.recipe }}</td>
<td>{{ "yes" if r.qes else "no" }}</td>{% for m in metrics %}<td>{{ r.cells[m] }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Protections &times; red-teams</h2>
<p class="small">The paper's layout (Table 1 / ablation): one table per metric, a row per protection, a column per
red-team (purification, training recipe, QES); mean over identities and seeds.</p>
{% for pv in pivots %}<h3>{{ pv.metric }}</h3>
<table class="pivot"><tr><th class="l">protection</th>{% for c in pv.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in pv.rows %}<tr><td class="l">{{ r.protection }}</td>{% for v in r.vals %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endfor %}
{% if eavg %}<h2>Adaptive attack: E[Avg] at P = {{ eavg.p }}</h2>
<p class="small">The paper's Table 3: Avg = (IMS + Q) / 2 per cell; E[Avg] = P Avg(adaptive protection) + (1 - P)
Avg(its non-adaptive base), P = probability that the protector adapts to the red-team.</p>
<table id="eavg"><tr><th class="l">adaptive</th><th class="l">base</th>{% for c in eavg.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in eavg.rows %}<tr><td class="l">{{ r.adaptive }}</td><td class="l">{{ r.base }}</td>{% for v in r.vals %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
<h2>Purifiers: time and fidelity</h2>
<p class="small">Seconds per image, and PSNR / SSIM / LPIPS of the purified images against their clean sources
(the paper's Table 2 reports time and LPIPS; n/a: the metric's package or weights are missing).</p>
<table id="timing"><tr><th class="l">purifier</th><th>s / image</th><th>PSNR</th><th>SSIM</th><th>LPIPS</th><th>runs</th></tr>
{% for p in timing %}<tr><td class="l">{{ p.name }}</td><td>{{ "%.3f"|format(p.seconds) }}</td><td>{{ p.psnr }}</td>
<td>{{ p.ssim }}</td><td>{{ p.lpips }}</td><td>{{ p.n }}</td></tr>{% endfor %}
</table>
{% if analysis %}<h2>Latent misalignment</h2>
<p class="small">The paper's idea (§3): protected images move away from their clean versions in the latent space, and
the red team brings them back; the projections of <code>analysis/</code> (clean, protected and purified images).</p>
{% for p in analysis %}<img class="plot" src="{{ p }}" alt="{{ p }}" style="max-width:720px">{% endfor %}{% endif %}
<h2>Plots</h2>
{% for p in plots %}<img class="plot" src="{{ p }}" alt="{{ p }}" style="max-width:720px">{% endfor %}
<h2>Images</h2>
<p class="small">One row per cell (the first {{ grids|length }}, clean first): the clean photos it started from, the
protected, the purified (red team) and the generated images, in aligned columns; every image links to its file.</p>
<table id="images"><tr><th class="l">cell</th>{% for col in image_columns %}<th class="l">{{ col }}</th>{% endfor %}</tr>
{% for c in grids %}<tr><td class="l small">{{ c.title }}</td>{% for col in image_columns %}<td class="l">
<div class="grid{{ ' px' if c.pixelated }}">{% for src in c.columns.get(col, []) %}<a href="{{ src }}"><img src="{{ src }}" alt="{{ col }}"></a>{% endfor %}</div></td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Provenance</h2><pre>{{ provenance }}</pre>
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-loaded", ok + "/" + imgs.length);
});
</script>
</body></html>
"""


def _fmt(values: list[float | None]) -> tuple[str, float | None]:
    mu, sd, n = mean_std(values)
    return ("n/a" if mu is None else f"{mu:.3f} ± {sd:.3f}"), mu


def build(run_dir: str | Path, *, max_grids: int = 24) -> Path:
    """Render ``run_dir/report.html`` (and ``report_files/`` plots); returns the HTML path."""
    run = Path(run_dir)
    db = run / "results.sqlite"
    if not db.is_file():
        raise FileNotFoundError(f"{db} does not exist: run `cloakbench bench` first")
    rows = read_rows(db)
    metrics = sorted({r["metric"] for r in rows})
    art = run / "artifacts"
    done = [json.loads(p.read_text()) | {"_dir": p.parent} for p in sorted(art.glob("*/DONE.json"))]
    per_image = paired_images(rows, {d["hash"]: d["_dir"] for d in done if d["spec"]["kind"] == "evaluate"})
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[(r["protection"], r["purification"], r["recipe"], r["qes"])][r["metric"]].append(r["value"])
    verdict = compute(run)
    budgets = {p["protection"]: p["budget"] for v in verdict["victims"] for p in v["protections"] if p["budget"]}
    table = []
    clean_first = lambda c: (c[0] != "none", c[0], c[1] != "none", c[1], c[2], c[3])  # noqa: E731
    for cell in sorted(cells, key=clean_first):
        out, means = {}, {}
        for m in metrics:
            text, means[m] = _fmt(cells[cell][m])
            base = (cell[0], "none", cell[2], cell[3])
            if cell[1] != "none" and base in cells:
                a, b = per_image.get((cell, m), {}), per_image.get((base, m), {})
                pairs = [(a[k], b[k]) for k in sorted(a) if k in b]
                if pairs and sign_flip_test([x for x, _ in pairs], [y for _, y in pairs])["significant"]:
                    text += " *"
            out[m] = text
        table.append({"protection": cell[0], "purification": cell[1], "recipe": cell[2], "qes": cell[3], "cells": out,
                      "means": means, "linf": budget(budgets.get(cell[0])) if cell[0] != "none" else ""})
    by_hash = {d["hash"]: d for d in done}
    timing: dict[str, list[dict]] = defaultdict(list)
    for d in done:
        if d["spec"]["kind"] == "purify":
            timing[d["spec"]["params"]["method"]].append(d["outputs"])
    timing_rows = []
    for k, outs in sorted(timing.items()):
        row = {"name": k, "seconds": sum(o["seconds_per_image"] for o in outs) / len(outs), "n": len(outs)}
        for f in ("psnr", "ssim", "lpips"):
            vals = [o.get("fidelity", {}).get(f) for o in outs]
            row[f] = _fmt(vals)[0] if any(v is not None for v in vals) else "n/a"
        timing_rows.append(row)
    pivots = _pivots(rows, metrics)
    bases = {"adaptive": d["spec"]["params"]["options"].get("base", "advdm")
             for d in done if d["spec"]["kind"] == "protect" and d["spec"]["params"]["method"] == "adaptive"}
    eavg = expected_avg_table(rows, bases)

    def pngs(d: dict, k: int = 4) -> list[str]:
        return [_href(p, run) for p in sorted(Path(d["_dir"]).glob("*.png"))[:k]]

    def order(d: dict) -> tuple:  # one identity's cells together: clean first, then by protection and red-team
        lab = d["spec"]["labels"]
        return (str(lab.get("identity")), lab.get("seed", 0), lab.get("protection") != "none", str(lab.get("protection")),
                lab.get("purification") != "none", str(lab.get("purification")), str(lab.get("recipe")), lab.get("qes", 0))

    clean_photos = {d["spec"]["labels"].get("identity"): d["outputs"]["sources"] for d in done  # for the clean cells
                    if d["spec"]["kind"] == "protect" and d["outputs"].get("sources")}
    grids = []
    for d in sorted((d for d in done if d["spec"]["kind"] == "evaluate"), key=order)[:max_grids]:
        lab = d["spec"]["labels"]
        sample = by_hash.get(d["spec"]["inputs"]["images"])
        train = by_hash.get(sample["spec"]["inputs"]["model"]) if sample else None
        upstream = by_hash.get(train["spec"]["inputs"]["instances"]) if train else None
        chain = [("generated", sample)]
        if upstream and upstream["spec"]["kind"] == "purify":
            chain.insert(0, ("purified", upstream))
            upstream = by_hash.get(upstream["spec"]["inputs"]["images"])
        if upstream:
            chain.insert(0, ("protected", upstream))
        rows_img = [{"label": label, "images": pngs(x)} for label, x in chain if x]
        sources = (upstream["outputs"].get("sources") if upstream else None) or clean_photos.get(lab.get("identity"))
        if sources:
            rows_img.insert(0, {"label": "clean", "images": [_href(p, run) for p in sources[:4]]})
        grids.append({"title": " / ".join(f"{k}={v}" for k, v in lab.items()), "rows": rows_img,
                      "columns": {r["label"]: r["images"] for r in rows_img},
                      "pixelated": _small(run / unquote(rows_img[-1]["images"][0])) if rows_img and rows_img[-1]["images"]
                      else False})

    plots = _plots(run, table, metrics)
    scored = [m for m, d in verdict["metrics"].items() if d is not None]
    for v in verdict["victims"]:
        for p in v["protections"]:
            p["budget_text"] = budget(p["budget"])
            p["l2_text"] = f"{p['budget']['l2_255']:.0f}/255" if p["budget"] else "-"
            p["gap_text"] = {m: interval(p["gap"].get(m)) for m in scored}
            for t in p["teams"]:
                t["share_text"] = {m: share(t["recovered"].get(m), t["state"] if m == verdict["headline"] else None)
                                   for m in scored}
    verdict_plot = plot(verdict, run / "report_files")
    analysis = [_href(p, run) for p in sorted((run / "analysis").glob("*.png"))]
    prov = rows[0]["provenance"] if rows else "{}"
    html = Environment(autoescape=select_autoescape()).from_string(TEMPLATE).render(
        name=run.name, rows_count=len(rows), n_cells=len(cells), metrics=metrics, table=table, timing=timing_rows,
        pivots=pivots, eavg=eavg, verdict=verdict, image_columns=("clean", "protected", "purified", "generated"), scored=scored, analysis=analysis,
        verdict_plot=f"report_files/{verdict_plot}" if verdict_plot else None,
        grids=grids, plots=plots, provenance=json.dumps(json.loads(prov), indent=2),
        n_images=sum(len(r["images"]) for g in grids for r in g["rows"]) + len(plots))
    out = run / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html)
    os.replace(tmp, out)
    return out


def _href(path: str | Path, run: Path) -> str:
    """A link from report.html to ``path``: relative to the run folder, percent-encoded, so names holding ``#``,
    ``%``, ``?`` or spaces open the right file (#37 item 6)."""
    return quote(os.path.relpath(path, run))


def paired_images(rows: list[dict[str, Any]], folders: dict[str, Path]) -> dict[tuple, dict[tuple, float]]:
    """Per-image values of each (cell, metric), keyed ``(identity, seed, file)``: the unit the report's
    significance test pairs. A generated file ``p<i>-<jjj>.png`` is prompt ``i``'s image ``j``, drawn from
    the same initial latent (seed + i * n + j, the sample stage's rule) in every cell, so two cells' images of one key differ only by the
    cell. Images without a value (no face) are left out; an evaluate folder without ``metrics.json``
    (older runs) contributes its cell-level value under the key ``(identity, seed, "")``."""
    out: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    cache: dict[str, dict] = {}
    for r in rows:
        cell = (r["protection"], r["purification"], r["recipe"], r["qes"])
        folder = folders.get(r["spec_hash"])
        if folder is not None and r["spec_hash"] not in cache:
            f = Path(folder) / "metrics.json"
            cache[r["spec_hash"]] = json.loads(f.read_text()) if f.is_file() else {}
        values = cache.get(r["spec_hash"], {}).get(r["metric"], {}).get("per_image")
        if values is None:
            values = {"": r["value"]}
        for name, v in values.items():
            if v is not None:
                out[(cell, r["metric"])][(r["identity"], r["seed"], name)] = float(v)
    return out


def _small(png: Path, shown: int = 96) -> bool:
    """Whether an image is smaller than its 96 px thumbnail (shown with crisp pixels, not a blur)."""
    from PIL import Image

    with Image.open(png) as im:
        return max(im.size) < shown


def expected_avg_table(rows: list[dict[str, Any]], bases: dict[str, str], p: float = 0.5) -> dict[str, Any] | None:
    """E[Avg] per red-team column for each adaptive protection and its base (None without IMS and Q)."""
    from ..metrics.iqa import avg_score, expected_avg

    cell: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        kind = "ims" if r["metric"].startswith("ims") and not r["metric"].startswith("ims_") else (
            "q" if r["metric"] == "q" or r["metric"].startswith("q[") else None)
        if kind and r["value"] is not None:
            col = f"{r['purification']} | {r['recipe']}{' | QES' if r['qes'] else ''}"
            cell[(r["protection"], col)][kind].append(r["value"])
    avg = {k: avg_score(sum(v["ims"]) / len(v["ims"]), sum(v["q"]) / len(v["q"])) for k, v in cell.items()
           if v["ims"] and v["q"]}
    prots = {k[0] for k in avg}
    cols = sorted({k[1] for k in avg}, key=lambda c: (c.split(" | ")[0] != "none", c))
    out = []
    for label in sorted(prots):
        if not label.startswith("adaptive"):
            continue
        base = bases.get(label.split("@")[0], "advdm")  # the adaptive protection's inner method
        partner = next((q for q in sorted(prots) if q.split("@")[0] == base), None)
        if partner is None:
            continue
        out.append({"adaptive": label, "base": partner, "vals": [
            f"{expected_avg(avg[(label, c)], avg[(partner, c)], p):.3f}" if (label, c) in avg and (partner, c) in avg
            else "" for c in cols]})
    return {"p": p, "columns": cols, "rows": out} if out else None


def _pivots(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Per metric: protections as rows, red-teams (purification | recipe | QES) as columns, cell means."""
    out = []
    for m in metrics:
        vals: dict[tuple[str, str], list] = defaultdict(list)
        cols: list[str] = []
        prots: list[str] = []
        for r in rows:
            if r["metric"] != m:
                continue
            col = f"{r['purification']} | {r['recipe']}{' | QES' if r['qes'] else ''}"
            cols += [col] if col not in cols else []
            prots += [r["protection"]] if r["protection"] not in prots else []
            vals[(r["protection"], col)].append(r["value"])
        cols.sort(key=lambda c: (c.split(" | ")[0] != "none", c))
        prots.sort(key=lambda p: (p != "none", p))
        out.append({"metric": m, "columns": cols, "rows": [
            {"protection": p, "vals": [_fmt(vals[(p, c)])[0] if (p, c) in vals else "" for c in cols]} for p in prots]})
    return out


def _plots(run: Path, table: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """One horizontal bar chart per metric (cell means); returns relative PNG paths (none without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = run / "report_files"
    folder.mkdir(exist_ok=True)
    out = []
    for m in metrics:
        labels, values = [], []
        for r in table:
            if r["means"][m] is None:
                continue
            labels.append(f"{r['protection']} | {r['purification']} | {r['recipe']}{' | QES' if r['qes'] else ''}")
            values.append(float(r["means"][m]))
        if not values:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(values) + 1), dpi=100)
        ax.barh(range(len(values)), values)
        ax.set_yticks(range(len(values)), labels, fontsize=7)
        ax.set_title(m)
        fig.tight_layout()
        name = "".join(ch if ch.isalnum() else "_" for ch in m) + ".png"
        fig.savefig(folder / name)
        plt.close(fig)
        out.append(f"report_files/{name}")
    return out
