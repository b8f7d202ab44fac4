"""The bench runner: expand the grid into a DAG of stage specs, run what is not done, store results.

Stages: protect -> purify -> (class images) -> train -> sample -> evaluate. Each spec's hash names its
folder under ``RUN/artifacts``; a stage works in ``.work-<name>`` and is renamed into place when it
finishes, then ``DONE.json`` (outputs, seconds, versions, device) is written. A rerun skips every
stage with a ``DONE.json``; a stage killed halfway is redone (training resumes from its own
checkpoint in the work folder). Shared upstream work (one protected set feeding several red-teams)
runs once because identical specs have identical hashes.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


from .. import protocol, stages
from ..stages.output import write_record
from ..errors import ConfigError, RunFolderError
from ..images import parse_budget
from ..stages.protection import external_pairs
from .config import EXTERNAL, BenchConfig, identities, identity_files, missing_packages, prompts
from .runfolder import claim, locked, protection_label, refuse_foreign
from .spec import Spec, files_hash
from .store import write_rows

log = logging.getLogger(__name__)


def plan(cfg: BenchConfig) -> tuple[list[Spec], dict[str, list[Path]]]:
    """The DAG in topological order (deduplicated by hash) and the input file groups by content hash."""
    specs: dict[str, Spec] = {}
    files: dict[str, list[Path]] = {}

    def add(spec: Spec) -> Spec:
        specs.setdefault(spec.hash, spec)
        return specs[spec.hash]

    instance_prompt, class_prompt = prompts(cfg)
    for ident in identities(cfg):
        train_files, ref_files, protector_files = identity_files(cfg, ident)
        train_key, ref_key = "files:" + files_hash(train_files), "files:" + files_hash(ref_files)
        files[train_key], files[ref_key] = train_files, ref_files
        protect_inputs = {"images": train_key}
        if protector_files:  # setabc: surrogates train on set_A, with the prior's class images (Anti-DreamBooth)
            protect_inputs["surrogate"] = "files:" + files_hash(protector_files)
            files[protect_inputs["surrogate"]] = protector_files
        for seed in cfg.seeds:
            for prot in cfg.protections:
                if prot.method.lower() == "none":  # the clean baseline: train on the images as they are
                    protected = train_key
                elif prot.method.lower() == EXTERNAL:  # protected elsewhere: paired by name, budget measured
                    ext = [q for _, q in external_pairs(train_files, prot.path / ident)]
                    ext_key = "files:" + files_hash(ext)
                    files[ext_key] = ext
                    protected = add(Spec("protect", {"method": EXTERNAL, "eps": None, "resolution": cfg.resolution},
                                         {"images": train_key, "external": ext_key}, {"identity": ident})).hash
                else:
                    eps = None if prot.eps is None else parse_budget(prot.eps)
                    inputs = dict(protect_inputs)
                    if protector_files and _uses_prior(prot.method):
                        inputs["classes"] = add(class_spec(cfg, class_prompt, seed)).hash
                    protected = add(Spec("protect", {"method": prot.method, "eps": eps, "steps": prot.steps,
                                                     "options": prot.options, "model": cfg.model, "models": prot.models,
                                                     "prompts": [instance_prompt, class_prompt],
                                                     "resolution": cfg.resolution, "seed": seed},
                                         inputs, {"identity": ident})).hash
                for pur in cfg.purifications:
                    if prot.method.lower() == "none" and pur != "none" and not cfg.purify_clean:
                        continue
                    recipes = [r for r in cfg.recipes if r.takes(prot)
                               and (r.purifications is None or pur in r.purifications)]
                    if not recipes:  # no recipe trains on this red-team for this protection: nothing to purify
                        continue
                    u = protected if pur == "none" else add(Spec(
                        "purify", {"method": pur, "options": cfg.purify_options.get(pur, {}), "seed": seed,
                                   "resolution": cfg.resolution}, {"images": protected})).hash
                    for recipe in recipes:
                        inputs = {"instances": u}
                        if recipe.prior:
                            inputs["classes"] = add(class_spec(cfg, class_prompt, seed, recipe)).hash
                        t = add(Spec("train", {"recipe": recipe.training(), "model": cfg.model,
                                               "prompts": [instance_prompt, class_prompt],
                                               "resolution": cfg.resolution, "seed": seed}, inputs))
                        for qes in recipe.qes if recipe.qes is not None else cfg.sampling.qes:
                            s = add(Spec("sample", {"qes": qes, "prompts": cfg.sampling.prompts, "n": cfg.sampling.n,
                                                    "steps": cfg.sampling.steps, "suffix": cfg.sampling.suffix,
                                                    "seed": seed}, {"model": t.hash}))
                            add(Spec("evaluate", {"metrics": cfg.metrics, "resolution": cfg.resolution},
                                     {"images": s.hash, "references": ref_key},
                                     {"identity": ident, "protection": protection_label(prot), "purification": pur,
                                      "recipe": recipe.name, "qes": int(qes), "seed": seed}))
    return list(specs.values()), files


def class_spec(cfg: BenchConfig, prompt: str, seed: int, recipe=None) -> Spec:
    """The class-image stage of a recipe's prior, or of the protectors' surrogate training (the first prior
    recipe's count and steps, else the paper's 200 x 50: one shared set when they agree)."""
    recipe = recipe or next((r for r in cfg.recipes if r.prior), None)
    n = recipe.num_class_images if recipe else protocol.NUM_CLASS_IMAGES
    steps = recipe.class_steps if recipe else protocol.CLASS_IMAGE_STEPS
    return Spec("class_images", {"model": cfg.model, "prompt": prompt, "n": n, "steps": steps,
                                 "resolution": cfg.resolution, "seed": seed})


def _uses_prior(method: str) -> bool:
    """Whether a protection trains surrogates with DreamBooth's prior loss (ASPL family, FSMG, MetaCloak)."""
    from ..protect import PROTECTIONS

    return "prior_weight" in PROTECTIONS.get(method).factory.options


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

    def __init__(self, cfg: BenchConfig, run_dir: str | Path, *, device: str | None = None, add: bool = False,
                 planned: tuple[list[Spec], dict[str, list[Path]]] | None = None) -> None:
        """``planned``: the plan another Runner made (a worker runs its parent's stages, never its own
        reading of the input files)."""
        from ..models.device import pick_device

        self.cfg, self.run, self.add = cfg, Path(run_dir), add
        self._held = False
        # CPU threads per stage: the executor proposes (torch's count, cores // workers, 1 for Ray); the run folder's
        # first claim records it and every later run of the folder uses the recorded count (see session)
        self.threads: int | None = None
        self.art = self.run / "artifacts"
        self.db = self.run / "results.sqlite"
        self.device = str(pick_device(device))
        self.specs, self.files = planned or plan(cfg)
        self.by_hash = {s.hash: s for s in self.specs}

    def folder(self, spec: Spec) -> Path:
        return self.art / spec.folder_name

    def done(self, spec: Spec) -> bool:
        return (self.folder(spec) / "DONE.json").is_file()

    def input_digests(self) -> dict[str, dict[str, str]]:
        """Per identity, the content hashes of its training photos and its reference photos (``files:<sha>``, as
        the stage specs hold them): what the run folder records, so changed photos are refused, never averaged
        with the old ones as repeats (#37 item 3)."""
        out: dict[str, dict[str, str]] = {}
        for ev in (s for s in self.specs if s.kind == "evaluate"):
            d = out.setdefault(str(ev.labels.get("identity")), {})
            d["reference"] = ev.inputs.get("references", "")
            spec = self.by_hash.get(ev.inputs.get("images", ""))
            while spec is not None:  # sample -> train -> purify -> protect -> the photos
                up = next((spec.inputs[k] for k in ("model", "instances", "images") if k in spec.inputs), None)
                if up is None:
                    break
                if up.startswith("files:"):
                    d["train"] = up
                    break
                spec = self.by_hash.get(up)
        return out

    def describe(self, spec: Spec) -> str:
        """A stage in words for a progress line: its kind and the cell coordinates it serves (those of the first
        evaluate stage downstream), e.g. ``train subject007 advdm@16/255 codesr-mini dreambooth-cdl``; the seed
        when the grid has several."""
        if not hasattr(self, "_coords"):
            self._coords: dict[str, dict[str, Any]] = {}
            for ev in (s for s in self.specs if s.kind == "evaluate"):
                todo = [ev.hash]
                while todo:
                    h = todo.pop()
                    if h in self._coords or h not in self.by_hash:
                        continue
                    self._coords[h] = ev.labels
                    todo += [v for v in self.by_hash[h].inputs.values() if isinstance(v, str) and v in self.by_hash]
        lab = self._coords.get(spec.hash, spec.labels)
        keys = {"protect": ("identity", "protection"), "purify": ("identity", "protection", "purification"),
                "train": ("identity", "protection", "purification", "recipe"),
                "sample": ("identity", "protection", "purification", "recipe", "qes"),
                "evaluate": ("identity", "protection", "purification", "recipe", "qes")}.get(spec.kind, ())
        parts = [spec.kind.replace("_", " ")]
        for k in keys:
            v = lab.get(k)
            if k == "qes":
                parts += ["QES"] if v else []
            elif v is not None and not (k == "purification" and v == "none"):
                parts.append(str(v))
        seed = spec.params.get("seed", lab.get("seed"))
        if len(self.cfg.seeds) > 1 and seed is not None:
            parts.append(f"seed {seed}")
        return " ".join(parts)

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

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold the run folder (its lock) and check it belongs to this grid (``add``: or may join it);
        re-entrant. :class:`~cloakbench.errors.RunFolderError` otherwise."""
        if self._held:
            yield
            return
        self._refuse_a_file()
        refuse_foreign(self.run)  # before the lock file is written into a folder of the user's
        with locked(self.run):
            self.threads = claim(self.run, self.cfg, add=self.add, inputs=self.input_digests(),
                                 threads=self.threads or _torch_threads())
            self._held = True
            try:
                yield
            finally:
                self._held = False

    def check(self) -> None:
        """Refuse now (:class:`~cloakbench.errors.RunFolderError`) what :meth:`session` would refuse; writes nothing."""
        self._refuse_a_file()
        claim(self.run, self.cfg, add=self.add, dry=True, inputs=self.input_digests())

    def _refuse_a_file(self) -> None:
        if self.run.exists() and not self.run.is_dir():
            raise RunFolderError(f"--out {self.run} is a file, not a run folder")

    def execute(self, progress: Callable[[Spec, str], None] | None = None) -> dict[str, int]:
        """Run every stage not yet done, in order; returns counts of run and skipped stages."""
        with self.session():
            return self._execute(progress)

    def prepare(self) -> None:
        """Refuse a grid whose packages are missing (unless every training is done); make ``artifacts/``."""
        problems = missing_packages(self.cfg)
        if problems and not all(self.done(s) for s in self.specs if s.kind == "train"):
            raise ConfigError(self.cfg.name, problems)
        self.art.mkdir(parents=True, exist_ok=True)
        self.restore_rows()

    def restore_rows(self) -> int:
        """Write again the result rows of every finished evaluate stage that ``results.sqlite`` lacks (a database
        moved aside as corrupt, or deleted), from the stage's own ``metrics.json``: a finished cell is never lost.
        Returns how many stages' rows were restored."""
        import json

        from .store import stored_hashes

        have = stored_hashes(self.db) if self.db.is_file() else set()
        restored = 0
        for spec in self.specs:
            if spec.kind != "evaluate" or spec.hash in have or not self.done(spec):
                continue
            folder = self.folder(spec)
            done = json.loads((folder / "DONE.json").read_text())
            results = json.loads((folder / "metrics.json").read_text())
            prov = {"versions": done.get("versions"), "device": done.get("device"), "restored": True}
            write_rows(self.db, [{"spec_hash": spec.hash, "metric": name, "value": r["value"], "n": r["n"],
                                  "n_no_face": r["n_no_face"], **spec.labels, "details": r["details"],
                                  "provenance": prov} for name, r in results.items()])
            restored += 1
        if restored:
            log.warning("restored the result rows of %d finished evaluate stage(s) into %s", restored, self.db)
        return restored

    def _execute(self, progress: Callable[[Spec, str], None] | None) -> dict[str, int]:
        """In this process, one stage at a time in plan order (:func:`schedule` with one slot), with the run
        folder's thread count."""
        import torch

        self.prepare()
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._schedule_here(progress)
        finally:
            torch.set_num_threads(before)

    def _schedule_here(self, progress: Callable[[Spec, str], None] | None) -> dict[str, int]:
        def finished(handles: list) -> Iterable:
            yield handles[0], (lambda h=handles[0]: self.run_stage(self.by_hash[h]))

        return schedule(self, progress, lambda h: h, finished, slots=1)

    def run_stage(self, spec: Spec) -> None:
        import torch

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
                "device": self.device, "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_record(final, "DONE.json", done)

    # ------------------------------------------------------------------ stages (cloakbench.stages does the work)
    def _model(self):
        from ..models import load_model

        return load_model(self.cfg.model, device=self.device)

    def _stage_protect(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..stages.protection import external, load_surrogates

        p = spec.params
        if p["method"] == EXTERNAL:
            return external(self._input_paths(spec.inputs["images"]), self._input_paths(spec.inputs["external"]), work,
                            resolution=p["resolution"])
        instance_prompt, class_prompt = p.get("prompts", (protocol.INSTANCE_PROMPT, protocol.CLASS_PROMPT))
        classes = self.folder(self.by_hash[spec.inputs["classes"]]) if "classes" in spec.inputs else None
        surrogate = self._input_paths(spec.inputs["surrogate"]) if "surrogate" in spec.inputs else None
        return stages.protect(self._input_paths(spec.inputs["images"]), work, method=p["method"],
                              surrogates=load_surrogates(p.get("models") or [self.cfg.model], device=self.device),
                              eps=p["eps"], steps=p["steps"], prompt=instance_prompt, class_prompt=class_prompt,
                              options=p["options"], resolution=p["resolution"], seed=p["seed"],
                              class_dir=classes, surrogate_images=surrogate)

    def _stage_purify(self, spec: Spec, work: Path) -> dict[str, Any]:
        p = spec.params
        return stages.purify(self._input_paths(spec.inputs["images"]), work, method=p["method"], options=p["options"],
                             resolution=p["resolution"], seed=p["seed"], device=self.device,
                             clean=self._clean_sources(spec.inputs["images"]))

    def _clean_sources(self, key: str) -> list[Path]:
        """The unprotected files behind an input: the files themselves, or the protect stage's inputs."""
        if key.startswith("files:"):
            return self.files[key]
        up = self.by_hash[key].inputs.get("images", "")
        return self.files[up] if up.startswith("files:") else []

    def _stage_class_images(self, spec: Spec, work: Path) -> dict[str, Any]:
        p = spec.params
        return stages.class_images(self._model(), work, n=p["n"], prompt=p["prompt"], steps=p["steps"],
                                   resolution=p["resolution"], seed=p["seed"])

    def _stage_train(self, spec: Spec, work: Path) -> dict[str, Any]:
        from ..stages.training import train_config

        p = spec.params
        cfg = train_config(p["recipe"], prompts=p.get("prompts", (protocol.INSTANCE_PROMPT, protocol.CLASS_PROMPT)),
                           resolution=p["resolution"], seed=p["seed"])
        classes = self.folder(self.by_hash[spec.inputs["classes"]]) if "classes" in spec.inputs else None
        return stages.train(self._input_paths(spec.inputs["instances"]), work, model=self._model(), cfg=cfg,
                            class_dir=classes, resume=True)

    def _stage_sample(self, spec: Spec, work: Path) -> dict[str, Any]:
        p = spec.params
        record = stages.sample(self.folder(self.by_hash[spec.inputs["model"]]), work, prompts=p["prompts"], n=p["n"],
                               qes=p["qes"], steps=p["steps"], suffix=p["suffix"], seed=p["seed"], device=self.device)
        return {"config": record["config"]}

    def _stage_evaluate(self, spec: Spec, work: Path) -> dict[str, Any]:
        p = spec.params
        ev = stages.evaluate(self._input_paths(spec.inputs["images"]), self._input_paths(spec.inputs["references"]),
                             metrics=p["metrics"], reference_size=p["resolution"])
        stages.write_metrics(work, ev)
        prov = {"versions": versions(), "device": self.device}
        write_rows(self.db, [{"spec_hash": spec.hash, "metric": r.name, "value": r.value, "n": r.n,
                              "n_no_face": r.n_no_face, **spec.labels, "details": r.details,
                              "provenance": {**prov, "seconds": ev.seconds[r.name]}} for r in ev.results])
        # each metric's direction as computed, so the verdict reads it from the folder (a plugin's too)
        return {"metrics": [r.name for r in ev.results], "higher_better": {r.name: r.higher_better for r in ev.results}}


def schedule(runner: "Runner", progress: Callable[[Spec, str], None] | None, submit: Callable[[str], Any],
         finished: Callable[[list], Iterable], *, slots: int | None = None) -> dict[str, int]:
    """The one loop of every executor: submit every stage whose inputs are done, in plan order, at most
    ``slots`` at once (None: all, the scheduler queues them); ``finished(handles)`` blocks until at least one
    is over and yields ``(handle, result)`` pairs, ``result()`` raising the stage's error. Finished stages are
    skipped and logged; when one fails nothing new is submitted, the running ones finish, the first error is
    raised."""
    pending = {s.hash: s for s in runner.specs}
    ran = skipped = 0
    log = runner.run / "bench.log"
    for s in list(pending.values()):
        if runner.done(s):
            skipped += 1
            del pending[s.hash]
            _log(log, f"skip {s.folder_name} (DONE)")
            if progress:
                progress(s, "skipped")
    running: dict[Any, str] = {}
    error: BaseException | None = None
    while running or (pending and error is None):
        busy = set(running.values())
        for h, s in list(pending.items()) if error is None else ():
            deps = [v for v in s.inputs.values() if not v.startswith("files:")]
            if slots is not None and len(running) >= slots:
                break
            if all(d not in pending and d not in busy for d in deps):
                _log(log, f"run  {s.folder_name}")
                running[submit(h)] = h
                busy.add(h)
                del pending[h]
                if progress:
                    progress(s, "running")
        for handle, result in finished(list(running)):
            h = running.pop(handle)
            try:
                result()
            except BaseException as exc:  # noqa: BLE001 - let the others finish, then raise the first
                _log(log, f"fail {runner.by_hash[h].folder_name}: {type(exc).__name__}")
                error = error or exc
                continue
            ran += 1
            if progress:
                progress(runner.by_hash[h], "done")
    if error is not None:
        raise error
    return {"ran": ran, "skipped": skipped}


def _log(path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _torch_threads() -> int:
    """The serial executor's proposal: this process's torch thread count (``OMP_NUM_THREADS``, or as set)."""
    import torch

    return torch.get_num_threads()
