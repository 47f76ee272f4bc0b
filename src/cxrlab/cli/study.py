"""``cxrlab study``: a whole results grid from one file (run it; write its report)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console

study_app = typer.Typer(
    help="A whole study from one file: models x seeds x folds, compared against a baseline.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")


@study_app.command("run")
def run_cmd(
    study_file: Path = typer.Argument(..., help="The study.yaml (data, models, seeds, folds...)."),
    out: Path = typer.Option(..., "--out", help="The study folder (resumable: run again)."),
    launcher: str = typer.Option(
        "local", "--launcher", help="Where cells run: local (this machine) or slurm (submitit)."
    ),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Cells at once with --launcher local."),
    partition: str | None = typer.Option(None, "--partition", help="SLURM partition."),
    gpus_per_task: int | None = typer.Option(None, "--gpus-per-task", min=0, help="SLURM GPUs."),
    time_limit: int = typer.Option(240, "--time", min=1, help="SLURM time limit per cell (min)."),
    cpus_per_task: int | None = typer.Option(None, "--cpus-per-task", min=1, help="SLURM CPUs."),
    tasks_per_node: int = typer.Option(
        1, "--tasks-per-node", min=1, help="SLURM tasks per cell (= train.devices for DDP)."
    ),
    slurm_cluster: str | None = typer.Option(
        None, "--slurm-cluster", hidden=True, help="submitit cluster (local: test on this machine)."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the SLURM array."),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate", help="Time a few steps per model for the estimate."
    ),
    retrain_changed: bool = typer.Option(
        False, "--retrain-changed", help="Retrain cells (finished or started) with changed options."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run nothing."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report at the end."),
) -> None:
    """Run every cell of a study (model x seed x fold x variant); finished cells are skipped."""
    from cxrlab.cli.common import adopt_lightning_logging
    from cxrlab.errors import ConfigError

    if launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher must be local or slurm, got {launcher!r}.")
    adopt_lightning_logging()
    from cxrlab.study import LocalLauncher, SlurmLauncher, load_study, run_study

    study = load_study(study_file)
    if launcher == "local":
        chosen = LocalLauncher(jobs=jobs)
    else:
        chosen = SlurmLauncher(
            folder=out / "slurm", partition=partition, gpus_per_task=gpus_per_task,
            time_min=time_limit, cpus_per_task=cpus_per_task, tasks_per_node=tasks_per_node,
            cluster=slurm_cluster, wait=wait,
        )  # fmt: skip

    def show(plan, lines) -> None:
        console.print("\n".join(lines), highlight=False, soft_wrap=True)

    result = run_study(
        study, out, launcher=chosen, calibrate=calibrate, retrain_changed=retrain_changed,
        dry_run=dry_run, on_plan=show,
    )  # fmt: skip
    if dry_run:
        return
    ran = len(result.statuses)
    reused = sum(1 for s in result.statuses.values() if s.get("reused"))
    console.print(
        f"Ran {ran} cell(s) in {result.wall_seconds:.0f} s ({len(result.failed)} failed, "
        f"{reused} already finished); {len(result.plan.cells) - len(result.plan.to_run())} "
        "skipped as finished.",
        highlight=False,
    )
    for cid in result.failed:
        console.print(f"  [red]failed[/] {cid}: {result.statuses[cid].get('error', '')[:300]}")
    if report and all(s.get("state") != "submitted" for s in result.statuses.values()):
        _report(out)


@study_app.command("report")
def report_cmd(
    study_dir: Path = typer.Argument(..., help="A study folder written by `cxrlab study run`."),
    n_boot: int | None = typer.Option(None, "--n-boot", min=1, help="Bootstrap resamples."),
) -> None:
    """Write the study's results section: tables (Markdown, LaTeX), figures, study.html."""
    _report(study_dir, n_boot=n_boot)


def _report(study_dir: Path, n_boot: int | None = None) -> None:
    from cxrlab.study.report import write_report

    result = write_report(study_dir, n_boot=n_boot)
    console.print(result.summary_text(), highlight=False, soft_wrap=True)
