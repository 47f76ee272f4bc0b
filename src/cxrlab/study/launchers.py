"""Where cells run: this machine (one at a time, or ``--jobs N`` processes) or a SLURM cluster.

Every launcher runs :func:`run_cell_job` on a list of cell specs (plain dicts, so they pickle to
another process or another node) and returns each cell's status dict, the same one the job
writes to ``<study>/cells/<cell id>.json``. A cell that raises is recorded as failed with its
error, and the others go on; an interrupted cell keeps its ``last.ckpt`` and resumes next time.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrlab.errors import ConfigError

logger = logging.getLogger(__name__)


def run_cell_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell, write its status file, return the status.

    ``spec``: ``config`` (TrainConfig as JSON), ``status`` (the status file), ``recipe``,
    ``n_boot``, ``eval_seed``, ``figures``, ``fresh`` (remove the old run first: its options
    changed), ``position`` and ``id``; optionally ``prepared`` (the plan's scan and split of this
    very cell, handed over in-process so the cell does not scan again) with ``prepared_seconds``
    (what that scan took, recorded as ``plan_scan_seconds``: the cell's own work, done earlier).
    Under SLURM with several tasks per cell (DDP), every rank trains and rank 0 alone evaluates
    and writes the status. The status's ``wall`` starts before the training and evaluation code
    is imported: the first cell of a process pays those imports, as ``cxrlab train`` would.
    """
    start = time.perf_counter()
    from cxrlab.config import TrainConfig
    from cxrlab.io import write_json
    from cxrlab.rundir import RunDir
    from cxrlab.training.cv import run_cell

    rank = (
        int(os.environ.get("SLURM_PROCID", "0"))
        if os.environ.get("SLURM_NTASKS", "1") != "1"
        else 0
    )
    config = TrainConfig(**spec["config"])
    status_path = Path(spec["status"])
    base = {"id": spec["id"], "host": socket.gethostname(), "pid": os.getpid()}
    if rank == 0:
        write_json(status_path, {**base, "state": "running", "started": time.time()})
    try:
        if spec.get("fresh") and rank == 0 and RunDir(config.out).holds_run():
            shutil.rmtree(config.out)
        outcome = run_cell(
            config, n_boot=spec["n_boot"], eval_seed=spec["eval_seed"],
            make_figures=spec["figures"], position=spec.get("position", ""),
            prepared=spec.get("prepared"),
        )  # fmt: skip
        handed = float(spec.get("prepared_seconds", 0.0)) if outcome.used_prepared else 0.0
        status = {
            **base,
            "state": "finished",
            "recipe": spec["recipe"],
            "reused": outcome.reused,
            "resumed": outcome.resumed,
            "train_wall": outcome.train_wall,
            "fit_seconds": outcome.fit_seconds,
            "eval_seconds": outcome.eval_seconds,
            "plan_scan_seconds": handed,
        }
    except Exception as exc:  # recorded; the other cells go on
        logger.error("Cell %s failed: %s", spec["id"], exc)
        status = {
            **base,
            "state": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-6000:],
        }
    status["wall"] = time.perf_counter() - start
    if rank == 0:
        write_json(status_path, status)
    return status


def _limit_threads(threads: int) -> None:
    """Worker set-up: ``threads`` intra-op threads; Lightning notices only from WARNING."""
    import torch

    torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class LocalLauncher:
    """Cells on this machine: in this process (``jobs=1``) or ``jobs`` worker processes.

    With ``jobs > 1`` each worker gets ``cpu_count // jobs`` intra-op threads, so N cells at once
    do not oversubscribe the cores.
    """

    jobs: int = 1

    def run(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}.")
        if self.jobs == 1 or len(specs) <= 1:
            return [run_cell_job(spec) for spec in specs]
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        results: dict[int, dict[str, Any]] = {}
        with ProcessPoolExecutor(
            max_workers=min(self.jobs, len(specs)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_threads,
            initargs=(threads,),
        ) as pool:
            futures = {pool.submit(run_cell_job, spec): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:  # the worker process died (out of memory, killed)
                    results[i] = {"id": specs[i]["id"], "state": "failed",
                                  "error": f"worker process died: {exc}"}  # fmt: skip
                logger.info("%s %s: %s", specs[i].get("position", ""), specs[i]["id"],
                            results[i]["state"])  # fmt: skip
        return [results[i] for i in range(len(specs))]


@dataclass
class SlurmLauncher:
    """Cells as one SLURM job array through submitit: one array task per cell.

    Attributes:
        folder: Where submitit keeps each task's logs and pickles (``<study>/slurm``).
        partition: ``--partition``.
        gpus_per_task: GPUs of each task (``--gpus-per-task``).
        time_min: Time limit of each task in minutes (``--time``).
        cpus_per_task: CPU cores of each task.
        tasks_per_node: Tasks per cell (set it to ``train.devices`` for DDP inside a cell).
        array_parallelism: At most this many cells at once.
        cluster: submitit's cluster (None: SLURM when available; ``"local"``: subprocesses on
            this machine, which is how the tests run it; ``"debug"``: in this process).
        wait: Wait for the array and return the cells' statuses (else return after submitting).
    """

    folder: Path | None = None
    partition: str | None = None
    gpus_per_task: int | None = None
    time_min: int = 240
    cpus_per_task: int | None = None
    tasks_per_node: int = 1
    array_parallelism: int = 256
    cluster: str | None = None
    wait: bool = True
    job_ids: list[str] | None = None

    def run(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            import submitit
        except ImportError:
            raise ConfigError(
                "--launcher slurm needs submitit, which is not installed. Install it with "
                "`pip install 'cxrlab[slurm]'` (or `pip install submitit`)."
            ) from None
        if not specs:
            return []
        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        params: dict[str, Any] = {
            "name": "cxrlab-study",
            "timeout_min": self.time_min,
            "tasks_per_node": self.tasks_per_node,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_task:
            params["slurm_gpus_per_task"] = self.gpus_per_task
        if self.cpus_per_task:
            params["cpus_per_task"] = self.cpus_per_task
        executor.update_parameters(**params)
        jobs = executor.map_array(run_cell_job, specs)
        self.job_ids = [str(j.job_id) for j in jobs]
        logger.info("Submitted %d cell(s) as job(s) %s; logs in %s", len(jobs),
                    ", ".join(self.job_ids[:4]), self.folder)  # fmt: skip
        if not self.wait:
            return [{"id": s["id"], "state": "submitted", "job_id": j}
                    for s, j in zip(specs, self.job_ids, strict=True)]  # fmt: skip
        out = []
        for spec, job in zip(specs, jobs, strict=True):
            try:
                result = job.result()
                out.append(result[0] if isinstance(result, list) else result)
            except Exception as exc:  # the task died (time limit, node failure, out of memory)
                out.append(
                    {"id": spec["id"], "state": "failed", "job_id": str(job.job_id),
                     "error": f"SLURM task {job.job_id} failed: {str(exc)[-2000:]}",
                     "log": str(job.paths.stderr)}
                )  # fmt: skip
        return out
