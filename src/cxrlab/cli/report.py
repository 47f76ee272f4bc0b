"""``cxrlab report``: the paper in one page (report.html, model_card.md, claim_checklist.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory (written by `cxrlab train`)."),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="HTML file to write (default RUN/report.html); the model card "
            "and the CLAIM checklist go beside it.",
        ),  # fmt: skip
    ) -> None:
        """Write one self-contained HTML report, a model card and a pre-filled CLAIM 2024
        checklist from a run's files (no GPU, no network)."""
        from cxrlab.reports.report import build_report

        result = build_report(run_dir, out=out)
        c = result.claim_counts
        console.print(f"Report: {result.html}", highlight=False, soft_wrap=True)
        console.print(f"Model card: {result.model_card}", highlight=False, soft_wrap=True)
        console.print(
            f"CLAIM 2024 checklist: {result.claim_checklist} ({c['filled']} of 44 items filled "
            f"from files, {c['prefilled']} pre-filled for the author to confirm, {c['author']} "
            "author only)",
            highlight=False,
            soft_wrap=True,
        )
