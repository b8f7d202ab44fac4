"""The bench runner: expand the grid into a DAG of stage specs, run what is not done, store results.

Stages: protect -> purify -> (class images) -> train -> sample -> evaluate. Each spec's hash names its
folder under ``RUN/artifacts``; a stage works in ``.work-<name>`` and is renamed into place when it
finishes, then ``DONE.json`` (outputs, seconds, versions, device) is written. A rerun skips every
stage with a ``DONE.json``; a stage killed halfway is redone (training resumes from its own
checkpoint in the work folder). Shared upstream work (one protected set feeding several red-teams)
runs once because identical specs have identical hashes.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..images import IMAGE_SUFFIXES, atomic_write_bytes, parse_budget, read_images, save_images
from .config import BenchConfig, prompts
from .spec import Spec, files_hash
from .store import write_rows

log = logging.getLogger(__name__)


def identity_files(cfg: BenchConfig, ident: str) -> tuple[list[Path], list[Path]]:
    """(images to protect and train on, clean reference images) of one identity."""
    root = cfg.data.root / ident

    def imgs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    if cfg.data.layout == "setabc":
        return imgs(root / "set_B"), imgs(root / "set_C")
    files = imgs(root / cfg.data.subdir)
    need = cfg.data.train + cfg.data.reference
    if len(files) < need:
        raise ValueError(f"{root / cfg.data.subdir}: {len(files)} images, the split needs {need}")
    return files[: cfg.data.train], files[cfg.data.train : need]


def identities(cfg: BenchConfig) -> list[str]:
    return cfg.data.identities or sorted(p.name for p in cfg.data.root.iterdir() if p.is_dir())


def plan(cfg: BenchConfig) -> tuple[list[Spec], dict[str, list[Path]]]:
    """The DAG in topological order (deduplicated by hash) and the input file groups by content hash."""
    specs: dict[str, Spec] = {}
    files: dict[str, list[Path]] = {}

    def add(spec: Spec) -> Spec:
        specs.setdefault(spec.hash, spec)
        return specs[spec.hash]

    instance_prompt, class_prompt = prompts(cfg)
    for ident in identities(cfg):
        train_files, ref_files = identity_files(cfg, ident)
        train_key, ref_key = "files:" + files_hash(train_files), "files:" + files_hash(ref_files)
        files[train_key], files[ref_key] = train_files, ref_files
        for seed in cfg.seeds:
            for prot in cfg.protections:
                if prot.method.lower() == "none":  # the clean baseline: train on the images as they are
                    protected = train_key
                else:
                    eps = None if prot.eps is None else parse_budget(prot.eps)
                    protected = add(Spec("protect", {"method": prot.method, "eps": eps, "steps": prot.steps,
                                                     "options": prot.options, "model": cfg.model, "models": prot.models,
                                                     "prompts": [instance_prompt, class_prompt],
                                                     "resolution": cfg.resolution, "seed": seed},
                                         {"images": train_key}, {"identity": ident})).hash
                for pur in cfg.purifications:
                    if prot.method.lower() == "none" and pur != "none" and not cfg.purify_clean:
                        continue
                    u = protected if pur == "none" else add(Spec(
                        "purify", {"method": pur, "options": cfg.purify_options.get(pur, {}), "seed": seed,
                                   "resolution": cfg.resolution}, {"images": protected})).hash
                    for recipe in cfg.recipes:
                        if recipe.purifications is not None and pur not in recipe.purifications:
                            continue
                        inputs = {"instances": u}
                        if recipe.prior:
                            c = add(Spec("class_images", {"model": cfg.model, "prompt": class_prompt,
                                                          "n": recipe.num_class_images, "steps": recipe.class_steps,
                                                          "resolution": cfg.resolution, "seed": seed}))
                            inputs["classes"] = c.hash
                        t = add(Spec("train", {"recipe": recipe.model_dump(), "model": cfg.model,
                                               "prompts": [instance_prompt, class_prompt],
                                               "resolution": cfg.resolution, "seed": seed}, inputs))
                        for qes in cfg.sampling.qes:
                            s = add(Spec("sample", {"qes": qes, "prompts": cfg.sampling.prompts, "n": cfg.sampling.n,
                                                    "steps": cfg.sampling.steps, "seed": seed}, {"model": t.hash}))
                            add(Spec("evaluate", {"metrics": cfg.metrics, "resolution": cfg.resolution},
                                     {"images": s.hash, "references": ref_key},
                                     {"identity": ident, "protection": _label(prot), "purification": pur,
                                      "recipe": recipe.name, "qes": int(qes), "seed": seed}))
    return list(specs.values()), files


def _label(prot) -> str:
    if prot.method.lower() == "none":
        return "none"
    return prot.method + (f"@{prot.eps}" if prot.eps is not None else "")


def _min_size(params: dict) -> int:
    """Refuse inputs smaller than the stage resolution (or 64 px), never upscale tiny files silently."""
    from ..images import DEFAULT_MIN_SIZE

    return min(DEFAULT_MIN_SIZE, int(params["resolution"]))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for d in ("cloakbench", "torch", "diffusers", "transformers", "peft"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    try:
        import subprocess

        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
        if sha:
            out["git"] = sha
    except (OSError, subprocess.SubprocessError):
        pass
    return out


class Runner:
    """Runs a plan in ``run_dir`` (``artifacts/``, ``results.sqlite``, ``bench.log``)."""

    def __init__(self, cfg: BenchConfig, run_dir: str | Path, *, device: str | None = None) -> None:
        from ..models.device import pick_device

        self.cfg, self.run = cfg, Path(run_dir)
        self.art = self.run / "artifacts"
        self.db = self.run / "results.sqlite"
        self.device = str(pick_device(device))
        self.specs, self.files = plan(cfg)
        self.by_hash = {s.hash: s for s in self.specs}

    def folder(self, spec: Spec) -> Path:
        return self.art / spec.folder_name

    def done(self, spec: Spec) -> bool:
        return (self.folder(spec) / "DONE.json").is_file()

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in self.specs:
            c = out.setdefault(s.kind, {"total": 0, "done": 0})
            c["total"] += 1
            c["done"] += int(self.done(s))
        return out

    def _input_paths(self, key: str) -> list[Path]:
        if key.startswith("files:"):
            return self.files[key]
        folder = self.folder(self.by_hash[key])
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")

    def execute(self, progress: Callable[[Spec, str], None] | None = None) -> dict[str, int]:
        """Run every stage not yet done, in order; returns counts of run and skipped stages."""
        self.art.mkdir(parents=True, exist_ok=True)
        ran = skipped = 0
        with (self.run / "bench.log").open("a") as logf:
            for spec in self.specs:
                if self.done(spec):
                    skipped += 1
                    logf.write(f"{time.strftime('%H:%M:%S')} skip {spec.folder_name} (DONE)\n")
                    if progress:
                        progress(spec, "skipped")
                    continue
                if progress:
                    progress(spec, "running")
                logf.write(f"{time.strftime('%H:%M:%S')} run  {spec.folder_name}\n")
                logf.flush()
                self.run_stage(spec)
                ran += 1
                if progress:
                    progress(spec, "done")
        return {"ran": ran, "skipped": skipped}

    def run_stage(self, spec: Spec) -> None:
        final = self.folder(spec)
        work = self.art / f".work-{spec.folder_name}"
        if spec.kind != "train" and work.exists():
            shutil.rmtree(work)  # a killed stage starts over (training resumes from its checkpoint)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        outputs = getattr(self, f"_stage_{spec.kind}")(spec, work)
        seconds = time.perf_counter() - t0
        if final.exists():
            shutil.rmtree(final)
        work.replace(final)
        done = {"spec": {"kind": spec.kind, "params": spec.params, "inputs": spec.inputs, "labels": spec.labels},
                "hash": spec.hash, "outputs": outputs, "seconds": seconds, "versions": versions(),
                "device": self.device, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_bytes(final / "DONE.json", json.dumps(done, indent=2, default=str).encode())

    # ------------------------------------------------------------------ stages
    def _model(self):
        from ..models import load_model

        return load_model(self.cfg.model, device=self.device)

    def _stage_protect(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..images import perturbation_norms
        from ..protect import create_protection

        p = spec.params
        paths = self._input_paths(spec.inputs["images"])
        x = read_images(paths, p["resolution"], min_size=_min_size(p)).images
        kw = {k: v for k, v in (("eps", p["eps"]), ("steps", p["steps"])) if v is not None}
        if "prompts" in p:  # the protector expects the mimic's prompts (Anti-DreamBooth: "a photo of sks person")
            kw.update(prompt=p["prompts"][0], class_prompt=p["prompts"][1])
        prot = create_protection(p["method"], **{**kw, **p["options"]})
        if p.get("models"):
            from ..models import load_model

            surrogate = [load_model(m, device=self.device) for m in p["models"]]
        else:
            surrogate = self._model()
        adv = prot(x, surrogate, seed=p["seed"])
        save_images(adv, work, [q.stem for q in paths])
        d = perturbation_norms(x, adv)
        return {"files": [q.stem + ".png" for q in paths], "sources": [str(q) for q in paths], "measured": d.summary(),
                "config": prot.config()}

    def _stage_purify(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..purify import create_purifier

        p = spec.params
        paths = self._input_paths(spec.inputs["images"])
        x = read_images(paths, p["resolution"], min_size=_min_size(p)).images
        pur = create_purifier(p["method"], seed=p["seed"], device=self.device, **p["options"])
        out = pur(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = torch.nn.functional.interpolate(out, size=x.shape[-2:], mode="bicubic", antialias=True,
                                                  align_corners=False).clamp(0, 1)
        save_images(out, work, [q.stem for q in paths])
        return {"seconds_per_image": pur.stats["seconds_per_image"], "config": pur.config(),
                "fidelity": self._fidelity(spec.inputs["images"], out)}

    def _fidelity(self, key: str, purified: torch.Tensor) -> dict[str, float | None]:
        """PSNR / SSIM / LPIPS of purified images against their clean sources (the paper's Table 2
        reports LPIPS per purifier); LPIPS is None when its package or weights are missing."""
        from ..metrics import create_metric

        if key.startswith("files:"):
            clean_paths = self.files[key]
        else:
            up = self.by_hash[key]
            clean_paths = self.files[up.inputs["images"]] if up.inputs.get("images", "").startswith("files:") else []
        if len(clean_paths) != purified.shape[0]:
            return {}
        clean = read_images(clean_paths, purified.shape[-1], min_size=None).images
        out: dict[str, float | None] = {}
        for name in ("psnr", "ssim", "lpips"):
            try:
                out[name] = create_metric(name)(purified, clean).value
            except Exception as exc:  # noqa: BLE001 - a missing optional metric is recorded, not fatal
                log.info("fidelity %s unavailable: %s", name, exc)
                out[name] = None
        return out

    def _stage_class_images(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..personalize import prepare_class_images

        p = spec.params
        prepare_class_images(self._model(), p["n"], p["prompt"], work, seed=p["seed"], steps=p["steps"],
                             resolution=p["resolution"])
        return {"n": p["n"]}

    def _stage_train(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..personalize import CDLPolicy, DreamBoothTrainer, TrainConfig

        p, r = spec.params, spec.params["recipe"]
        inst = read_images(self._input_paths(spec.inputs["instances"]), p["resolution"], min_size=_min_size(p)).images
        cls = (read_images(self._input_paths(spec.inputs["classes"]), p["resolution"], min_size=_min_size(p)).images
               if "classes" in spec.inputs else None)
        instance_prompt, class_prompt = p.get("prompts", ["a photo of sks person", "a photo of person"])
        cfg = TrainConfig(instance_prompt=instance_prompt, class_prompt=class_prompt,
                          steps=r["steps"], lr=r["lr"] or (1e-4 if r["lora"] else 5e-7), lora=r["lora"],
                          lora_rank=r["lora_rank"], prior_weight=1.0 if r["prior"] else 0.0,
                          resolution=p["resolution"], seed=p["seed"], checkpoint_every=max(1, r["steps"] // 4),
                          cdl=CDLPolicy(enabled=r["cdl"]))
        result = DreamBoothTrainer(self._model(), cfg, work).fit(inst, cls, resume=True)
        return {"steps": result["steps"], "resumed_from": result["resumed_from"],
                "instance_prompt": result["instance_prompt"], "final_loss": result["losses"][-1] if result["losses"] else None}

    def _stage_sample(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..personalize import CDLPolicy, load_personalized
        from ..sample import SampleConfig, generate, qes_config

        p = spec.params
        folder = self.folder(self.by_hash[spec.inputs["model"]])
        meta = json.loads((folder / "personalized.json").read_text())
        cdl = CDLPolicy(**meta["config"]["cdl"])
        cfg = qes_config(cdl, steps=p["steps"] or 100) if p["qes"] else SampleConfig(steps=p["steps"] or 50)
        model = load_personalized(folder, device=self.device)
        imgs = generate(model, p["prompts"], p["n"], cfg, seed=p["seed"])
        save_images(imgs, work, [f"p{i}-{j:03d}" for i in range(len(p["prompts"])) for j in range(p["n"])])
        return {"config": cfg.as_dict()}

    def _stage_evaluate(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..metrics import create_metric

        p = spec.params
        gen = read_images(self._input_paths(spec.inputs["images"]), None, min_size=None).images
        refs = read_images(self._input_paths(spec.inputs["references"]), p["resolution"], min_size=_min_size(p)).images
        rows, results = [], {}
        prov = {"versions": versions(), "device": self.device}
        for name in p["metrics"]:
            t0 = time.perf_counter()
            m = create_metric(name)
            r = m(gen, refs if m.needs_reference else None)
            results[r.name] = r.as_dict()
            rows.append({"spec_hash": spec.hash, "metric": r.name, "value": r.value, "n": r.n, "n_no_face": r.n_no_face,
                         **spec.labels, "details": r.details, "provenance": {**prov, "seconds": time.perf_counter() - t0}})
        atomic_write_bytes(work / "metrics.json", json.dumps(results, indent=2, default=str).encode())
        write_rows(self.db, rows)
        return {"metrics": list(results)}
