"""Executors: ``local`` (in-process, stages in order) and ``ray`` (one Ray task per stage).

The Ray executor submits every stage whose upstream stages are done as a task with a fresh worker
(``max_calls=1``) and one GPU when the cluster has GPUs; all tasks read and write the same artifact
store and SQLite database (WAL, ``INSERT OR REPLACE``). Nothing home-made beyond that: start Ray on
your cluster (Slurm, Kubernetes) and pass ``--address``. ``pip install 'cloakbench[ray]'``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .runner import Runner
from .spec import Spec


def run_local(runner: Runner, progress: Callable[[Spec, str], None] | None = None) -> dict[str, int]:
    return runner.execute(progress)


def _ray_stage(cfg_json: str, run_dir: str, device: str | None, spec_hash: str) -> str:
    from .config import BenchConfig

    runner = Runner(BenchConfig.model_validate_json(cfg_json), run_dir, device=device)
    runner.run_stage(runner.by_hash[spec_hash])
    return spec_hash


def run_ray(runner: Runner, progress: Callable[[Spec, str], None] | None = None, *, address: str | None = None,
            num_cpus: int | None = None) -> dict[str, int]:
    """Run the plan as Ray tasks (a local cluster when ``address`` is None)."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"the ray executor needs `pip install 'cloakbench[ray]'` ({exc})") from exc
    with runner.session():
        return _run_ray(runner, ray, progress, address=address, num_cpus=num_cpus)


def _run_ray(runner: Runner, ray, progress, *, address: str | None, num_cpus: int | None) -> dict[str, int]:
    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kw)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(max_calls=1, num_cpus=1, num_gpus=1 if gpus else 0)(_ray_stage)
        cfg_json = runner.cfg.model_dump_json()
        device = None if gpus else "cpu"
        pending = {s.hash: s for s in runner.specs}
        ran = skipped = 0
        log = (runner.run / "bench.log")
        runner.art.mkdir(parents=True, exist_ok=True)
        for s in list(pending.values()):
            if runner.done(s):
                skipped += 1
                del pending[s.hash]
                with log.open("a") as fh:
                    fh.write(f"{time.strftime('%H:%M:%S')} skip {s.folder_name} (DONE)\n")
                if progress:
                    progress(s, "skipped")
        running: dict = {}
        while pending or running:
            for h, s in list(pending.items()):
                deps = [v for v in s.inputs.values() if not v.startswith("files:")]
                if all(d not in pending and d not in {x for x in running.values()} for d in deps):
                    with log.open("a") as fh:
                        fh.write(f"{time.strftime('%H:%M:%S')} run  {s.folder_name}\n")
                    running[task.remote(cfg_json, str(runner.run), device, h)] = h
                    del pending[h]
                    if progress:
                        progress(s, "running")
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                h = running.pop(ref)
                ray.get(ref)
                ran += 1
                if progress:
                    progress(runner.by_hash[h], "done")
        return {"ran": ran, "skipped": skipped}
    finally:
        if started:
            ray.shutdown()
