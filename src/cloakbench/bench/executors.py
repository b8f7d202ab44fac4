"""Executors: ``local`` (in this process, stages in order, or ``workers`` processes) and ``ray`` (one Ray
task per stage).

Every executor runs the same loop (:func:`cloakbench.bench.runner.schedule`; the serial one in this process): every stage whose upstream stages are done is
submitted; each worker runs :meth:`Runner.run_stage` against the same artifact store and SQLite database
(WAL, ``INSERT OR REPLACE``), while this process holds the run folder's lock. When a stage fails, nothing
new is submitted, the stages already running finish (their cells are kept), then the first error is
raised.

``local`` with ``workers > 1`` is for CPU machines: the mini models are too small for two threads to
share one training well, and two one-thread processes do about 1.4 times the work of one two-thread
process (2-core AMD EPYC Zen 4, benchmarks/README.md). Each worker gets ``cores // workers`` threads; the
thread count is recorded in every stage's DONE.json, because float rounding (hence the bytes of a
trained model) depends on it.

Every stage of a run folder runs with the folder's CPU thread count (grid.json ``threads``: what its first run
used), whatever the executor, so local, worker and Ray stages of one folder give the same bytes.

Ray: a fresh worker per task (``max_calls=1``), one GPU when the cluster has GPUs, and a task on a node that dies
runs again elsewhere (``max_retries``; the stage starts over). Artifacts do not travel through Ray's object store:
every stage reads its inputs from the run folder and writes its outputs there, so on a real cluster the run folder
must be on storage every node mounts at the same path (NFS, Lustre, a shared volume); a node that cannot see it is
refused before any stage (:func:`_refuse_unreachable`). Nothing home-made beyond that: start Ray on your cluster
(Slurm, Kubernetes) and pass ``--address``. ``pip install 'cloakbench[ray]'``.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable, Iterable

from .runner import Runner, cores, schedule
from .spec import Spec

Progress = Callable[[Spec, str], None] | None


def default_workers(device: str) -> int:
    """Stages at once when none is asked for: 2 on a CPU with 2 or more cores (the mini models are too small for
    two threads to share one training well), else 1."""
    return min(2, cores()) if device == "cpu" else 1


def run_local(runner: Runner, progress: Progress = None, *, workers: int = 1) -> dict[str, int]:
    """Run the plan in this process (``workers == 1``) or in ``workers`` spawned processes."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return runner.execute(progress)
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    runner.threads = runner.threads or max(1, cores() // workers)  # proposed; the run folder's count wins
    level = logging.getLogger().getEffectiveLevel()
    with runner.session():
        runner.prepare()
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(runner.threads, level)) as pool:
            job = (runner.cfg.model_dump_json(), str(runner.run), runner.device, (runner.specs, runner.files), None)

            def submit(h: str):
                return pool.submit(_stage, job, h)

            def finished(handles: list) -> Iterable:
                done, _ = wait(handles, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f, f.result
            return schedule(runner, progress, submit, finished, slots=workers)


def _init_worker(threads: int, level: int) -> None:
    """A worker logs as its parent does (quiet library bars unless INFO) and uses ``threads`` threads."""
    import torch

    from ..progress import quiet_libraries

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level > logging.INFO:
        quiet_libraries()
    torch.set_num_threads(threads)


_RUNNERS: dict[tuple[str, str, str | None], Runner] = {}  # one Runner per worker process and grid


def _stage(job: tuple, spec_hash: str) -> str:
    """Run one stage of the parent's plan (``job``: config JSON, run folder, device, (specs, files), threads: the
    run folder's CPU threads per stage, set here for a Ray task; None in a local worker, set at its start)."""
    cfg_json, run_dir, device, planned, threads = job
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    key = (cfg_json, run_dir, device)
    if key not in _RUNNERS:
        from .config import BenchConfig

        _RUNNERS[key] = Runner(BenchConfig.model_validate_json(cfg_json), run_dir, device=device, planned=planned)
    runner = _RUNNERS[key]
    try:
        runner.run_stage(runner.by_hash[spec_hash])
    except Exception as exc:
        try:  # the parent must be able to read the error back, or the whole pool breaks
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001
            raise RuntimeError(f"{runner.by_hash[spec_hash].folder_name}: {type(exc).__name__}: {exc}\n"
                               + traceback.format_exc()) from None
        raise
    return spec_hash


def run_ray(runner: Runner, progress: Progress = None, *, address: str | None = None,
            num_cpus: int | None = None) -> dict[str, int]:
    """Run the plan as Ray tasks (a local cluster when ``address`` is None)."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"the ray executor needs `pip install 'cloakbench[ray]'` ({exc})") from exc
    runner.threads = runner.threads or 1  # one CPU per task (proposed; the run folder's count wins)
    with runner.session():
        runner.prepare()
        started = not ray.is_initialized()
        if started:
            # no address: a new local cluster, never one found running on this machine (ray_current_cluster)
            kw = {"address": address} if address else {"address": "local", "num_cpus": num_cpus,
                                                        "include_dashboard": False}
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kw)
        try:
            _refuse_unreachable(ray, runner.run)
            gpus = ray.cluster_resources().get("GPU", 0)
            # a task on a node that dies is run again elsewhere (max_retries); its stage starts over (run_stage)
            task = ray.remote(max_calls=1, num_cpus=1, num_gpus=1 if gpus else 0, max_retries=3)(_stage)
            job = ray.put((runner.cfg.model_dump_json(), str(runner.run), None if gpus else "cpu",
                           (runner.specs, runner.files), runner.threads))

            def finished(handles: list) -> Iterable:
                ready, _ = ray.wait(handles, num_returns=1)
                for ref in ready:
                    yield ref, (lambda ref=ref: ray.get(ref))
            return schedule(runner, progress, lambda h: task.remote(job, h), finished)
        finally:
            if started:
                ray.shutdown()


def _refuse_unreachable(ray, run) -> None:
    """Every Ray node that can run a stage must see the run folder at the same path (stages read their inputs from
    it and write their outputs into it: on a real cluster, storage every node mounts at the same path); a
    :class:`~cloakbench.errors.RunFolderError` naming the nodes that do not, before any stage is submitted."""
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ..errors import RunFolderError

    token = run / f".ray-probe-{uuid.uuid4().hex}"
    token.write_text("cloakbench: can every Ray node see the run folder?\n")
    try:
        @ray.remote(num_cpus=0)
        def sees(path: str) -> tuple[bool, str]:
            import os
            import socket

            return os.path.exists(path), socket.gethostname()

        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(token)) for n in nodes]
        blind = [f"{host} ({n['NodeManagerAddress']})" for n, (ok, host) in zip(nodes, ray.get(refs, timeout=300))
                 if not ok]
    finally:
        token.unlink(missing_ok=True)
    if blind:
        raise RunFolderError(f"Ray node(s) {', '.join(blind)} cannot see the run folder {run}: stages read and write "
                             "it, so it must be on storage every node mounts at the same path (NFS, Lustre, a shared "
                             "volume); or run on one machine (--executor local)")
