"""The paper's result tables as grid cells: which cell of a bench plan fills which table entry.

arXiv 2406.18944 reports Table 1 (IMS / Q, 12 rows x 8 protection columns), Table 3 (the adaptive
attack) and Table 4 (module ablation on ASPL) (docs/PAPER.md §12). A config with ``tables: paper``
(``configs/paper-faces.yaml``) names its recipes after the roles below; :func:`map_tables` resolves
every table entry to one planned cell ``(protection label, red-team, recipe, QES)`` and lists the
planned cells no entry uses and the entries no cell fills. ``cloakbench bench --dry-run`` prints the
mapping; tests/test_bench.py asserts it is one-to-one for the preset (every entry has its cell, every
cell fills an entry). Entries marked ``extension`` are cells the issue asks for beside the paper's
(e.g. QES without CDL); the paper's own entries are unmarked.

Roles (recipe names of the preset): ``dreambooth`` (no CDL), ``dreambooth-cdl`` (CDL), ``ablation``
(no CDL, ASPL only: the ablation's own baseline and its CodeFormer / SR / CodeSR rows),
``ablation-cdl`` (CDL, ASPL only, no purification), ``adaptive-codesr`` (no CDL, adaptive only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Table 1 columns -> protection method (Glaze is closed source: no protection code, data only).
COLUMNS = {"Clean": "none", "FSMG": "fsmg", "ASPL": "aspl", "EASPL": "e-aspl", "MetaCloak": "metacloak",
           "AdvDM": "advdm", "PhotoGuard": "photoguard", "Glaze": "glaze"}
# Table 1 rows -> (red-team, recipe, QES); PAPER.md §9 names the nine baselines and their settings.
ROWS = {
    "Clean training": ("none", "dreambooth", False),  # the clean column's cell, repeated in every column
    "Perturbed": ("none", "dreambooth", False),
    "Gaussian": ("blur", "dreambooth", False),
    "JPEG": ("jpeg", "dreambooth", False),
    "TVM": ("tvm", "dreambooth", False),
    "PixelDiffPure": ("pixel-diffpure", "dreambooth", False),
    "LatentDiffPure": ("latent-diffpure", "dreambooth", False),
    "LatentDiffPure-∅": ("latent-diffpure-empty", "dreambooth", False),
    "DDSPure": ("ddspure", "dreambooth", False),
    "GrIDPure": ("gridpure", "dreambooth", False),
    "IMPRESS": ("impress", "dreambooth", False),
    "Ours (CodeSR + CDL + QES)": ("codesr", "dreambooth-cdl", True),
    "Ours without QES (extension)": ("codesr", "dreambooth-cdl", False),
}
# Table 4 (ASPL only): CodeFormer / SR / CDL rows of the paper, then the combinations with QES.
ABLATION = {
    "none": ("none", "ablation", False),
    "CodeFormer": ("codeformer", "ablation", False),
    "SR": ("sd-upscaler", "ablation", False),
    "CodeFormer + SR (CodeSR)": ("codesr", "ablation", False),
    "CDL (+ QES)": ("none", "ablation-cdl", True),
    "CodeSR + CDL (+ QES)": ("codesr", "dreambooth-cdl", True),  # = Table 1's ASPL "Ours" cell
    "QES only (extension)": ("none", "ablation", True),
    "CodeFormer + QES (extension)": ("codeformer", "ablation", True),
    "SR + QES (extension)": ("sd-upscaler", "ablation", True),
    "CodeSR + QES (extension)": ("codesr", "ablation", True),
    "CDL without QES (extension)": ("none", "ablation-cdl", False),
}
# Table 3: Avg without / with the adaptive attack (16/255, PGD-6 through CodeSR). The paper's
# no-attack Avg values (0.385, -0.094) are Table 4's ASPL values, so "no attack" is the ASPL cell.
ADAPTIVE = {
    ("CodeSR + CDL", "no attack"): ("aspl", "codesr", "dreambooth-cdl", True),
    ("CodeSR + CDL", "attacked"): ("adaptive", "codesr", "dreambooth-cdl", True),
    ("CodeSR without CDL", "no attack"): ("aspl", "codesr", "ablation", False),
    ("CodeSR without CDL", "attacked"): ("adaptive", "codesr", "adaptive-codesr", False),
    ("CodeSR + CDL without QES (extension)", "no attack"): ("aspl", "codesr", "dreambooth-cdl", False),
    ("CodeSR + CDL without QES (extension)", "attacked"): ("adaptive", "codesr", "dreambooth-cdl", False),
}


@dataclass(frozen=True)
class Entry:
    table: str
    row: str
    column: str
    cell: tuple[str, str, str, bool] | None  # None: not planned (reason in ``note``)
    note: str = ""


def _labels(cfg) -> dict[str, str]:
    """Protection method -> its cell label in ``cfg`` (one entry per method in a paper grid)."""
    from .runfolder import protection_label

    return {p.method.lower(): protection_label(p) for p in cfg.protections}


def entries(cfg) -> list[Entry]:
    """Every entry of Tables 1, 3 and 4 with the cell of ``cfg`` that fills it."""
    labels = _labels(cfg)
    out = []
    for row, (pur, recipe, qes) in ROWS.items():
        for col, method in COLUMNS.items():
            if method not in labels:
                out.append(Entry("Table 1", row, col, None, f"no {method} protection in the grid"
                                 + (" (closed source: add Glaze-protected images as data)" if method == "glaze" else "")))
                continue
            prot = "none" if row == "Clean training" else labels[method]
            out.append(Entry("Table 1", row, col, (prot, pur, recipe, qes)))
    for row, (pur, recipe, qes) in ABLATION.items():
        out.append(Entry("Table 4 (ASPL)", row, "IMS / Q / Avg", (labels.get("aspl", "aspl"), pur, recipe, qes)))
    for (row, col), (method, pur, recipe, qes) in ADAPTIVE.items():
        out.append(Entry("Table 3", row, col, (labels.get(method, method), pur, recipe, qes)))
    return out


def map_tables(cfg, cells: set[tuple[str, str, str, bool]]) -> dict[str, Any]:
    """``{"entries": [...], "missing": entries whose cell is not planned, "unused": planned cells no entry
    uses}`` for the planned ``cells`` of ``cfg``."""
    es = entries(cfg)
    used = {e.cell for e in es if e.cell is not None}
    return {"entries": es, "missing": [e for e in es if e.cell is not None and e.cell not in cells],
            "unused": sorted(c for c in cells if c not in used)}


def planned_cells(specs) -> set[tuple[str, str, str, bool]]:
    """The result cells of a plan: the labels of its evaluate stages."""
    return {(s.labels["protection"], s.labels["purification"], s.labels["recipe"], bool(s.labels["qes"]))
            for s in specs if s.kind == "evaluate"}


def render(mapping: dict[str, Any]) -> list[str]:
    """Text lines: each table entry and its cell (or why it has none), then the problems."""
    lines = []
    for e in mapping["entries"]:
        cell = " | ".join(str(x) for x in e.cell[:3]) + (" | QES" if e.cell[3] else "") if e.cell else f"-- {e.note}"
        lines.append(f"{e.table:15} {e.row:30} {e.column:14} {cell}")
    for e in mapping["missing"]:
        lines.append(f"MISSING: {e.table} / {e.row} / {e.column} needs cell {e.cell}, which the grid does not plan")
    for c in mapping["unused"]:
        lines.append(f"UNUSED: planned cell {c} fills no table entry")
    return lines
